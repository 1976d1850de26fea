"""Registry management: version allocation, promote, rollback, prune.

Every operation on a type directory holds an exclusive lock on ``<type>/.lock`` (``fcntl``), so
two trainers or a trainer and ``atb models promote`` never interleave. Readers take no lock: they
only ever see complete version directories (renamed into place) and a ``latest`` pointer that is
switched atomically.

* ``.versions`` lists every version id ever issued for the type, so ``N`` in
  ``YYYY-MM-DD_<timeframe>_vN`` is unique and never reused, even after ``prune``.
* ``.latest-history`` lists every version ``latest`` has pointed to, oldest first; ``rollback``
  re-points ``latest`` at the previous one that still exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from atb_strategies.bundle.safeio import read_bytes, shown
from atb_strategies.exceptions import ModelNotFoundError, RegistryError
from atb_strategies.registry.layout import RegistryLayout, check_name

LEDGER = ".versions"
HISTORY = ".latest-history"
_N = re.compile(r"_v([0-9]{1,9})$")
log = logging.getLogger(__name__)


@contextlib.contextmanager
def type_lock(
    layout: RegistryLayout, symbol: str, model_type: str, *, create: bool = False
) -> Iterator[Path]:
    """Exclusive lock on a type directory; yields the directory.

    Only ``create=True`` (allocating a version) makes a missing directory; the other
    operations raise ``ModelNotFoundError`` for a symbol or type that does not exist.
    """
    tdir = layout.type_dir(symbol, model_type)
    if create:
        tdir.mkdir(parents=True, exist_ok=True)
    elif not layout.root.is_dir():
        raise ModelNotFoundError(
            f"The registry folder {layout.root} does not exist (or is not a folder). Check the "
            "registry path (--registry, model_registry_path, ATB_MODEL_REGISTRY_PATH)."
        )
    elif not tdir.is_dir():
        raise ModelNotFoundError(
            f"No {symbol}/{model_type} in registry {layout.root}; symbols present: "
            f"{', '.join(layout.symbols()) or 'none'}."
        )
    with open(tdir / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield tdir
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_lines(path: Path) -> list[str]:
    """Lines of a ledger file (regular, inside its type folder, size-capped); none if absent."""
    if not os.path.lexists(path):
        return []
    text = read_bytes(path, path.parent, "ledger").decode("utf-8", errors="replace")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def allocate_version(
    layout: RegistryLayout,
    symbol: str,
    model_type: str,
    timeframe: str,
    *,
    today: dt.date | None = None,
) -> str:
    """Issue a new, never-used version id ``YYYY-MM-DD_<timeframe>_vN`` (N = max issued + 1)."""
    check_name(timeframe, "timeframe")
    day = (today or dt.datetime.now(dt.UTC).date()).isoformat()
    with type_lock(layout, symbol, model_type, create=True) as tdir:
        issued = _read_lines(tdir / LEDGER) + layout.versions(symbol, model_type)
        numbers = [int(m.group(1)) for v in issued if (m := _N.search(v))]
        version = f"{day}_{timeframe}_v{max(numbers, default=0) + 1}"
        _append(tdir / LEDGER, version)
    return version


def latest_status(
    layout: RegistryLayout, symbol: str, model_type: str
) -> tuple[str | None, str | None]:
    """``(version latest names, problem)``: the version (None when unusable or absent) and why
    there is none to use (None when it is fine): no pointer, or a dangling, escaping or
    malformed one."""
    try:
        version = layout.read_latest(symbol, model_type)
    except RegistryError as e:
        return None, str(e)
    if version is None:
        return None, (
            f"{symbol}/{model_type} has no 'latest' pointer; readers must name a version. "
            f"Set one with `atb models promote {symbol} {model_type} VERSION`."
        )
    return version, None


def latest_problems(layout: RegistryLayout) -> list[tuple[str, str, str]]:
    """``(symbol, model_type, problem)`` for every type whose ``latest`` pointer exists but is
    unusable (dangling, escaping, malformed); a type without a pointer is no problem."""
    found = []
    for symbol in layout.symbols():
        for model_type in layout.model_types(symbol):
            pointer = layout.type_dir(symbol, model_type) / "latest"
            if not (pointer.is_symlink() or pointer.exists()):
                continue
            _, problem = latest_status(layout, symbol, model_type)
            if problem is not None:
                found.append((symbol, model_type, problem))
    return found


def promote(layout: RegistryLayout, symbol: str, model_type: str, version: str) -> str | None:
    """Point ``latest`` at ``version``; returns the previous latest (or None).

    A dangling or escaping pointer is replaced (that is how it is repaired); the caller
    validates ``version`` first.
    """
    with type_lock(layout, symbol, model_type) as tdir:
        if version not in layout.versions(symbol, model_type):
            raise ModelNotFoundError(
                f"{symbol}/{model_type} has no version {shown(version)}; versions: "
                f"{', '.join(layout.versions(symbol, model_type)) or 'none'}."
            )
        previous, problem = latest_status(layout, symbol, model_type)
        pointer = tdir / "latest"
        if problem is not None and (pointer.is_symlink() or pointer.exists()):
            log.warning("replacing an unusable pointer: %s", problem)
        history = tdir / HISTORY
        if previous is not None and not _read_lines(history):
            _append(history, previous)
        layout.write_latest(symbol, model_type, version)
        _append(history, version)
        return previous


def rollback(layout: RegistryLayout, symbol: str, model_type: str) -> str:
    """Re-point ``latest`` at the version it pointed to before; returns that version."""
    with type_lock(layout, symbol, model_type) as tdir:
        current = layout.read_latest(symbol, model_type)
        history = _read_lines(tdir / HISTORY)
        existing = set(layout.versions(symbol, model_type))
        while history and history[-1] == current:
            history.pop()
        while history and history[-1] not in existing:
            history.pop()
        if not history:
            raise RegistryError(
                f"{symbol}/{model_type}: no earlier 'latest' to roll back to (current: "
                f"{current}). Use `atb models promote {symbol} {model_type} VERSION`."
            )
        target = history[-1]
        layout.write_latest(symbol, model_type, target)
        (tdir / HISTORY).write_text("".join(v + "\n" for v in history), encoding="utf-8")
        return target


def prune(layout: RegistryLayout, symbol: str, model_type: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` versions, never the one ``latest`` names.

    A version is renamed to a hidden ``.deleted-*`` name first (atomic for readers), then
    removed. Returns the removed versions.
    """
    if keep < 1:
        raise RegistryError(f"--keep must be at least 1. Got {keep!r} instead.")
    with type_lock(layout, symbol, model_type) as tdir:
        versions = layout.versions(symbol, model_type)
        latest = layout.read_latest(symbol, model_type)
        keep_set = set(versions[-keep:]) | ({latest} if latest else set())
        removed = []
        for version in versions:
            if version in keep_set:
                continue
            hidden = tdir / f".deleted-{version}"
            os.rename(tdir / version, hidden)
            shutil.rmtree(hidden)
            removed.append(version)
        return removed
