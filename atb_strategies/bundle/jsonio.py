"""JSON for bundles: read leniently, write strictly.

Real bundles from the reference project hold ``Infinity`` (not JSON); the standard library
parser accepts ``Infinity``, ``-Infinity`` and ``NaN``, so reading is lenient. Writing refuses
any non-finite float, naming where it sits, so every file this project writes is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from atb_strategies.bundle.safeio import read_bytes
from atb_strategies.exceptions import BundleError

#: Deepest nesting of objects and lists a bundle JSON file may have.
MAX_DEPTH = 32


def read_json(path: Path, folder: Path | None = None) -> dict[str, Any]:
    """Read a JSON object from ``path``; ``Infinity``/``NaN`` are accepted.

    The file must be a regular file inside ``folder`` (default: the folder holding it) of at
    most ``MAX_BYTES["json"]`` bytes, nested at most ``MAX_DEPTH`` deep (``bundle.safeio``).

    Raises
    ------
    BundleError
        If the file is missing, unreadable, not a regular file, too large, not JSON, nested too
        deep, or not an object.
    """
    raw = read_bytes(path, path.parent if folder is None else folder, "json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"{path} cannot be read: {e}.", path=path) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BundleError(
            f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
            "Repair the file or retrain the bundle.",
            path=path,
        ) from e
    except RecursionError as e:
        raise _too_deep(path) from e
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise BundleError(f"{path} is not usable JSON: {e}.", path=path) from e
    if not isinstance(data, dict):
        raise BundleError(
            f"{path} must hold a JSON object; got {type(data).__name__} instead.", path=path
        )
    if _depth(data) > MAX_DEPTH:
        raise _too_deep(path)
    return data


def _too_deep(path: Path) -> BundleError:
    return BundleError(
        f"{path} nests objects or lists more than {MAX_DEPTH} levels deep; bundle files are "
        "shallow. Repair the file or retrain the bundle.",
        path=path,
    )


def _depth(data: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return deepest


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"Cannot write non-finite number {value!r} at {where}: bundles are strict JSON. "
            "Replace it with null or a finite value."
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")


def dumps_strict(data: dict[str, Any]) -> str:
    """Serialise ``data`` as strict, indented JSON; raise ``ValueError`` on NaN/inf."""
    _check_finite(data, "$")
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as strict JSON, atomically (temp file, fsync, rename)."""
    text = dumps_strict(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
