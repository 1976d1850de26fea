"""The state of a live or paper session, read from the files it writes (nothing else).

A session directory holds ``bars.jsonl`` (per-bar status, ``live.bars_log``), the journal
(``journal.sqlite``: orders, fills, the kill switch, model events) and, with shadows,
``shadow.csv``. :func:`session_state` reads them read-only (the journal through SQLite's
``mode=ro``), so a finished session and a running one are read the same way, and nothing the
session writes is touched. Credentials are never in these files, and the state never carries
an order's raw exchange ``info``.
"""

from __future__ import annotations

import bisect
import csv
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atb_strategies.exceptions import ConfigurationError, JournalError
from atb_strategies.live.bars_log import BARS_FILE, read_bars
from atb_strategies.live.journal import FINAL
from atb_strategies.live.journal_state import read_marker
from atb_strategies.live.shadow_log import SHADOW_FILE

#: The journal's file name in a session directory (``atb live --journal``'s default name).
JOURNAL_FILE = "journal.sqlite"
#: Bars kept per symbol in the state (the chart's window).
MAX_BARS = 500
_ORDER_COLUMNS = "client_id, symbol, side, type, amount, price, state, filled, created"


@dataclass(frozen=True)
class SessionFiles:
    """Where a session's files are (each may not exist yet while the session starts)."""

    bars: Path
    journal: Path
    shadow: Path


def session_files(path: Path | str) -> SessionFiles:
    """The files of the session at ``path``: its directory, its journal or its ``bars.jsonl``.

    Raises
    ------
    ConfigurationError
        ``path`` does not exist, or holds neither a ``bars.jsonl`` nor a journal.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigurationError(
            f"{path} does not exist: give the folder of a live session (where --journal is, "
            "out/live by default) or its journal file."
        )
    if path.is_dir():
        journal, folder = path / JOURNAL_FILE, path
    elif path.suffix == ".jsonl":
        journal, folder = path.with_name(JOURNAL_FILE), path.parent
    else:
        journal, folder = path, path.parent
    files = SessionFiles(folder / BARS_FILE, journal, folder / SHADOW_FILE)
    if path.is_dir() and not files.bars.exists() and not files.journal.exists():
        raise ConfigurationError(
            f"{path} holds no live session: neither {BARS_FILE} nor {JOURNAL_FILE} is there "
            "(atb live writes them beside --journal)."
        )
    return files


def _rows(db: sqlite3.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    cur = db.execute(sql, args)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def read_journal(path: Path) -> dict[str, Any]:
    """Open orders, fills, model events and the kill-switch trip of a journal, read-only.

    Raises
    ------
    JournalError
        The file is not a readable atb journal.
    """
    empty: dict[str, Any] = {"open_orders": [], "fills": [], "model_events": []}
    if not path.exists():
        trip = read_marker(path)
        return {**empty, "kill_switch": trip.kill_switch if trip else None}
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as e:
        raise JournalError(f"journal {path} cannot be opened read-only ({e})") from e
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            raise JournalError(f"journal {path} is not an atb journal (no meta table)")
        state = dict(empty)
        if "orders" in tables:
            marks = ",".join("?" * len(FINAL))
            query = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE state NOT IN ({marks})"
            state["open_orders"] = _rows(db, query + " ORDER BY created", *FINAL)
        if "fills" in tables:
            state["fills"] = _rows(
                db,
                "SELECT f.trade_id, o.symbol, o.side, f.amount, f.price, f.fee, f.fee_currency, "
                "f.timestamp FROM fills f LEFT JOIN orders o ON o.client_id = f.client_id "
                "ORDER BY f.recorded",
            )
        if "model_events" in tables:
            state["model_events"] = _rows(
                db,
                "SELECT kind, bar, symbol, from_key, to_key, reason, mode FROM model_events "
                "ORDER BY id",
            )
        row = db.execute("SELECT value FROM meta WHERE key='kill_switch'").fetchone()
    except sqlite3.DatabaseError as e:
        raise JournalError(f"journal {path} is not a readable SQLite journal ({e})") from e
    finally:
        db.close()
    trip = json.loads(row[0]) if row else None
    if trip is None:
        marker = read_marker(path)
        trip = marker.kill_switch if marker else None
    state["kill_switch"] = trip
    return state


def read_shadows(path: Path) -> list[dict[str, Any]]:
    """The last row of each model (champion and challengers) of the last session in
    ``shadow.csv``; none when there is no file. A partial last line is skipped."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("trades") not in (None, "")]
    if not rows:
        return []
    session = rows[-1]["session"]
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row["session"] == session:
            last[(row["symbol"], row["model_key"])] = row
    keep = ("time", "symbol", "role", "model_key", "signal", "trades")
    return [
        {k: row.get(k) for k in keep}
        | {"position": _rounded(row.get("position"), 6), "equity": _rounded(row.get("equity"), 2)}
        for row in last.values()
    ]


