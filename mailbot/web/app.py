"""The FastAPI application: staff pages, the customer status page, API and metrics.

Every request gets a session on the read-only database (``Database(read_only=
True)``). Staff pages need a login; the customer sees one ticket through the
signed link from their mail. Every answer carries a strict
Content-Security-Policy: no script at all, no remote resources.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import FastAPI, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse

from mailbot import reports, signing
from mailbot.config import Settings
from mailbot.errors import StorageUnavailableError
from mailbot.render import BUILTIN_TEMPLATES, PageRenderer
from mailbot.sanitize import sanitize_html
from mailbot.states import Priority, TicketStatus
from mailbot.store import credentials, ticket_reads
from mailbot.store import reports as queries
from mailbot.store.blobs import BlobStore
from mailbot.store.db import Database
from mailbot.store.types import utcnow
from mailbot.web import api, auth, ops, svg
from mailbot.web.deps import Db, LoginRequiredError, Staff, WebState
from mailbot.web.text import linkify

log = logging.getLogger(__name__)

#: The policy of every page: nothing runs, nothing is fetched from elsewhere.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: Sanitised mail HTML, shown inside <iframe sandbox>: also sandboxed by its own policy.
FRAME_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox; frame-ancestors 'self'"
#: Attachment types sent with their own Content-Type; all others are octet-stream.
SAFE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "application/pdf", "text/plain", "application/zip"}
)
MAX_INT = 2**31 - 1


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def create_app(
    settings: Settings,
    db: Database,
    key: bytes,
    *,
    clock: Callable[[], datetime] = utcnow,
    workers: Callable[[], Mapping[str, bool]] | None = None,
) -> FastAPI:
    """The web application over ``db`` (which should be opened ``read_only=True``)."""
    state = WebState(
        settings,
        db,
        key,
        PageRenderer(),
        BlobStore(settings.attachment_dir),
        clock,
        workers or (lambda: {}),
    )
    app = FastAPI(
        title="mailbot",
        summary="Read-only helpdesk API",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.web = state
    css = (BUILTIN_TEMPLATES / "web" / "web.css").read_bytes()

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequiredError)
    async def to_login(request: Request, exc: LoginRequiredError) -> Response:
        return RedirectResponse("/login?" + urlencode({"next": exc.target}), status_code=303)

    @app.exception_handler(StorageUnavailableError)
    async def unavailable(request: Request, exc: StorageUnavailableError) -> Response:
        return PlainTextResponse("database unavailable", status_code=503)

    def page(name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
        context.setdefault("user", None)
        context.update(fmt=_fmt, team=settings.conversation.team_name)
        return HTMLResponse(state.renderer.render(name, context), status_code=status_code)

    @app.get("/static/web.css", include_in_schema=False)
    def stylesheet() -> Response:
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    # -- login -------------------------------------------------------------------

    login_cookie = auth.login_cookie_name(state.secure_cookie)
    public = urlsplit(settings.conversation.public_url)
    own_origins = (f"{public.scheme}://{public.netloc}",)

    def login_page(
        request: Request, next: str, error: str | None, status_code: int = 200
    ) -> HTMLResponse:
        """The form, with a CSRF token bound to the browser's pre-session cookie."""
        nonce = auth.login_nonce(request.cookies.get(login_cookie))
        context = {
            "next": auth.safe_next(next),
            "error": error,
            "csrf": auth.login_form_token(state.key, nonce, state.clock()),
        }
        response = page("login.html.j2", context, status_code)
        response.set_cookie(
            login_cookie,
            nonce,
            max_age=int(auth.LOGIN_FORM_LIFE.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=state.secure_cookie,
            path="/",
        )
        return response

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return login_page(request, next, None)

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        s: Db,
        token: Annotated[str, Form(max_length=200)],
        next: Annotated[str, Form()] = "/",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        headers = request.headers
        nonce = request.cookies.get(login_cookie)
        if not (
            auth.same_origin(headers.get("origin"), headers.get("host"), own_origins)
            and auth.check_login_form(state.key, nonce, csrf, state.clock())
        ):
            log.warning(
                "login form refused: CSRF check failed", extra={"action": "web_login_refused"}
            )
            error = "This login form has expired or did not come from this site. Please try again."
            return login_page(request, next, error, status_code=403)
        email = credentials.email_for_token(s, token.strip())
        generation = credentials.token_generation(s, email) if email else None
        if email is None or generation is None:
            return login_page(request, next, "Unknown or revoked token.", status_code=401)
        response = RedirectResponse(auth.safe_next(next), status_code=303)
        response.delete_cookie(
            login_cookie, path="/", httponly=True, samesite="strict", secure=state.secure_cookie
        )
        response.set_cookie(
            auth.COOKIE,
            auth.make_session(
                state.key,
                email,
                generation,
                state.clock(),
                timedelta(hours=settings.web.session_hours),
            ),
            max_age=int(settings.web.session_hours * 3600),
            httponly=True,
            samesite="strict",
            secure=state.secure_cookie,
            path="/",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -- staff pages ----------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def dashboard(user: Staff, s: Db) -> HTMLResponse:
        board = reports.build_dashboard(s, state.clock())
        return page(
            "dashboard.html.j2",
            {"user": user, "d": board, "chart": svg.trend_chart(board.trend)},
        )

    @app.get("/tickets", include_in_schema=False)
    def ticket_list(
        user: Staff,
        s: Db,
        status: TicketStatus | None = None,
        priority: Priority | None = None,
        category: Annotated[str | None, Query(max_length=64)] = None,
        assignee: Annotated[str | None, Query(max_length=320)] = None,
        breached: api.YesNo | None = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        sort: api.Sort = "-number",
        page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    ) -> HTMLResponse:
        flt = api.make_filter(status, priority, category, assignee, breached, q)
        size = settings.web.page_size
        rows, total = queries.ticket_page(
            s, flt, now=state.clock(), sort=sort, limit=size, offset=(page_number - 1) * size
        )
        args = {
            k: v
            for k, v in {
                "status": status.value if status else None,
                "priority": priority.value if priority else None,
                "category": category,
                "assignee": assignee,
                "breached": breached,
                "q": q,
                "sort": sort,
            }.items()
            if v
        }
        pages = max(1, math.ceil(total / size))

        def link(**change: Any) -> str:
            merged = {**args, **change}
            return "/tickets?" + urlencode({k: v for k, v in merged.items() if v})

        return page(
            "tickets.html.j2",
            {
                "user": user,
                "rows": rows,
                "total": total,
                "page": page_number,
                "pages": pages,
                "args": args,
                "link": link,
                "statuses": [x.value for x in TicketStatus],
                "priorities": [x.value for x in Priority],
                "categories": queries.categories(s),
                "agents": queries.agent_emails(s),
                "sorts": list(queries.SORTS),
            },
        )

    @app.get("/tickets/{number}", include_in_schema=False)
    def ticket_page(
        user: Staff,
        s: Db,
        number: Annotated[int, api.NumberPath],
        view: api.View = "text",
    ) -> HTMLResponse:
        detail = ticket_reads.ticket_detail(s, number)
        if detail is None:
            return page("error.html.j2", {"user": user, "message": "No such ticket."}, 404)
        t = detail.ticket
        clock = reports.ticket_clock(t, state.clock())
        return page(
            "ticket.html.j2",
            {
                "user": user,
                "d": detail,
                "t": t,
                "clock": clock,
                "view": view,
                "linkify": linkify,
            },
        )

    @app.get("/tickets/{number}/messages/{message_id}/html", include_in_schema=False)
    def message_html(
        user: Staff,
        s: Db,
        number: Annotated[int, api.NumberPath],
        message_id: Annotated[int, api.IdPath],
    ) -> Response:
        detail = ticket_reads.ticket_detail(s, number)
        found = [m for m in detail.messages if m.id == message_id] if detail else []
        if not found or found[0].html_body is None:
            return PlainTextResponse("not found", status_code=404)
        body = (
            '<!doctype html><html><head><meta charset="utf-8"></head><body>'
            f"{sanitize_html(found[0].html_body)}</body></html>"
        )
        return HTMLResponse(
            body,
            headers={"Content-Security-Policy": FRAME_CSP, "X-Frame-Options": "SAMEORIGIN"},
        )

    @app.get("/attachments/{attachment_id}", include_in_schema=False)
    def download(user: Staff, s: Db, attachment_id: Annotated[int, api.IdPath]) -> Response:
        ref = queries.attachment(s, attachment_id)
        if ref is None:
            return PlainTextResponse("not found", status_code=404)
        try:
            payload = state.blobs.get(ref.storage_key)
        except (OSError, ValueError):
            return PlainTextResponse("attachment file missing", status_code=404)
        kind = ref.content_type.lower() if ref.content_type.lower() in SAFE_TYPES else None
        return Response(
            payload,
            media_type=kind or "application/octet-stream",
            headers={
                "Content-Disposition": _disposition(ref.file_name),
                "Content-Security-Policy": "default-src 'none'; sandbox",
            },
        )

    # -- the customer's page -----------------------------------------------------------

    @app.get("/status/{token}", include_in_schema=False)
    def customer_status(s: Db, token: Annotated[str, api.TokenPath]) -> HTMLResponse:
        number = signing.read_status_token(state.key, token, state.clock())
        detail = ticket_reads.ticket_detail(s, number) if number is not None else None
        if detail is None or detail.ticket.spam:
            return page(
                "error.html.j2",
                {"message": "This link is not valid or has expired. Reply to our mail instead."},
                403,
            )
        t = detail.ticket
        public = [m for m in detail.messages if not m.internal]
        done = t.status in queries.DONE_STATUSES
        return page(
            "status.html.j2",
            {
                "t": t,
                "messages": public,
                "expected": None if done else t.sla_resolution_due_at,
                "linkify": linkify,
            },
        )

    api.add_routes(app)
    ops.add_routes(app)
    return app


def _disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback name and the UTF-8 name (RFC 6266)."""
    ascii_name = "".join(c if c.isalnum() or c in "._- " else "_" for c in name)[:100]
    ascii_name = ascii_name.encode("ascii", "replace").decode().replace("?", "_") or "file"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name[:200], safe='')}"
