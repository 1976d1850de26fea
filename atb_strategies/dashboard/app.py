"""The dashboard's Starlette application: ``/`` (the page) and ``/api/state`` (JSON), GET only.

With a token, every request must carry it: ``?token=...`` or the ``X-Atb-Token`` header
(``Authorization: Bearer ...`` works too); a request without it gets 401 and nothing else.
A session file that cannot be read gives 500 with the one-line reason (no traceback).
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from atb_strategies.dashboard.page import render_page
from atb_strategies.dashboard.state import session_files, session_state
from atb_strategies.exceptions import AtbError
from atb_strategies.live.journal_state import marker_path


def _presented(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    bearer = auth[7:] if auth.lower().startswith("bearer ") else ""
    return request.query_params.get("token") or request.headers.get("x-atb-token") or bearer or ""


def _signature(session: Path | str) -> tuple[Any, ...]:
    """Size and modification time of every file the state is read from (None: missing)."""
    files = session_files(session)
    wal = files.journal.with_name(files.journal.name + "-wal")
    out = []
    for path in (files.bars, files.journal, wal, marker_path(files.journal), files.shadow):
        try:
            st = path.stat()
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


def create_app(session: Path | str, token: str | None = None, poll_seconds: float = 2.0):
    """The dashboard of the session at ``session`` (its folder, journal or ``bars.jsonl``).

    Parameters
    ----------
    token : str or None
        Required on every request when set.
    poll_seconds : float
        How often the page asks for the state.
    """
    page = render_page(poll_seconds)

    def allowed(request: Request) -> bool:
        return token is None or hmac.compare_digest(_presented(request).encode(), token.encode())

    def denied() -> Response:
        return PlainTextResponse("a token is required: add ?token=... to the URL", 401)

    async def index(request: Request) -> Response:
        if not allowed(request):
            return denied()
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    cache: dict[str, Any] = {}

    def state(request: Request) -> Response:  # sync: Starlette runs it off the event loop
        if not allowed(request):
            return denied()
        try:
            signature = _signature(session)
            if cache.get("signature") != signature:  # read again only when a file changed
                cache.update(signature=signature, data=session_state(session))
        except AtbError as e:
            cache.clear()
            return PlainTextResponse(" ".join(str(e).split()), 500)
        return JSONResponse(cache["data"], headers={"Cache-Control": "no-store"})

    return Starlette(
        routes=[Route("/", index, methods=["GET"]), Route("/api/state", state, methods=["GET"])]
    )
