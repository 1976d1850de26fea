"""The state a journal must never lose silently, checked when read and kept twice.

A live journal holds what makes a restart safe: a kill-switch trip, the day's starting value and
the order history. An emptied or deleted SQLite file would otherwise open as a new, empty
journal and the next session would trade as if nothing had happened. So every journal has a
sidecar **marker** beside it (``journal.sqlite.marker``, a small JSON file written atomically)
holding the journal's id, when it was created, and a second copy of the kill-switch trip and the
latest day's starting value. The marker outlives the journal being deleted or emptied, and
``Journal`` refuses to start a new journal where its marker says one existed, unless the user
says so (``new_journal=True``, ``atb live --new-journal``); the trip then carries over.

The values read back are checked here: a trip is an object with a ``time`` and a ``reason``; a
day's starting value is a positive finite number. Anything else is a damaged journal, refused
with one line (``JournalError``) rather than read as "no trip".
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atb_strategies.exceptions import JournalError

MARKER_SUFFIX = ".marker"
_FORMAT = 1


def marker_path(journal: Path) -> Path:
    """The marker file of ``journal`` (``journal.sqlite`` -> ``journal.sqlite.marker``)."""
    return journal.with_name(journal.name + MARKER_SUFFIX)


def check_trip(value: Any, where: str) -> dict[str, Any] | None:
    """A recorded kill-switch trip, checked: an object with ``time`` and ``reason`` strings.

    Raises
    ------
    JournalError
        ``where`` (e.g. "journal X: its kill_switch record") holds anything else, ``null``
        included: a record that exists but says nothing must not read as "not tripped".
    """
    if (
        isinstance(value, dict)
        and isinstance(value.get("time"), str)
        and isinstance(value.get("reason"), str)
    ):
        return value
    raise JournalError(
        f"{where} is {_shown(value)} where a kill-switch trip (an object with time and reason) "
        "is expected: the journal is damaged"
    )


def check_day_start(value: Any, where: str) -> float:
    """A day's starting portfolio value, checked: a positive finite number."""
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        return float(value)
    raise JournalError(
        f"{where} is {_shown(value)} where a positive portfolio value is expected: "
        "the journal is damaged"
    )


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class Marker:
    """What the marker of a journal keeps (see the module docstring)."""

    journal_id: str
    created: str
    kill_switch: dict[str, Any] | None = None
    day_start: dict[str, float] = field(default_factory=dict)


def read_marker(journal: Path) -> Marker | None:
    """The marker of ``journal``, or None when there is none.

    Raises
    ------
    JournalError
        The marker exists but cannot be read or is not one.
    """
    path = marker_path(journal)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise JournalError(f"the journal marker {path} cannot be read ({e})") from e
    what = f"the journal marker {path}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if (
        not isinstance(data, dict)
        or data.get("format") != _FORMAT
        or not isinstance(data.get("id"), str)
        or not isinstance(data.get("created"), str)
        or not isinstance(data.get("day_start", {}), dict)
    ):
        raise JournalError(
            f"{what} is damaged (not a marker this version writes). It keeps a copy of the "
            f"kill switch of {journal}: if that journal is intact, delete the marker and it is "
            "written again from the journal"
        )
    trip = data.get("kill_switch")
    return Marker(
        journal_id=data["id"],
        created=data["created"],
        kill_switch=None if trip is None else check_trip(trip, f"{what}: its kill_switch"),
        day_start={
            str(day): check_day_start(v, f"{what}: its day_start of {day}")
            for day, v in data.get("day_start", {}).items()
        },
    )


def write_marker(journal: Path, marker: Marker) -> None:
    """Write the marker of ``journal`` atomically (a crash leaves the old one or the new one).

    Raises
    ------
    JournalError
        It cannot be written (the journal would not be protected).
    """
    path = marker_path(journal)
    data = {
        "format": _FORMAT,
        "journal": journal.name,
        "id": marker.journal_id,
        "created": marker.created,
        "kill_switch": marker.kill_switch,
        "day_start": marker.day_start,
    }
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, default=str)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        raise JournalError(f"the journal marker {path} cannot be written ({e})") from e
