"""Read the files of a bundle without trusting them: regular files only, inside their folder,
under a size cap per kind of file.

A bundle directory is input from outside: a file in it may be a FIFO (reading it blocks
forever), a symlink to ``/dev/zero`` (reading never ends) or to a file outside the registry
(served without anyone noticing). Every bundle file is therefore

* resolved (symlinks followed) and refused unless it stays inside ``folder``, its version
  directory;
* opened without blocking and refused unless ``fstat`` says it is a regular file;
* refused when larger than the cap of its kind (``MAX_BYTES``), before anything is read.

Every problem, including an ``OSError`` of the file system (a symlink loop, a name too long,
no permission), raises ``BundleError`` naming the file, so that one broken version is reported
as invalid and the others keep working.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from atb_strategies.exceptions import BundleError, shown

MIB = 1 << 20
#: Size caps per kind of bundle file, in bytes (``docs/bundle-format.md``).
MAX_BYTES: dict[str, int] = {
    "json": 16 * MIB,  # metadata.json, feature_schema.json, metrics.json
    "model": 1024 * MIB,  # model.onnx (ONNX protobufs stop at 2 GiB)
    "certificate": 64 * MIB,  # parity_certificate.npz
    "pointer": 4096,  # a ``latest`` file holding a version name
    "ledger": 16 * MIB,  # a type folder's .versions and .latest-history
}
_KINDS = {"json": "a JSON file", "model": "a model", "certificate": "a parity certificate"}


def plain(text: str, limit: int = 120) -> str:
    """``text`` itself when it is short and printable, else ``shown(text, limit)``."""
    return text if len(text) <= limit and text.isprintable() else shown(text, limit)


def check_inside(path: Path, folder: Path) -> Path:
    """``path`` resolved; ``BundleError`` when it leaves ``folder`` or cannot be resolved."""
    try:
        real = path.resolve()
        root = folder.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: symlink loop (Python 3.11)
        raise BundleError(f"{path} cannot be resolved: {e}.", path=path) from e
    if not real.is_relative_to(root):
        raise BundleError(
            f"{path} resolves to {real}, outside its version folder {root}; a bundle may only "
            "name files inside its own folder. Replace the link with the file itself.",
            path=path,
        )
    return real


def _open(path: Path, folder: Path, kind: str) -> tuple[int, int]:
    """Open a checked regular file; returns ``(fd, size)``."""
    real = check_inside(path, folder)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the resolved path
        # must not have become a symlink in the meantime
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise BundleError(f"{path} is missing.", path=path) from e
    except OSError as e:
        raise BundleError(f"{path} cannot be read: {e.strerror or e}.", path=path) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(
                f"{path} is not a regular file ({_file_type(st.st_mode)}); bundle files must be "
                "regular files. Replace it with the real file or retrain the bundle.",
                path=path,
            )
        limit = MAX_BYTES[kind]
        if st.st_size > limit:
            raise BundleError(
                f"{path} is {st.st_size:,} bytes, more than the {limit:,} allowed for "
                f"{_KINDS.get(kind, 'this file')}; it is not a file this project wrote. "
                "Restore it or retrain the bundle.",
                path=path,
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def read_bytes(path: Path, folder: Path, kind: str) -> bytes:
    """The bytes of a bundle file of ``kind`` (a key of ``MAX_BYTES``), checked as above."""
    fd, _ = _open(path, folder, kind)
    limit = MAX_BYTES[kind]
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = os.read(fd, min(MIB, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise BundleError(
                    f"{path} grew past the {limit:,} bytes allowed while it was read.", path=path
                )
    except OSError as e:
        raise BundleError(f"{path} cannot be read: {e.strerror or e}.", path=path) from e
    finally:
        os.close(fd)
    return b"".join(chunks)


def check_file(path: Path, folder: Path, kind: str) -> int:
    """Check a bundle file without reading it (for files opened by another library); its size."""
    fd, size = _open(path, folder, kind)
    os.close(fd)
    return size


def sha256_file(path: Path, folder: Path, kind: str = "model") -> str:
    """Hex sha256 of a checked bundle file, read in 1 MiB chunks."""
    fd, _ = _open(path, folder, kind)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "rb", closefd=True) as fh:
            for chunk in iter(lambda: fh.read(MIB), b""):
                h.update(chunk)
    except OSError as e:
        raise BundleError(f"{path} cannot be read: {e.strerror or e}.", path=path) from e
    return h.hexdigest()
