"""Bundles as data: version directories packed into bytes and unpacked elsewhere.

Distributed tasks run on machines that share no file system with the driver, so a bundle
travels as ``{relative path: bytes}`` (pickled into Ray's object store once per run), never as
a path of the driver's:

* ``pack_versions(root, keys)``: the files of some versions of a registry,
  ``{"<SYMBOL>/<TYPE>/<VERSION>/<file>": bytes}``;
* ``unpack(files, root)``: those files written under ``root`` (a private temporary directory of
  the worker), which is then a registry holding just those versions;
* ``materialised(files)``: ``unpack`` into a per-process temporary registry, once per content
  (a worker running many tasks writes each snapshot once), removed when the process exits;
* ``read_bundle_files(path)``: the regular files of one version directory, ``{name: bytes}``
  (what a worker sends back after training; ``writer.register_bundle_files`` registers them).
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from atb_strategies.exceptions import RegistryError
from atb_strategies.registry.layout import RegistryLayout, check_name

#: A version directory holds a few files; more, or a bigger one, is no bundle to ship.
MAX_FILES = 64
MAX_FILE_BYTES = 512 * 1024 * 1024

_lock = threading.Lock()
_materialised: dict[str, Path] = {}


def read_bundle_files(path: Path | str) -> dict[str, bytes]:
    """The regular files directly inside the version directory ``path`` (no links, no
    sub-directories, no hidden files), by name."""
    path = Path(path)
    files: dict[str, bytes] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_file():
            continue
        if len(files) >= MAX_FILES or entry.stat().st_size > MAX_FILE_BYTES:
            raise RegistryError(
                f"{path} holds more files, or bigger ones, than a bundle does "
                f"(at most {MAX_FILES} files of {MAX_FILE_BYTES:,} bytes); it cannot be shipped."
            )
        files[entry.name] = entry.read_bytes()
    return files


def pack_versions(root: Path | str, keys: Iterable[tuple[str, str, str]]) -> dict[str, bytes]:
    """The files of the versions ``keys`` (``(symbol, model_type, version)``) of the registry at
    ``root``, as ``{"<SYMBOL>/<TYPE>/<VERSION>/<file>": bytes}``."""
    layout = RegistryLayout(root)
    out: dict[str, bytes] = {}
    for symbol, model_type, version in dict.fromkeys(keys):
        vdir = layout.version_dir(symbol, model_type, version)
        for name, data in read_bundle_files(vdir).items():
            out[f"{symbol}/{model_type}/{version}/{name}"] = data
    return out


def _parts(rel: str) -> tuple[str, str, str, str]:
    parts = PurePosixPath(rel).parts
    if len(parts) != 4 or parts[3].startswith(".") or parts[3] in ("", "..", "."):
        raise RegistryError(f"Shipped bundle file {rel!r} is not <SYMBOL>/<TYPE>/<VERSION>/<file>.")
    symbol, model_type, version, name = parts
    check_name(symbol, "symbol")
    check_name(model_type, "model type")
    check_name(version, "version")
    return symbol, model_type, version, name


def unpack(files: Mapping[str, bytes], root: Path | str) -> Path:
    """Write ``pack_versions`` output under ``root`` (created); returns ``root``."""
    root = Path(root)
    layout = RegistryLayout(root)
    for rel, data in files.items():
        symbol, model_type, version, name = _parts(rel)
        vdir = layout.version_dir(symbol, model_type, version)
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir / name).write_bytes(data)
    return root


def files_digest(files: Mapping[str, bytes]) -> str:
    """sha256 of the names and contents of ``files`` (identifies a snapshot)."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return digest.hexdigest()


def materialised(files: Mapping[str, bytes]) -> Path:
    """A private temporary registry holding ``files``, written once per process and content;
    removed when the process exits."""
    key = files_digest(files)
    with _lock:
        found = _materialised.get(key)
        if found is not None and found.is_dir():
            return found
        root = Path(tempfile.mkdtemp(prefix="atb-registry-"))
        atexit.register(shutil.rmtree, root, True)
        unpack(files, root)
        _materialised[key] = root
        return root
