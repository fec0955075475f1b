"""The agent's new text in a reply mail: without quotes, marker and signature.

An agent answers a notification from whatever client they use, and the customer
must get only what the agent wrote. :func:`new_text` reads a plain-text body line
by line and:

1. finds where the history starts, at the first of
   * mailbot's :data:`MARKER` line, quoted or not, even re-wrapped over two lines;
   * an attribution line, on up to three lines: "On … wrote:", "Am … schrieb …:",
     "Le … a écrit :", "El … escribió:", "… пишет:", "… написал(а):", or a date and
     an address ending in ":" (Yandex, Mail.ru, Gmail in Russian);
   * an Outlook header block ("From:/Sent:/To:", "Von:/Gesendet:", "De :/Envoyé :",
     "De:/Enviado:", "От:/Отправлено:", …) or an "-----Original Message-----" line;
   * a mobile footer ("Sent from my iPhone", "Get Outlook for iOS"): mobile
     clients put the quoted mail right under it, sometimes with no header;
   * a "> " quoted line;
2. keeps the text above it, plus, when the history is "> " quoted, the answers
   written between or below the quoted lines (inline and bottom posting);
3. cuts the signature: an RFC 3676 "-- " line or a mobile footer.

No library is used: none of the candidates measured on the reply corpus did this
well enough (see docs/replies.md). Pure: no I/O.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

#: The first line of every agent notification. Found again in a reply by its two
#: phrases, so the client may quote it, re-wrap it or change its spacing.
MARKER: Final = "-- Reply above this line / Отвечайте выше этой строки --"

_MARKER_PHRASES: Final = ("reply above this line", "отвечайте выше этой строки")


@dataclass(frozen=True, slots=True)
class ReplyText:
    """What :func:`new_text` found in a reply body."""

    #: The new text, without leading and trailing blank lines or trailing spaces.
    text: str
    #: Whether anything (quoted history, the marker) was cut.
    quoted: bool
    #: The signature that was cut ("" if none).
    signature: str


class _Kind(enum.Enum):
    marker = "marker"
    attribution = "attribution"
    headers = "headers"
    separator = "separator"
    footer = "footer"
    quote = "quote"


@dataclass(frozen=True, slots=True)
class _Cut:
    start: int  # the first line of the history
    end: int  # the first line after the header that opens it
    kind: _Kind


# -- line tests ---------------------------------------------------------------------------

_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060\ufeff]")
_QUOTE_PREFIX = re.compile(r"^(?:[ \t]*>)+[ \t]?")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SEPARATOR_ONLY = re.compile(r"[-_=*~—–]{2,}")
_UNDERSCORES = re.compile(r"_{2,}")
_DATE_OR_ADDRESS = re.compile(r"@|\d")
#: How a wrapped attribution line starts, when it is not a sentence of its own.
_OPENER = re.compile(
    r"^(?:on|am|le|el|il|in data|em|op|w dniu|dnia|den|på)\s.*[^.!?]$", re.IGNORECASE
)
_YEAR_OR_ADDRESS = re.compile(r"@|\b(?:19|20)\d\d\b|\d{1,2}[./]\d{1,2}[./]\d{2}")
_ADDRESS_OR_YEAR = re.compile(r"@|\b(?:19|20)\d\d\b")

_ATTRIBUTION: Final = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        # Gmail, Apple Mail, Thunderbird ("On …, Name wrote:"); Zoho ("---- On … wrote ----").
        r"^-*\s*on\s.+\swrote\s*:?\s*-*$",
        # German, Dutch, Scandinavian clients put the verb in the middle.
        r"^(?:am|op|den|på|d\.)\s.+\s(?:schrieb|schreef|skrev)\s.*:$",
        r"^.+\s(?:schrieb|schreef|skrev)\s.*[<(\[]\S+@\S+[>)\]]\s*:$",
        # The verb at the end: "<date>, <name> пишет:", "Le … a écrit :", "El … escribió:".
        r"^.+\s(?:wrote|a\s+écrit|escribió|escreveu|ha\s+scritto|heeft\s.+\sgeschreven|"
        r"kirjoitti|írta|napisał(?:\(a\)|a)?|napsal(?:\(a\)|a)?|пишет|написал(?:\(а\)|а)?|"
        r"yazdı)\s*:$",
        # A time and an address, then ":" (Yandex, Mail.ru, Gmail in some languages).
        r"^(?=.*\d{1,2}[:.]\d\d).*[<(\[][^\s<>()\[\]]+@[^\s<>()\[\]]+[>)\]]\s*:$",
    )
)

_FROM_KEYS: Final = frozenset(
    {"from", "von", "de", "da", "от", "от кого", "fra", "van", "od", "från", "lähettäjä",
     "feladó", "kimden", "afzender"}
)  # fmt: skip
_OTHER_KEYS: Final = frozenset(
    {
        "sent", "date", "to", "cc", "bcc", "subject", "reply-to", "sent at",
        "gesendet", "datum", "an", "betreff", "kopie", "antwort an",
        "envoyé", "envoyé le", "à", "a", "objet", "sujet", "copie à", "message du",
        "enviado", "enviado el", "enviada em", "enviado em", "para", "asunto", "assunto",
        "fecha", "data", "inviato", "oggetto", "отправлено", "кому", "тема", "дата", "копия",
        "sendt", "til", "emne", "dato", "verzonden", "aan", "onderwerp", "wysłano", "do",
        "temat", "skickat", "till", "ämne", "lähetetty", "vastaanottaja", "aihe",
        "elküldve", "címzett", "tárgy", "odesláno", "komu", "předmět",
    }
)  # fmt: skip
_HEADER_LINE = re.compile(r"^[*\s]*([^\W\d][^:*<>@]{0,20}?)\s*\*?\s*:(?!//)", re.IGNORECASE)

_SEPARATOR_PHRASES: Final = frozenset(
    {
        "original message", "forwarded message", "reply message", "begin forwarded message",
        "ursprüngliche nachricht", "weitergeleitete nachricht",
        "anfang der weitergeleiteten nachricht", "anfang der weitergeleiteten e-mail",
        "message d'origine", "message original", "message transféré",
        "début du message réexpédié", "mensaje original", "mensaje reenviado",
        "inicio del mensaje reenviado", "messaggio originale", "messaggio inoltrato",
        "mensagem original", "mensagem encaminhada", "oorspronkelijk bericht",
        "origineel bericht", "doorgestuurd bericht", "oprindelig besked",
        "oprindelig meddelelse", "videresendt besked", "opprinnelig melding",
        "videresendt melding", "ursprungligt meddelande", "vidarebefordrat meddelande",
        "alkuperäinen viesti", "välitetty viesti", "wiadomość oryginalna",
        "oryginalna wiadomość", "przekazana wiadomość", "původní zpráva",
        "přeposlaná zpráva", "исходное сообщение", "пересылаемое сообщение",
        "пересланное сообщение", "оригинальное сообщение",
    }
)  # fmt: skip

#: "Sent from my iPhone", "Get Outlook for iOS<https://aka.ms/…>", "Envoyé de mon iPhone":
#: a known opening, then a few words naming a device or an app (no sentence punctuation).
_FOOTER = re.compile(
    r"^(?i:sent from|sent with|sent via|sent using|get outlook for|envoyé de|envoyé depuis|"
    r"envoyé à partir de|envoyé avec|gesendet von|gesendet mit|gesendet vom|von meinem|"
    r"enviado desde|enviado de|enviado do|enviado con|enviado com|inviato da|inviato dal|"
    r"verzonden met|verzonden vanaf|verstuurd vanaf|wysłane z|odesláno z|skickat från|"
    r"sendt fra|lähetetty|отправлено с|отправлено со|отправлено из|"
    r"скачайте приложение|получено с)\s+"
    r"(?P<rest>(?:my|mon|ma|mi|mio|mia|meinem|meiner|mijn|mitt|min|moim|mého|"
    r"[A-ZÀ-ÝА-ЯЁ\d]|i[A-Z]|мо|моего|мобильной)[^,;!?<>()]{0,60}?)"
    r"\s*(?:[<(]\S+[>)])?\s*\.?$"
)


class _Body:
    """The lines of a body, each also squashed for matching and flagged if quoted."""

    def __init__(self, text: str) -> None:
        self.lines = [line.rstrip() for line in text.splitlines()]
        self.flat = [_squash(line) for line in self.lines]
        self.quoted = [line.lstrip().startswith(">") for line in self.lines]
        # Lines of closed ``` code blocks: never a header, a quote or a signature.
        self.fenced = [False] * len(self.lines)
        fences = [i for i, line in enumerate(self.lines) if _FENCE.match(line)]
        for start, end in zip(fences[::2], fences[1::2], strict=False):
            self.fenced[start : end + 1] = [True] * (end + 1 - start)

    def __len__(self) -> int:
        return len(self.lines)

    def blank(self, i: int) -> bool:
        return not self.flat[i] and not self.quoted[i]


def _squash(line: str) -> str:
    """Whitespace collapsed, invisible marks removed, quote prefixes dropped."""
    return " ".join(_QUOTE_PREFIX.sub("", _INVISIBLE.sub("", line)).split())


_MARKER_FLAT: Final = _squash(MARKER).casefold()


def _marker_span(body: _Body, i: int) -> int:
    here = body.flat[i].casefold()
    if not here:
        return 0
    if any(phrase in here for phrase in _MARKER_PHRASES):
        return 1
    if len(here) >= 3 and here in _MARKER_FLAT and i + 1 < len(body):
        both = f"{here} {body.flat[i + 1].casefold()}"
        if any(phrase in both for phrase in _MARKER_PHRASES):
            return 2
    return 0


def _attribution_matches(body: _Body, i: int, n: int) -> bool:
    last = i + n - 1
    if last >= len(body):
        return False
    tail = body.flat[last]
    if not tail.endswith(":") and "wrote" not in tail.casefold():
        return False
    if any(body.blank(j) for j in range(i, i + n)):
        return False
    # Gmail may wrap the closing ">" of the address onto a line of its own: ">:".
    wrapped = n > 1 and body.lines[last].strip() == ">:"
    if any(body.quoted[j] for j in range(i, last)) or (body.quoted[last] and not wrapped):
        return False
    flat = body.flat[i:last] if wrapped else body.flat[i : i + n]
    text = " ".join(flat) + (">:" if wrapped else "")
    if len(text) > 300 or not _DATE_OR_ADDRESS.search(text):
        return False
    if not text.endswith(":") and "wrote" not in text.casefold():
        return False
    return any(pattern.match(text) for pattern in _ATTRIBUTION)


def _continues(body: _Body, i: int) -> bool:
    """Whether line ``i`` can only continue a wrapped attribution line: it starts
    with (the rest of) an address."""
    words = body.flat[i].split(maxsplit=1)
    return body.lines[i].strip() == ">:" or (
        bool(words) and (words[0][0] in "<([" or "@" in words[0])
    )


def _attribution_span(body: _Body, i: int) -> int:
    """Lines (1 to 3) of the attribution line that starts at ``i``, or 0."""
    for n in (1, 2, 3):
        if _attribution_matches(body, i, n):
            if n == 1 or _OPENER.match(body.flat[i]):
                return n
            # When the same header also matches from a later line that could start
            # one, line i is the agent's own text right above the header.
            later = any(
                _attribution_matches(body, i + k, n - k) and not _continues(body, i + k)
                for k in range(1, n)
            )
            return 0 if later else n
    return 0


def _header_key(body: _Body, i: int) -> str | None:
    if body.quoted[i]:
        return None
    match = _HEADER_LINE.match(body.flat[i])
    if match is None:
        return None
    key = match[1].casefold().strip()
    return key if key in _FROM_KEYS or key in _OTHER_KEYS else None


def _headers_span(body: _Body, i: int) -> int:
    """Lines of the Outlook-style header block that starts at ``i``, or 0.

    A block has a "From:" line in some language and another header line; a long
    value may wrap onto one continuation line. It must show an address or a year,
    so that "From: 9:00 / To: 18:00" in the agent's text is not taken for one.
    """
    if _header_key(body, i) is None:
        return 0
    keys: list[str] = []
    end = i
    loose = False
    for j in range(i, min(i + 12, len(body))):
        key = _header_key(body, j)
        if key is not None:
            keys.append(key)
            end, loose = j + 1, False
        elif body.flat[j] and not body.quoted[j] and not loose:
            loose = True
        else:
            break
    if len(set(keys)) < 2 or not any(key in _FROM_KEYS for key in keys):
        return 0
    if not any(_ADDRESS_OR_YEAR.search(line) for line in body.lines[i:end]):
        return 0
    return end - i


def _is_separator(body: _Body, i: int) -> bool:
    text = body.flat[i]
    framed = text[:1] in ("-", "_", "=", "*") or text.endswith(":")
    return framed and text.strip(" -_=*:").casefold() in _SEPARATOR_PHRASES


def _is_footer(body: _Body, i: int) -> bool:
    text = body.flat[i]
    if body.quoted[i] or len(text) > 120:
        return False
    match = _FOOTER.match(text)
    return match is not None and len(match["rest"].split()) <= 7


def _quote_attribution(body: _Body, i: int) -> int:
    """Where the quote run at ``i`` really starts: at an attribution line of a
    language we do not know ("<date> <name> írta:"), if one stands right above it."""
    j = i - 1
    if j >= 0 and body.blank(j):
        j -= 1
    for start in (j - 1, j):
        if start < 0 or any(body.blank(k) or body.quoted[k] for k in range(start, j + 1)):
            continue
        text = " ".join(body.flat[start : j + 1])
        if text.endswith(":") and len(text) <= 200 and _YEAR_OR_ADDRESS.search(text):
            return start
    return i


# -- the cut ------------------------------------------------------------------------------


def _find_cut(body: _Body) -> _Cut | None:
    for i in range(len(body)):
        if body.fenced[i] or body.blank(i):
            continue
        if span := _marker_span(body, i):
            return _Cut(i, i + span, _Kind.marker)
        if body.quoted[i]:
            return _Cut(_quote_attribution(body, i), i, _Kind.quote)
        if _is_separator(body, i):
            return _Cut(i, i + 1, _Kind.separator)
        if span := _headers_span(body, i):
            return _Cut(i, i + span, _Kind.headers)
        if span := _attribution_span(body, i):
            return _Cut(i, i + span, _Kind.attribution)
        if _is_footer(body, i):
            return _Cut(i, i + 1, _Kind.footer)
    return None


def _answers(body: _Body, cut: _Cut, *, after_text: bool) -> list[str]:
    """The unquoted answers written between or below "> " quoted history.

    Only when the history right after the cut is "> " quoted: an unquoted body
    under a header is the quoted mail itself (HTML mail turned into text). Below
    text of its own, an answer must follow a blank line, so that a quoted line
    the client wrapped without its "> " is not taken for one. The quoted marker
    ends the search: everything below it is our own notification.
    """
    first = next((j for j in range(cut.end, len(body)) if not body.blank(j)), None)
    if first is None or not body.quoted[first]:
        return []
    answers: list[list[str]] = []
    current: list[str] | None = None
    for j in range(first, len(body)):
        if body.quoted[j]:
            if _marker_span(body, j):
                break
            current = None
        elif body.blank(j):
            if current is not None:
                current.append("")
        elif (
            _marker_span(body, j)
            or _is_separator(body, j)
            or _headers_span(body, j)
            or _attribution_span(body, j)
        ):
            break
        else:
            if current is None:
                current = []
                if not after_text or body.blank(j - 1):
                    answers.append(current)
            current.append(body.lines[j])
    found: list[str] = []
    for answer in answers:
        if trimmed := _trim(answer):
            found.extend(["", *trimmed] if found or after_text else trimmed)
    return found


# -- the signature ------------------------------------------------------------------------


def _signature_start(body: _Body) -> int | None:
    """The first line of a signature at the end of ``body``, if any.

    An RFC 3676 "-- " line (or "--") with at most 15 lines below it, a line of
    underscores (a mailing list footer) with at most 8, or a mobile footer.
    """
    below = [0] * len(body)  # non-blank lines after each line
    for i in range(len(body) - 2, -1, -1):
        below[i] = below[i + 1] + (not body.blank(i + 1))
    for i, line in enumerate(body.lines):
        if body.fenced[i]:
            continue
        if line == "--" and below[i] <= 15:
            return i
        if _UNDERSCORES.fullmatch(line) and below[i] <= 8:
            return i
        if _is_footer(body, i):
            return i
    return None


def _trim(lines: list[str]) -> list[str]:
    """Without leading blank lines and trailing blank or separator-only lines."""
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    end = len(lines)
    while end > start and (
        not lines[end - 1].strip() or _SEPARATOR_ONLY.fullmatch(lines[end - 1].strip())
    ):
        end -= 1
    return lines[start:end]


def new_text(body: str) -> ReplyText:
    """The text the agent wrote in reply ``body``: see the module docstring."""
    whole = _Body(body)
    cut = _find_cut(whole)
    footer: list[str] = []
    quoted = False
    if cut is None:
        kept = whole.lines
    else:
        kept = _trim(whole.lines[: cut.start])
        rest = any(not whole.blank(j) for j in range(cut.end, len(whole)))
        if cut.kind is _Kind.footer:
            footer, quoted = [whole.lines[cut.start]], rest
        else:
            quoted = True
            if cut.kind in (_Kind.quote, _Kind.attribution):
                kept = kept + _answers(whole, cut, after_text=bool(kept))
    text = _Body("\n".join(_trim(kept)))
    start = _signature_start(text)
    # A signature is never all there is, unless it is a mobile footer: a text that
    # starts with "-- " is more likely the agent's than a bare signature.
    signature: list[str] = []
    lines = text.lines
    if start is not None and (_trim(lines[:start]) or _is_footer(text, start)):
        signature, lines = lines[start:], _trim(lines[:start])
    if footer:
        signature = [*signature, "", *footer] if signature else footer
    return ReplyText(text="\n".join(lines), quoted=quoted, signature="\n".join(_trim(signature)))
