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

A journal is never silently replaced by a new one: its marker (``journal_state``) remembers that
it existed, with a second copy of the kill-switch trip and the day's starting value, so a
journal that was deleted or emptied is refused until the user starts a new one on purpose
(``new_journal=True``; a recorded trip carries over). A damaged journal (not SQLite, a missing
table column, a kill-switch or day-start record that is not one) is refused with one line
(``JournalError``) naming the file and the problem.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from atb_strategies.exceptions import JournalError, KillSwitchError
from atb_strategies.live.journal_state import (
    Marker,
    check_day_start,
    check_trip,
    marker_path,
    read_marker,
    write_marker,
)

log = logging.getLogger(__name__)

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


#: Columns every journal table must have (a table missing one is not an atb journal).
_COLUMNS = {
    "meta": {"key", "value"},
    "orders": {"client_id", "session", "ref", "symbol", "side", "type", "amount", "price"}
    | {"exchange_id", "state", "filled", "info", "created", "updated"},
    "fills": {"trade_id", "client_id", "amount", "price", "fee", "fee_currency", "timestamp"}
    | {"recorded"},
    "model_events": {"id", "session", "mode", "kind", "bar", "symbol", "from_key", "to_key"}
    | {"reason", "recorded"},
}
_TRIP, _DAY = "kill_switch", "day_start:"
_NEW = "move it away and start a new journal with new_journal=True"
_RESTORE = f"restore it from a backup, or {_NEW}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Journal:
    """Orders and fills of one account, in ``path`` (SQLite, WAL mode).

    Parameters
    ----------
    path : Path or str
        The journal file (created with its marker ``<path>.marker`` when neither exists).
    new_journal : bool
        Start a new journal where the marker says one was deleted or emptied (a trip and the
        day's starting value recorded in the marker carry over). Refused when the journal
        exists: move it away first (nothing is overwritten).

    Raises
    ------
    JournalError
        The journal was deleted or emptied (and ``new_journal`` is not set), or it or its
        marker is damaged.
    """

    def __init__(self, path: Path | str, *, new_journal: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        marker = read_marker(self.path)
        existed = self.path.exists() and self.path.stat().st_size > 0
        if existed and new_journal:
            raise JournalError(
                f"journal {self.path} exists, and new_journal=True only starts a journal where "
                "one was deleted or emptied: to start over, move it away (keep it: it is the "
                "order history) and run again"
            )
        if marker is not None and not existed and not new_journal:
            raise JournalError(_lost(self.path, marker))
        wal = self.path.with_name(self.path.name + "-wal")
        if not existed and wal.exists() and wal.stat().st_size > 0:
            # SQLite would replay the old journal's log into the new file
            raise JournalError(
                f"journal {self.path} is gone but its write-ahead log {wal} remains: move it "
                "(and the -shm file) away too, keeping them, before a new journal starts here"
            )
        self._lock = threading.Lock()
        self.session = uuid.uuid4().hex[:8]
        try:
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as e:
            raise JournalError(f"journal {self.path} cannot be opened ({e})") from e
        try:
            self._open(marker, existed)
        except BaseException:
            self._db.close()
            raise

    def _open(self, marker: Marker | None, existed: bool) -> None:
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._check_tables()  # before adding any: a foreign database is left as it was
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise JournalError(
                f"journal {self.path} is not a readable SQLite journal ({e}): {_RESTORE}"
            ) from e
        values = self._meta()
        journal_id = values.get("journal_id")
        if existed and marker is not None and journal_id != marker.journal_id:
            raise JournalError(
                f"journal {self.path} is not the journal its marker {marker_path(self.path)} "
                f"describes (created {marker.created}): the file was replaced. Put the right "
                f"journal back, or {_NEW}"
            )
        if journal_id is None:  # a new journal (or one written before markers existed)
            self._put("journal_id", uuid.uuid4().hex)
            self._put("created", _now())
            if marker is not None:  # new_journal=True: what the marker kept carries over
                if marker.kill_switch is not None:
                    self._put(_TRIP, marker.kill_switch)
                for day, value in marker.day_start.items():
                    self._put(_DAY + day, value)
                log.warning(
                    "journal %s was deleted or emptied; a new one is started (new_journal=True)%s",
                    self.path,
                    "; the recorded kill-switch trip carries over" if marker.kill_switch else "",
                )
            values = self._meta()
        elif marker is None and existed:
            log.warning("journal %s had no marker; it is written again", self.path)
        self.journal_id = str(values["journal_id"])
        days = {k[len(_DAY) :]: v for k, v in values.items() if k.startswith(_DAY)}
        latest = max(days, default=None)
        self._marker = Marker(
            journal_id=self.journal_id,
            created=str(values.get("created") or _now()),
            # the journal's trip, else the marker's copy (a journal restored from a backup
            # older than the trip is still tripped)
            kill_switch=values.get(_TRIP) or (marker.kill_switch if marker else None),
            day_start={} if latest is None else {latest: days[latest]},
        )
        if marker is not None and marker.day_start:  # a restored journal may lag its marker
            day = max(marker.day_start)
            if latest is None or day > latest:
                self._marker.day_start = {day: marker.day_start[day]}
        write_marker(self.path, self._marker)

    def _meta(self) -> dict[str, Any]:
        """Every meta record, decoded and checked."""
        try:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError as e:
            raise JournalError(
                f"journal {self.path} is not a readable SQLite journal ({e}): {_RESTORE}"
            ) from e
        return {key: self._decode(key, raw) for key, raw in rows}

    def _check_tables(self) -> None:
        """Every journal table that exists has the journal's columns."""
        for table, needed in _COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            missing = sorted(needed - have)
            if have and missing:
                raise JournalError(
                    f"journal {self.path}: table {table} lacks column(s) {', '.join(missing)}; "
                    f"it is not an atb journal: {_RESTORE}"
                )

    def _decode(self, key: str, raw: Any) -> Any:
        """A meta value, decoded and checked (kill switch, day start, ids)."""
        where = f"journal {self.path}: its {key} record"
        try:
            value = json.loads(raw)
        except (TypeError, json.JSONDecodeError):
            raise JournalError(f"{where} is not JSON ({str(raw)[:40]!r}): {_RESTORE}") from None
        try:
            if key == _TRIP:
                return check_trip(value, where)
            if key.startswith(_DAY):
                return check_day_start(value, where)
        except JournalError as e:
            raise JournalError(f"{e}; {_RESTORE}") from None
        if key in ("journal_id", "created") and not isinstance(value, str):
            raise JournalError(f"{where} is not a string: {_RESTORE}")
        return value

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ session state

    def _put(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value))
        )

    def _get(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return self._decode(key, row[0]) if row else None

    def _set(self, key: str, value: Any) -> None:
        with self._lock:
            if value is None:
                self._db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self._put(key, value)

    def _save_marker(self) -> None:
        try:
            write_marker(self.path, self._marker)
        except JournalError as e:  # the journal itself holds the state: say so, go on
            log.error("%s; the journal %s still holds it", e, self.path)

    def record_kill_switch(self, reason: str, **values: Any) -> None:
        """Record that the kill switch tripped (time, reason, values), in the journal and its
        marker; it stays tripped for every later session on this journal (or a new journal
        started in its place) until ``clear_kill_switch``."""
        trip = {"time": _now(), "reason": reason, "session": self.session, **values}
        self._set(_TRIP, trip)
        self._marker.kill_switch = json.loads(json.dumps(trip, default=str))
        self._save_marker()

    def kill_switch(self) -> dict[str, Any] | None:
        """The recorded trip, or None: the journal's, else the copy in the marker (a journal
        put back from a copy older than the trip is still tripped)."""
        return self._get(_TRIP) or self._marker.kill_switch

    def clear_kill_switch(self) -> dict[str, Any] | None:
        """Forget the recorded trip, in the journal and its marker (the user's explicit
        decision); returns it."""
        trip = self.kill_switch()
        self._set(_TRIP, None)
        self._marker.kill_switch = None
        self._save_marker()
        return trip

    def day_start_value(self, day: str, value: float) -> float:
        """The portfolio value at the first check of UTC ``day`` (``value`` when this is the
        first), kept across restarts (in the journal and its marker) so a restart does not
        reset the daily-loss limit."""
        key = _DAY + day
        known = self._get(key)
        if known is None:
            known = self._marker.day_start.get(day)
            if known is None:
                known = float(value)
            self._set(key, known)
            self._marker.day_start = {day: known}  # the marker keeps the latest day only
            self._save_marker()
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


def check_journal(journal: Path, *, new_journal: bool = False) -> dict[str, Any] | None:
    """Before a session: open ``journal`` once, so that a damaged journal, or one that was
    deleted or emptied, is refused before anything connects (``Journal`` says why and what to
    do); with ``new_journal`` a new journal is started there on purpose. Where there is neither
    a journal nor a marker, nothing is checked or created (the session creates it).

    Returns
    -------
    dict or None
        The recorded kill-switch trip, if any.

    Raises
    ------
    JournalError
        Naming the journal and the problem.
    """
    journal = Path(journal)
    if not new_journal and not journal.exists() and not marker_path(journal).exists():
        return None
    book = Journal(journal, new_journal=new_journal)
    try:
        return book.kill_switch()
    finally:
        book.close()


def refuse_if_killed(journal: Path, clear: bool, *, new_journal: bool = False) -> None:
    """Before a real-orders session: refuse a damaged, deleted or emptied journal
    (:func:`check_journal`), and refuse to start while the journal records a kill-switch trip,
    unless the user clears it (``clear``; the broker then clears it at start).

    Raises
    ------
    JournalError
        The journal cannot be trusted (see :func:`check_journal`).
    KillSwitchError
        Naming when and why it tripped and how to clear it.
    """
    trip = check_journal(journal, new_journal=new_journal)
    if trip is not None and not clear:
        raise KillSwitchError(
            f"the kill switch tripped at {trip['time']} ({trip['reason']}) and is recorded in "
            f"{journal}; no orders are sent until you clear it: run again with "
            "clear_kill_switch=True after checking the account."
        )


def _lost(path: Path, marker: Marker) -> str:
    """The refusal for a journal that its marker says existed but is gone or empty."""
    state = "was emptied" if path.exists() else "was deleted"
    trip = marker.kill_switch
    tripped = (
        f" and recorded a kill-switch trip at {trip['time']} ({trip['reason']})" if trip else ""
    )
    carry = (
        " (the trip carries over: clear it with clear_kill_switch=True after checking the account)"
        if trip
        else ""
    )
    return (
        f"journal {path} {state}: its marker {marker_path(path)} says it has existed since "
        f"{marker.created}{tripped}. A new journal is not started silently (the order history, "
        "the kill switch and the day's starting value would be forgotten): put the journal back "
        f"from a backup, or start a new one on purpose with new_journal=True{carry}"
    )
