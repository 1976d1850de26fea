"""The registry's layout on disk: ``<root>/<SYMBOL>/<TYPE>/<VERSION>/`` plus a ``latest`` pointer.

``latest`` is read in either form:

* a relative symlink ``latest -> <VERSION>`` (what this package writes where the platform
  allows symlinks), or
* a plain file ``latest`` holding the version name (written where ``os.symlink`` fails, e.g.
  Windows without the privilege; also how copies of the reference bundles arrive).

Every path is resolved and refused if it leaves the registry root, and a pointer must name a
sibling version directory. Switching ``latest`` is atomic: a new link (or file) is created
under a temporary name, then renamed over the old one, so a reader sees the old or the new
version, never neither.

Reading ``latest`` is cheap when it has not moved: a layout remembers what it read with the
pointer's ``lstat`` (device, inode, size, mtime, ctime) and its target directory's ``stat``,
and re-reads (and re-checks) only when one of them differs. A promotion replaces the pointer
(a new inode), so a reader sees it on its next call; a pointer modified less than
``RACY_SECONDS`` before it was read is not remembered, since a rewrite in place within one tick
of the file system's clock could leave all of its ``stat`` fields unchanged.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from atb_strategies.bundle.safeio import plain, read_bytes, shown
from atb_strategies.exceptions import BundleError, RegistryError

LATEST = "latest"
#: A ``latest`` pointer changed this recently (seconds) is re-read on every call.
RACY_SECONDS = 2.0
#: Longest symbol, type or version name (well below the file systems' 255 bytes).
MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(value: str, what: str) -> str:
    """Refuse symbol/type/version names that could escape a directory (or are too long)."""
    if (
        not isinstance(value, str)
        or len(value) > MAX_NAME
        or not _NAME.fullmatch(value)
        or (value == LATEST and what == "version")
    ):
        raise RegistryError(
            f"The {what} {shown(value)} is not a valid registry name: use letters, digits, '.', "
            f"'_' and '-' only, not starting with '.' or '-', at most {MAX_NAME} characters."
        )
    return value


@dataclass(frozen=True)
class VersionDir:
    """One version directory found on disk."""

    symbol: str
    model_type: str
    version: str
    path: Path
    #: Why the entry is not a usable directory (a dangling or looping symlink, a bad name).
    error: str | None = None


class RegistryLayout:
    """Paths, discovery and the ``latest`` pointer of a registry rooted at ``root``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        # (symbol, type) -> (stat fingerprint, version named, pointer path, target path)
        self._latest: dict[tuple[str, str], tuple[tuple[int, ...], str, str, str]] = {}

    @property
    def resolved_root(self) -> Path:
        return self.root.resolve()

    def type_dir(self, symbol: str, model_type: str) -> Path:
        return self.root / check_name(symbol, "symbol") / check_name(model_type, "model type")

    def version_dir(self, symbol: str, model_type: str, version: str) -> Path:
        path = self.type_dir(symbol, model_type) / check_name(version, "version")
        self._check_inside(path)
        return path

    def _check_inside(self, path: Path) -> None:
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python 3.11)
            raise RegistryError(
                f"{path} cannot be resolved: {e}. Remove or repair the link."
            ) from e
        if not real.is_relative_to(self.resolved_root):
            raise RegistryError(
                f"{path} resolves to {real}, outside the registry root {self.resolved_root}; "
                "refusing to load it. Remove the link or move the bundle into the registry."
            )

    # ---------------------------------------------------------------- discovery

    def symbols(self) -> list[str]:
        return self._subdirs(self.root)

    def model_types(self, symbol: str) -> list[str]:
        return self._subdirs(self.root / symbol)

    def versions(self, symbol: str, model_type: str) -> list[str]:
        """Version directories of one type, oldest name first (names sort by date)."""
        return [v for v in self._subdirs(self.type_dir(symbol, model_type)) if v != LATEST]

    def walk(self) -> list[VersionDir]:
        """Every version directory under the root, without opening any model.

        Entries of a type directory that should be versions but are not usable (a symlink that
        dangles or loops, a name that is not a registry name) are listed too, with ``error``
        saying why, so that they show as invalid instead of vanishing.
        """
        found = []
        for symbol in self.symbols():
            for model_type in self.model_types(symbol):
                tdir = self.root / symbol / model_type
                names = self.versions(symbol, model_type)
                broken = self._broken_entries(tdir)
                for version in sorted([*names, *broken], key=_version_sort_key):
                    found.append(
                        VersionDir(symbol, model_type, version, tdir / version, broken.get(version))
                    )
        return found

    @staticmethod
    def _broken_entries(tdir: Path) -> dict[str, str]:
        """Entries of ``tdir`` that look like versions but cannot be used, with the reason."""
        broken = {}
        for e in _scandir(tdir):
            if e.name.startswith((".", "_")) or e.name == LATEST:
                continue
            try:
                usable = e.is_dir()
                check_name(e.name, "version")
            except OSError as err:
                broken[e.name] = (
                    f"{tdir}/{plain(e.name)} cannot be used: {err.strerror or err}. Remove or "
                    "repair the link."
                )
                continue
            except RegistryError as err:
                if usable:
                    broken[e.name] = f"In {tdir}: {err}"
                continue
            if not usable and e.is_symlink():
                broken[e.name] = (
                    f"{tdir / e.name} is a symlink to {shown(os.readlink(e.path))}, which is not "
                    "a directory. Remove the link or restore the version."
                )
        return broken

    @staticmethod
    def _subdirs(path: Path) -> list[str]:
        names = []
        for e in _scandir(path):
            if e.name.startswith((".", "_")) or e.name == LATEST:
                continue
            try:
                if e.is_dir() and _NAME.fullmatch(e.name) and len(e.name) <= MAX_NAME:
                    names.append(e.name)
            except OSError:  # a symlink loop: listed by ``walk`` as a broken version
                continue
        return sorted(names, key=_version_sort_key)

    # ---------------------------------------------------------------- latest pointer

    def read_latest(self, symbol: str, model_type: str) -> str | None:
        """The version ``latest`` names, or None when there is no pointer.

        Raises ``RegistryError`` when the pointer leaves the type directory or names nothing.
        While neither the pointer nor its target directory changes on disk (same ``stat``), the
        name read before is returned after two ``stat`` calls (see the module docstring).
        """
        key = (symbol, model_type)
        known = self._latest.get(key)
        if known is not None:
            # names checked when remembered; paths kept as strings: two stat calls, no Path work
            fingerprint, name, pointer_path, target_path = known
            if _fingerprint(pointer_path, target_path) == fingerprint:
                return name
            self._latest.pop(key, None)
        tdir = self.type_dir(symbol, model_type)
        pointer = tdir / LATEST
        before = _fingerprint(str(pointer), None)
        name = self._read_latest(symbol, model_type, tdir, pointer)
        if name is not None and before is not None:
            target = str(tdir / name)
            after = _fingerprint(str(pointer), target)
            settled = time.time_ns() - int(RACY_SECONDS * 1e9)
            # the pointer did not change while it was read, nor within the racy window
            if after is not None and after[:5] == before and max(before[3:5]) < settled:
                self._latest[key] = (after, name, str(pointer), target)
        return name

    def _read_latest(self, symbol: str, model_type: str, tdir: Path, pointer: Path) -> str | None:
        if pointer.is_symlink():
            target = os.readlink(pointer)
            name = Path(target).name
            if Path(target).is_absolute() or Path(target).parent not in (Path("."), Path("")):
                try:
                    resolved = (tdir / target).resolve()
                except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
                    raise RegistryError(f"{pointer} cannot be resolved: {e}.") from e
                if resolved.parent != tdir.resolve():
                    raise RegistryError(
                        f"{pointer} points to {shown(target)}, which is not a version directory "
                        f"beside it (resolves to {resolved}); refusing it. Re-point it with "
                        f"`atb models promote {symbol} {model_type} VERSION`."
                    )
                name = resolved.name
        elif pointer.exists():
            try:
                raw = read_bytes(pointer, tdir, "pointer")
            except BundleError as e:
                raise RegistryError(
                    f"{pointer} is neither a symlink nor a file holding a version name ({e}) "
                    f"Re-point it with `atb models promote {symbol} {model_type} VERSION`."
                ) from e
            name = raw.decode("utf-8", errors="replace").strip()
        else:
            return None
        try:
            check_name(name, "version")
        except RegistryError as e:
            raise RegistryError(f"{pointer} names a bad version: {e}") from e
        target_dir = tdir / name
        self._check_inside(target_dir)
        if not _is_dir(target_dir):
            raise RegistryError(
                f"{pointer} names version {name!r}, but {target_dir} does not exist. "
                f"Re-point it with `atb models promote {symbol} {model_type} VERSION`."
            )
        return name

    def write_latest(self, symbol: str, model_type: str, version: str) -> str:
        """Point ``latest`` at ``version`` atomically; returns ``"symlink"`` or ``"file"``."""
        tdir = self.type_dir(symbol, model_type)
        if not (tdir / check_name(version, "version")).is_dir():
            raise RegistryError(f"Cannot point latest at {version!r}: {tdir / version} is missing.")
        tmp = tdir / f".{LATEST}.{uuid.uuid4().hex}"
        try:
            os.symlink(version, tmp, target_is_directory=True)
            kind = "symlink"
        except (OSError, NotImplementedError):
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(version + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            kind = "file"
        try:
            os.replace(tmp, tdir / LATEST)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RegistryError(
                f"Could not switch {tdir / LATEST} to {version!r}: {e}. If 'latest' is a real "
                "directory, move it away; it must be a symlink or a file naming a version."
            ) from e
        return kind


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    """Entries of ``path``; none when it is missing or cannot be listed (a loop, a file)."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _fingerprint(pointer: str, target: str | None) -> tuple[int, ...] | None:
    """``lstat`` of the pointer (device, inode, size, mtime, ctime in ns), plus device and
    inode of ``target`` (followed) when given; None when either is missing."""
    try:
        p = os.lstat(pointer)
        mine = (p.st_dev, p.st_ino, p.st_size, p.st_mtime_ns, p.st_ctime_ns)
        if target is None:
            return mine
        t = os.stat(target)
    except OSError:
        return None
    return (*mine, t.st_dev, t.st_ino)


def _version_sort_key(name: str) -> tuple:
    """Sort ``YYYY-MM-DD_<tf>_vN`` names by date then N numerically; others by name."""
    m = re.match(r"^(\d{4}-\d{2}-\d{2})_.*_v(\d+)$", name)
    if m:
        return (0, m.group(1), int(m.group(2)), name)
    return (1, name, 0, name)
