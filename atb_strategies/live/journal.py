"""A small SQLite journal of live orders and fills, for restart safety.

Every order is written **before** it is sent (state ``sending``) with its deterministic client
order id, then updated as the exchange answers (``open``, ``unknown``, ``closed``, ``canceled``,
``rejected``, ``not_placed``). Every fill is written once, keyed by the exchange's trade id. After
a crash, a new broker reads the orders that were not final and asks the exchange about each by
client order id: an order that was sent but never acknowledged is found (and adopted) or proven
absent, so it is never sent twice.

The journal is also the audit trail of the served model: every hot reload of ``latest`` (and
every promoted version refused at a reload) is a ``model_events`` row with the bar, the keys
before and after and the reason. Paper sessions write those rows too (and nothing else).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

FINAL = ("closed", "canceled", "rejected", "not_placed", "expired")
_UNFINISHED = (
    "SELECT * FROM orders WHERE state NOT IN (" + ",".join("?" * len(FINAL)) + ") ORDER BY created"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    ref INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    type TEXT NOT NULL,
    amount REAL NOT NULL,
    price REAL,
    exchange_id TEXT,
    state TEXT NOT NULL,
    filled REAL NOT NULL DEFAULT 0,
    info TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fills (
    trade_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    amount REAL NOT NULL,
    price REAL NOT NULL,
    fee REAL NOT NULL,
    fee_currency TEXT,
    timestamp INTEGER,
    recorded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS model_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    mode TEXT NOT NULL,
    kind TEXT NOT NULL,
    bar TEXT NOT NULL,
    symbol TEXT NOT NULL,
    from_key TEXT,
    to_key TEXT,
    reason TEXT,
    recorded TEXT NOT NULL
);
"""


class Journal:
    """Orders and fills of one account, in ``path`` (SQLite, WAL mode)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.session = uuid.uuid4().hex[:8]

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ session state

    def _get(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _set(self, key: str, value: Any) -> None:
        with self._lock:
            if value is None:
                self._db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (key, json.dumps(value)),
                )

    def record_kill_switch(self, reason: str, **values: Any) -> None:
        """Record that the kill switch tripped (time, reason, values); it stays tripped for
        every later session on this journal until ``clear_kill_switch``."""
        trip = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reason": reason}
        self._set("kill_switch", {**trip, "session": self.session, **values})

    def kill_switch(self) -> dict[str, Any] | None:
        """The recorded trip, or None."""
        return self._get("kill_switch")

    def clear_kill_switch(self) -> dict[str, Any] | None:
        """Forget the recorded trip (the user's explicit decision); returns it."""
        trip = self.kill_switch()
        self._set("kill_switch", None)
        return trip

    def day_start_value(self, day: str, value: float) -> float:
        """The portfolio value at the first check of UTC ``day`` (``value`` when this is the
        first), kept across restarts so a restart does not reset the daily-loss limit."""
        key = f"day_start:{day}"
        known = self._get(key)
        if known is None:
            self._set(key, float(value))
            return float(value)
        return float(known)

    def client_id(self, ref: int, prefix: str = "atb") -> str:
        """Deterministic client order id for order ``ref`` in this session (<= 36 chars)."""
        return f"{prefix}{self.session}x{ref}"

    def record_sending(
        self,
        client_id: str,
        ref: int,
        symbol: str,
        side: str,
        type_: str,
        amount: float,
        price: float | None,
        info: dict[str, Any],
    ) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO orders (client_id, session, ref, symbol, side, type, amount, price,"
                " state, info, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    client_id,
                    self.session,
                    ref,
                    symbol,
                    side,
                    type_,
                    amount,
                    price,
                    "sending",
                    json.dumps(info, default=str),
                    now,
                    now,
                ),
            )

    def update(
        self,
        client_id: str,
        state: str,
        *,
        exchange_id: str | None = None,
        filled: float | None = None,
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE orders SET state=?, exchange_id=COALESCE(?, exchange_id),"
                " filled=COALESCE(?, filled), updated=? WHERE client_id=?",
                (state, exchange_id, filled, time.time(), client_id),
            )

    def record_fill(
        self,
        trade_id: str,
        client_id: str,
        amount: float,
        price: float,
        fee: float,
        fee_currency: str | None,
        timestamp: int | None,
    ) -> bool:
        """Record a fill once; False if this trade id was already recorded."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO fills VALUES (?,?,?,?,?,?,?,?)",
                (trade_id, client_id, amount, price, fee, fee_currency, timestamp, time.time()),
            )
            return cur.rowcount == 1

    def has_fill(self, trade_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM fills WHERE trade_id=?", (trade_id,)).fetchone()
        return row is not None

    def unfinished(self) -> list[dict[str, Any]]:
        """Orders not in a final state, oldest first (from any session)."""
        with self._lock:
            cur = self._db.execute(_UNFINISHED, FINAL)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM orders ORDER BY created")
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def record_model_event(
        self,
        kind: str,
        *,
        bar: str,
        symbol: str,
        from_key: str | None,
        to_key: str | None,
        reason: str | None = None,
        mode: str = "live",
    ) -> None:
        """An audit row: the served model changed (``kind="switch"``) or a promoted version was
        refused (``"refused"``) at ``bar``, in a ``mode`` (``live`` or ``paper``) session."""
        recorded = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            self._db.execute(
                "INSERT INTO model_events (session, mode, kind, bar, symbol, from_key, to_key,"
                " reason, recorded) VALUES (?,?,?,?,?,?,?,?,?)",
                (self.session, mode, kind, bar, symbol, from_key, to_key, reason, recorded),
            )

    def model_events(self) -> list[dict[str, Any]]:
        """Every audit row, oldest first (from any session)."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM model_events ORDER BY id")
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def fills(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM fills ORDER BY recorded")
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
