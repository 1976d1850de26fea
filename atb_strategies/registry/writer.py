"""Register a bundle atomically: stage it, check it, rename it into place in one step.

One mechanism for every writer (``write_bundle``, the trainer): the files go to a staging
directory ``<root>/.staging-<id>/<SYMBOL>/<TYPE>/<VERSION>/`` on the registry's filesystem (a
registry of its own, so a staged bundle can be served, e.g. by the trainer's quick backtest),
are flushed, read back, validated and opened as the registry will open them, and the version
directory is renamed to ``<root>/<SYMBOL>/<TYPE>/<VERSION>`` in one ``rename``. A crash leaves at
most a ``.staging-*`` directory that discovery ignores (and later writers remove after an hour),
never a half-written version. An existing version is never overwritten. ``latest`` moves only
if asked, after the version is in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from atb_strategies.bundle.format import (
    METADATA_FILE,
    MODEL_FILE,
    SCHEMA_FILE,
    BundleMetadata,
    FeatureSchema,
)
from atb_strategies.bundle.jsonio import dumps_strict
from atb_strategies.bundle.loader import load_bundle_spec, sha256_of
from atb_strategies.exceptions import RegistryError
from atb_strategies.inference.runner import OnnxRunner
from atb_strategies.inference.smoke import smoke_run
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.manage import promote as promote_version

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
#: A staging directory untouched this long belongs to no running writer (registration takes
#: seconds).
STALE_STAGING_SECONDS = 3600.0


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class StagedBundle:
    """A bundle written and validated in a staging registry, not yet a version of ``root``.

    ``staging_root`` is a registry holding only this bundle (at ``path``); ``commit()`` renames it
    into the real registry.
    """

    def __init__(self, root: Path, staging_root: Path, path: Path, metadata: BundleMetadata):
        self.root = root
        self.staging_root = staging_root
        self.path = path
        self.metadata = metadata
        self.final: Path | None = None

    def commit(self) -> Path:
        """Rename the staged version into the registry; returns its directory."""
        m = self.metadata
        final = RegistryLayout(self.root).version_dir(m.symbol, m.model_type, m.version)
        if final.exists():
            raise RegistryError(
                f"{final} already exists; versions are never overwritten. Choose a new version."
            )
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.path, final)
        except OSError as e:
            raise RegistryError(
                f"Could not move the new bundle into {final}: {e}. Another writer may have "
                "created that version at the same moment; choose a new version."
            ) from e
        self.final = final
        return final


def remove_stale_staging(root: Path | str, older_than: float = STALE_STAGING_SECONDS) -> None:
    """Delete staging directories left by killed writers."""
    root = Path(root)
    if not root.is_dir():
        return
    now = time.time()
    for path in root.glob(f"{STAGING_PREFIX}*"):
        if path.is_dir() and now - path.stat().st_mtime > older_than:
            log.info("removing %s left by an interrupted registration", path)
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def stage_bundle(
    root: Path | str,
    metadata: BundleMetadata,
    schema: FeatureSchema,
    model_bytes: bytes,
    *,
    extra_files: dict[str, bytes] | None = None,
) -> Iterator[StagedBundle]:
    """Write and validate a bundle in a staging registry inside ``root``; yield it.

    ``metadata.model_sha256`` is recomputed from ``model_bytes``. Call ``commit()`` on the
    yielded bundle to register it; whatever happens, the staging directory is removed on exit,
    so a bundle not committed (an error, Ctrl-C) leaves nothing behind.

    Raises
    ------
    RegistryError
        If the version already exists or an extra file name is not allowed; ``BundleError`` if
        the written bundle does not validate or its model cannot be opened.
    """
    layout = RegistryLayout(root)
    final = layout.version_dir(metadata.symbol, metadata.model_type, metadata.version)
    if final.exists():
        raise RegistryError(
            f"{final} already exists; versions are never overwritten. Choose a new version."
        )
    for name in extra_files or {}:
        if "/" in name or name.startswith(".") or name in (MODEL_FILE, METADATA_FILE, SCHEMA_FILE):
            raise RegistryError(f"Extra bundle file name {name!r} is not allowed.")
    remove_stale_staging(layout.root)
    staging_root = layout.root / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        staged_layout = RegistryLayout(staging_root)
        path = staged_layout.version_dir(metadata.symbol, metadata.model_type, metadata.version)
        path.mkdir(parents=True)
        _write(path / MODEL_FILE, model_bytes)
        meta: dict[str, Any] = metadata.to_dict()
        meta["model_file"] = MODEL_FILE
        meta["model_sha256"] = sha256_of(path / MODEL_FILE)
        _write(path / METADATA_FILE, dumps_strict(meta).encode())
        _write(path / SCHEMA_FILE, dumps_strict(schema.to_dict()).encode())
        for name, data in (extra_files or {}).items():
            _write(path / name, data)
        spec = load_bundle_spec(
            path, identity=(metadata.symbol, metadata.model_type, metadata.version)
        )
        # Open the model as the registry will, checking its tensors against the schema.
        runner = OnnxRunner(spec.model_path, spec.metadata.input, spec.metadata.output, spec.key)
        runner.check()
        smoke_run(runner)  # and run it as use will: a graph that fails at run time is refused
        yield StagedBundle(layout.root, staging_root, path, spec.metadata)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)


def write_bundle(
    root: Path | str,
    metadata: BundleMetadata,
    schema: FeatureSchema,
    model_bytes: bytes,
    *,
    extra_files: dict[str, bytes] | None = None,
    promote: bool = False,
) -> Path:
    """Register ``model.onnx``, ``metadata.json`` and ``feature_schema.json`` as a new version.

    Staged, validated and renamed into place by ``stage_bundle``; ``latest`` moves to it when
    ``promote``. Returns the version directory.
    """
    with stage_bundle(root, metadata, schema, model_bytes, extra_files=extra_files) as staged:
        final = staged.commit()
    if promote:
        promote_version(
            RegistryLayout(root), metadata.symbol, metadata.model_type, metadata.version
        )
    return final


def register_bundle_files(
    root: Path | str,
    files: Mapping[str, bytes],
    *,
    version: str,
    update: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Register a bundle that arrives as data (``{file name: bytes}``, e.g. trained on another
    machine, ``registry.transfer.read_bundle_files``) as ``version`` of the registry at ``root``.

    ``metadata.json``'s ``version`` is set to ``version`` (allocated by the caller from this
    registry's ledger) and ``update``, if given, edits the metadata dict first; the model,
    schema and every other file are staged, validated and renamed into place by
    ``stage_bundle``, so a failure or Ctrl-C leaves no version. Returns the version directory.

    Raises
    ------
    RegistryError
        The files hold no ``metadata.json``, ``feature_schema.json`` or model, or the version
        exists; ``BundleError`` if they do not make a valid bundle.
    """
    missing = [n for n in (METADATA_FILE, SCHEMA_FILE) if n not in files]
    if missing:
        raise RegistryError(f"The bundle to register has no {', '.join(missing)}.")
    try:
        meta = json.loads(files[METADATA_FILE])
        schema_dict = json.loads(files[SCHEMA_FILE])
    except (ValueError, UnicodeDecodeError) as e:
        raise RegistryError(f"The bundle to register has unreadable JSON: {e}.") from e
    if not isinstance(meta, dict) or not isinstance(schema_dict, dict):
        raise RegistryError("The bundle to register has a metadata or schema that is no object.")
    meta["version"] = version
    if update is not None:
        update(meta)
    model_file = meta.get("model_file", MODEL_FILE)
    if model_file not in files:
        raise RegistryError(f"The bundle to register has no model file {model_file!r}.")
    meta["model_sha256"] = hashlib.sha256(files[model_file]).hexdigest()
    metadata = BundleMetadata.from_dict(meta)
    schema = FeatureSchema.from_dict(schema_dict)
    extra = {
        n: data for n, data in files.items() if n not in (METADATA_FILE, SCHEMA_FILE, model_file)
    }
    with stage_bundle(root, metadata, schema, files[model_file], extra_files=extra) as staged:
        return staged.commit()
