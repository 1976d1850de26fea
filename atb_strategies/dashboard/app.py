"""The dashboard's Starlette application: ``/`` (the page) and ``/api/state`` (JSON), GET only.

With a token, every request must carry it: ``?token=...`` or the ``X-Atb-Token`` header
(``Authorization: Bearer ...`` works too); a request without it gets 401 and nothing else.
A session file that cannot be read gives 500 with the one-line reason (no traceback).
"""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from atb_strategies.dashboard.page import render_page
from atb_strategies.dashboard.state import session_state
from atb_strategies.exceptions import AtbError


def _presented(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    bearer = auth[7:] if auth.lower().startswith("bearer ") else ""
    return request.query_params.get("token") or request.headers.get("x-atb-token") or bearer or ""


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

    async def state(request: Request) -> Response:
        if not allowed(request):
            return denied()
        try:
            data = session_state(session)
        except AtbError as e:
            return PlainTextResponse(" ".join(str(e).split()), 500)
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    return Starlette(
        routes=[Route("/", index, methods=["GET"]), Route("/api/state", state, methods=["GET"])]
    )