def _rounded(text: str | None, digits: int) -> float | None:
    try:
        return round(float(text or ""), digits)
    except ValueError:
        return None


def _plain(symbol: Any) -> str:
    """``BTC/USDT`` (or ``BTC/USDT:USDT``) -> ``BTCUSDT``, the name of the session's feed."""
    return str(symbol or "").split(":")[0].replace("/", "")


def _iso_ms(ms: Any) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _place_fills(sym: dict[str, Any]) -> None:
    """Keep the last ``MAX_BARS`` bars and give each fill its bar (``slot``): the first bar
    stamped at or after it (bars carry their close time); fills older than the window go."""
    dropped = len(sym["bars"]) > MAX_BARS
    sym["bars"] = sym["bars"][-MAX_BARS:]
    times = [str(b["time"])[:19] for b in sym["bars"]]
    placed = []
    for fill in sym["fills"]:
        when = str(fill.get("time") or "")[:19]
        slot = bisect.bisect_left(times, when) if when else len(times) - 1
        if dropped and slot == 0 and when < times[0]:
            continue
        placed.append({**fill, "slot": min(slot, len(times) - 1)})
    sym["fills"] = placed


def session_state(path: Path | str) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready data.

    Per symbol: its bars (time, close, prediction, signal, action, position), its fills and
    open orders, and its last bar's status (position, value, model, model age, guards);
    the session: equity per bar, the kill switch, the model events and the shadows' books.
    """
    files = session_files(path)
    bars = read_bars(files.bars)
    journal = read_journal(files.journal)
    symbols: dict[str, dict[str, Any]] = {}
    for bar in bars:
        sym = symbols.setdefault(
            str(bar.get("symbol")), {"bars": [], "fills": [], "open_orders": [], "last": {}}
        )
        sym["bars"].append(
            {k: bar.get(k) for k in ("time", "close", "prediction", "signal", "action")}
            | {"position": bar.get("position")}
        )
        sym["fills"].extend(bar.get("fills") or [])
        sym["open_orders"] = list(bar.get("open_orders") or [])
        sym["last"] = {k: v for k, v in bar.items() if k not in ("fills", "open_orders")}
    for fill in journal["fills"]:  # a live broker's fills are in its journal (BTC/USDT)
        name = _plain(fill.get("symbol"))
        if name in symbols:
            symbols[name]["fills"].append({**fill, "time": _iso_ms(fill.get("timestamp"))})
    for sym in symbols.values():
        _place_fills(sym)
    equity: dict[str, float] = {}
    for bar in bars:  # the account's value at each bar time (the last symbol's report wins)
        if bar.get("value") is not None:
            equity[str(bar["time"])] = bar["value"]
    return {
        "session": str(files.bars.parent),
        "bars": len(bars),
        "last_time": bars[-1]["time"] if bars else None,
        "symbols": symbols,
        "equity": [{"time": t, "value": v} for t, v in list(equity.items())[-MAX_BARS:]],
        "kill_switch": journal["kill_switch"],
        "open_orders": journal["open_orders"],
        "model_events": journal["model_events"],
        "shadows": read_shadows(files.shadow),
    }
