"""Jinja2 rendering of mail templates: the only module that imports jinja2.

Templates live in ``mailbot/templates/mail/<audience>/<event>.<lang>.txt.j2``
(plain text; its first line is ``Subject: ...``, then an empty line, then the
body) and, optionally, ``...<lang>.html.j2`` for the HTML part. An operator's
``conversation.templates_dir`` is searched first, so any template can be
replaced without touching the package. HTML templates are autoescaped;
undefined variables are errors (StrictUndefined), never empty strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
LANGUAGES = ("en", "ru")


class TemplateError(Exception):
    """A template is missing or broken."""


@dataclass(frozen=True, slots=True)
class RenderedMail:
    subject: str
    text: str
    html: str | None


class MailRenderer:
    def __init__(self, override_dir: Path | None = None) -> None:
        paths = [str(override_dir)] if override_dir else []
        paths.append(str(BUILTIN_TEMPLATES))
        self.env = Environment(
            loader=ChoiceLoader([FileSystemLoader(p) for p in paths]),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def events(self, audience: str) -> frozenset[str]:
        """The events that have a template for ``audience`` (in any language)."""
        names = set()
        for name in self.env.list_templates(extensions=["j2"]):
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == "mail" and parts[1] == audience:
                event = parts[2].split(".", 1)[0]
                names.add(event)
        return frozenset(names)

    def render(
        self, audience: str, event: str, language: str, context: dict[str, Any]
    ) -> RenderedMail:
        if language not in LANGUAGES:
            language = "en"
        base = f"mail/{audience}/{event}.{language}"
        try:
            text = self.env.get_template(f"{base}.txt.j2").render(context)
        except TemplateNotFound as exc:
            raise TemplateError(f"no template {exc.name}") from exc
        head, sep, body = text.partition("\n\n")
        if not sep or not head.startswith("Subject:"):
            raise TemplateError(f"{base}.txt.j2 must start with 'Subject: ...' and an empty line")
        subject = " ".join(head[len("Subject:") :].split())
        try:
            html: str | None = self.env.get_template(f"{base}.html.j2").render(context)
        except TemplateNotFound:
            html = None
        return RenderedMail(subject=subject, text=body.lstrip("\n"), html=html)

    def responses(self) -> frozenset[str]:
        """Names of the response templates agents insert with ``#template``."""
        names = set()
        for name in self.env.list_templates(extensions=["j2"]):
            parts = name.split("/")
            if len(parts) == 2 and parts[0] == "responses":
                names.add(parts[1].split(".", 1)[0].lower())
        return frozenset(names)

    def render_response(self, name: str, language: str, context: dict[str, Any]) -> str:
        """The text of response template ``name`` (``responses/<name>.<lang>.txt.j2``).

        Falls back to English when the template has no version in ``language``.
        """
        for lang in dict.fromkeys((language if language in LANGUAGES else "en", "en")):
            try:
                template = self.env.get_template(f"responses/{name}.{lang}.txt.j2")
            except TemplateNotFound:
                continue
            return template.render(context).strip("\n")
        raise TemplateError(f"no response template {name}")


class PageRenderer:
    """The web page's templates (``templates/web/*.html.j2``), always autoescaped.

    Used by ``mailbot.web`` so that jinja2 keeps a single importer.
    """

    def __init__(self, templates_dir: Path | None = None) -> None:
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir or BUILTIN_TEMPLATES / "web")),
            undefined=StrictUndefined,
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(context)
        except TemplateNotFound as exc:
            raise TemplateError(f"no template {exc.name}") from exc
