"""A sweep's files: one JSON per finished cell, written atomically, and ``results.csv``.

``<out>/cells/<hash>.json`` is written to a temporary file in the same folder and renamed
into place, so an interrupted sweep (Ctrl-C, a crash, a full disk) leaves only whole cells,
and ``--resume`` can trust every file it finds.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from atb_strategies.sweep.cells import json_default


def write_json_atomic(path: Path, value: Any, indent: int | None = None) -> Path:
    """Write ``value`` as JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("x") as fh:  # the umask's permissions, unlike mkstemp's 0600
            json.dump(value, fh, indent=indent, default=json_default)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class CellStore:
    """The finished cells of a sweep under ``<out>/cells``.

    Parameters
    ----------
    out : Path
        The sweep's output folder.
    """

    def __init__(self, out: Path | str) -> None:
        self.out = Path(out)
        self.cells = self.out / "cells"

    def path(self, cell_hash: str) -> Path:
        """Where the cell named ``cell_hash`` is stored."""
        return self.cells / f"{cell_hash}.json"

    def write(self, record: dict[str, Any]) -> Path:
        """Store a cell's record (atomically) under its ``cell`` hash."""
        return write_json_atomic(self.path(record["cell"]), record)

    def read(self, cell_hash: str) -> dict[str, Any] | None:
        """The stored record, or None when missing or unreadable (then it runs again)."""
        try:
            record = json.loads(self.path(cell_hash).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("cell") == cell_hash else None

    def finished(self, cell_hash: str) -> dict[str, Any] | None:
        """The stored record when the cell finished without an error, else None."""
        record = self.read(cell_hash)
        return record if record is not None and record.get("error") is None else None


def write_results(frame: pd.DataFrame, out: Path | str) -> Path:
    """``<out>/results.csv`` (through a temporary file and a rename)."""
    path = Path(out) / "results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
