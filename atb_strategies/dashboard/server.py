"""Bind and run the dashboard (uvicorn): in the foreground (``atb dashboard``) or in a daemon
thread of a live process (``atb live --dashboard``).

Loopback addresses need no token; any other host gets one (the given one, or a generated one)
and the URL printed carries it. Starlette and uvicorn are the ``dashboard`` extra: without them
:func:`require_extra` fails with one line naming it.
"""

from __future__ import annotations

import importlib
import ipaddress
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atb_strategies.exceptions import ConfigurationError

DEFAULT_BIND = "127.0.0.1:8765"


def require_extra(flag: str) -> None:
    """Fail with one line when starlette or uvicorn is missing."""
    missing = []
    for name in ("starlette", "uvicorn"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigurationError(
            f"{flag} needs {' and '.join(missing)}: pip install 'atb-strategies[dashboard]'."
        )


def parse_bind(value: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT``, on 127.0.0.1) -> (host, port)."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"{flag} {value!r} is not HOST:PORT (e.g. {flag} {DEFAULT_BIND}).")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> str | None:
    """The token the server requires: none on loopback unless given; elsewhere the given
    one or a new random one."""
    if is_loopback(host):
        return token
    return token or secrets.token_urlsafe(24)


@dataclass
class Dashboard:
    """A running dashboard server; ``url`` includes the token when there is one."""

    server: Any
    thread: threading.Thread | None
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


def _server(session: Path, host: str, port: int, token: str | None, poll: float) -> Any:
    import uvicorn

    from atb_strategies.dashboard.app import create_app

    app = create_app(session, token=token, poll_seconds=poll)
    # log_config=None: uvicorn's warnings go through the process's own (redacting) handlers
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, log_config=None
    )
    return uvicorn.Server(config)


def _listen(host: str, port: int, bind: str, flag: str) -> socket.socket:
    """The server's socket, bound here so that a taken or foreign address is one clear line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigurationError(
            f"{flag} {bind}: the dashboard cannot listen there ({e.strerror or e}); choose "
            "another HOST:PORT."
        ) from None
    return sock


def _url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def start_dashboard(
    session: Path, bind: str, token: str | None, *, flag: str, poll: float = 2.0
) -> Dashboard:
    """Serve the dashboard of ``session`` in a daemon thread; returns once it listens.

    Raises
    ------
    ConfigurationError
        A bad ``bind``, the extra missing, or the address cannot be bound.
    """
    require_extra(flag)
    host, port = parse_bind(bind, flag)
    token = resolve_token(host, token)
    sock = _listen(host, port, bind, flag)
    server = _server(session, host, port, token, poll)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="atb-dashboard", daemon=True
    )
    thread.start()
    while not server.started:  # uvicorn sets it once it serves on the socket
        if not thread.is_alive():
            sock.close()
            raise ConfigurationError(f"{flag} {bind}: the dashboard did not start (see the log).")
        time.sleep(0.02)
    return Dashboard(server, thread, _url(host, sock.getsockname()[1], token))


def serve_dashboard(
    session: Path, bind: str, token: str | None, *, flag: str, poll: float, echo: Any
) -> None:
    """Serve in the foreground until Ctrl-C, announcing the URL through ``echo``."""
    dashboard = start_dashboard(session, bind, token, flag=flag, poll=poll)
    echo(f"dashboard: {dashboard.url} (Ctrl-C stops)")
    try:
        while dashboard.thread is not None and dashboard.thread.is_alive():
            dashboard.thread.join(timeout=0.5)
    except KeyboardInterrupt:  # the way to stop it: not an error
        echo("dashboard stopped")
    finally:
        dashboard.stop()
