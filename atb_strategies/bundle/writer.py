"""Write a bundle into a registry atomically.

The files go to a temporary directory inside the type directory (same filesystem), are
flushed, and the directory is renamed to its version name in one step; a crash leaves at most a
``.tmp-*`` directory that discovery ignores, never a half-written version. An existing version
is never overwritten. ``latest`` moves only if asked, after the version is in place.
"""

from __future__ import annotations

import os
import shutil
import uuid
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
from atb_strategies.registry.layout import RegistryLayout


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_bundle(
    root: Path | str,
    metadata: BundleMetadata,
    schema: FeatureSchema,
    model_bytes: bytes,
    *,
    extra_files: dict[str, bytes] | None = None,
    promote: bool = False,
) -> Path:
    """Write ``model.onnx``, ``metadata.json`` and ``feature_schema.json`` as a new version.

    ``metadata.model_sha256`` is recomputed from ``model_bytes``. The bundle is read back and
    validated before it is renamed into place. Returns the version directory.

    Raises
    ------
    RegistryError
        If the version already exists.
    """
    layout = RegistryLayout(root)
    tdir = layout.type_dir(metadata.symbol, metadata.model_type)
    final = layout.version_dir(metadata.symbol, metadata.model_type, metadata.version)
    if final.exists():
        raise RegistryError(
            f"{final} already exists; versions are never overwritten. Choose a new version."
        )
    tdir.mkdir(parents=True, exist_ok=True)
    tmp = tdir / f".tmp-{metadata.version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write(tmp / MODEL_FILE, model_bytes)
        meta: dict[str, Any] = metadata.to_dict()
        meta["model_file"] = MODEL_FILE
        meta["model_sha256"] = sha256_of(tmp / MODEL_FILE)
        _write(tmp / METADATA_FILE, dumps_strict(meta).encode())
        _write(tmp / SCHEMA_FILE, dumps_strict(schema.to_dict()).encode())
        for name, data in (extra_files or {}).items():
            if (
                "/" in name
                or name.startswith(".")
                or name in (MODEL_FILE, METADATA_FILE, SCHEMA_FILE)
            ):
                raise RegistryError(f"Extra bundle file name {name!r} is not allowed.")
            _write(tmp / name, data)
        staged = load_bundle_spec(
            tmp, identity=(metadata.symbol, metadata.model_type, metadata.version)
        )
        # Open the model as the registry will, checking its tensors against the schema.
        m = staged.metadata
        OnnxRunner(staged.model_path, m.input, m.output, staged.key)._open()
        try:
            os.rename(tmp, final)
        except OSError as e:
            raise RegistryError(
                f"Could not move the new bundle into {final}: {e}. Another writer may have "
                "created that version at the same moment; choose a new version."
            ) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if promote:
        from atb_strategies.registry.manage import promote as promote_version

        promote_version(layout, metadata.symbol, metadata.model_type, metadata.version)
    return final
