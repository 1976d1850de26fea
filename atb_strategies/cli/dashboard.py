"""``atb dashboard SESSION``: the read-only web dashboard of a live or paper session, finished
or running (SESSION is its folder, its journal or its ``bars.jsonl``). Starlette and uvicorn
are imported only when it runs (the ``dashboard`` extra)."""

from __future__ import annotations

from pathlib import Path

import click

from atb_strategies.dashboard.server import DEFAULT_BIND


@click.command("dashboard")
@click.argument("session", type=click.Path(path_type=Path))
@click.option(
    "--bind",
    default=DEFAULT_BIND,
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen; a non-loopback host requires a token.",
)
@click.option(
    "--token",
    default=None,
    help="Required on every request (?token=...); generated for a non-loopback --bind.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between the page's updates.",
)
def dashboard(session: Path, bind: str, token: str | None, poll: float) -> None:
    """Serve a read-only page of a live session: per symbol the price with predictions and
    fills, position, open orders, equity, the model and its age, guards, shadows and the kill
    switch, updating as bars arrive."""
    from atb_strategies.dashboard.server import require_extra, serve_dashboard
    from atb_strategies.dashboard.state import session_state

    require_extra("atb dashboard")
    session_state(session)  # a bad SESSION fails here, in one line, before anything listens
    serve_dashboard(session, bind, token, flag="--bind", poll=poll, echo=click.echo)
