"""Read and validate one bundle directory into a ``BundleSpec`` (no ONNX session opened)."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from atb_strategies.bundle.format import (
    METADATA_FILE,
    MIN_SCALE,
    SCHEMA_FILE,
    BundleMetadata,
    FeatureSchema,
)
from atb_strategies.bundle.jsonio import read_json
from atb_strategies.bundle.legacy import adapt_legacy
from atb_strategies.bundle.lineage import training_period
from atb_strategies.bundle.safeio import check_file, plain, sha256_file
from atb_strategies.exceptions import BundleError, shown


@dataclass(frozen=True)
class BundleSpec:
    """A validated bundle on disk: metadata, feature schema and model path."""

    directory: Path
    metadata: BundleMetadata
    schema: FeatureSchema

    @property
    def key(self) -> str:
        m = self.metadata
        return model_key(m.symbol, m.model_type, m.version)

    @property
    def model_path(self) -> Path:
        return self.directory / self.metadata.model_file


def model_key(symbol: str, model_type: str, version: str) -> str:
    """The canonical ``SYMBOL/type@version`` key."""
    return f"{symbol}/{model_type}@{version}"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_fitted_scales(schema: FeatureSchema) -> None:
    """Refuse fitted transform parameters that would make every window non-finite at run time
    (a ``zscore`` std or ``minmax_scale`` range below ``MIN_SCALE``, a non-finite parameter),
    naming the feature, instead of blaming the candles at every bar."""
    for i, feature in enumerate(schema.features):
        for j, step in enumerate(feature.transforms):
            where = f"features[{i}].transforms[{j}]"
            for name, value in step.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise _scale_error(
                        schema, feature.name, f"{where}.{name}", f"is {shown(value)}"
                    )
            op = step.get("op")
            if op == "zscore":
                scale, name = step.get("std"), "std"
            elif op == "minmax_scale":
                hi, lo = step.get("max"), step.get("min")
                ok = all(isinstance(v, int | float) for v in (hi, lo))
                scale, name = (hi - lo if ok else None), "max - min"  # type: ignore[operator]
            else:
                continue
            if isinstance(scale, int | float) and not scale >= MIN_SCALE:
                raise _scale_error(
                    schema, feature.name, where, f"has {name} = {shown(scale)}, below {MIN_SCALE:g}"
                )


def _scale_error(schema: FeatureSchema, feature: str, where: str, problem: str) -> BundleError:
    return BundleError(
        f"{schema.path or 'feature schema'}: feature {plain(feature)!s} ({where}) {problem}: "
        "dividing by it makes every input non-finite. The fitted parameters are corrupt; "
        "retrain the bundle.",
        path=schema.path,
        field=where,
    )


def load_bundle_spec(
    directory: Path,
    *,
    verify_checksum: bool = True,
    identity: tuple[str, str, str] | None = None,
) -> BundleSpec:
    """Read ``metadata.json`` and ``feature_schema.json`` of ``directory`` and validate them.

    Native bundles (``format_version`` present) need both files, a matching identity, an input
    shape that agrees with the schema, and a ``model.onnx`` whose sha256 matches. Reference
    project bundles are mapped by ``adapt_legacy`` or refused with the reason. ``identity``
    (symbol, type, version) defaults to what the directory's path says.

    Raises
    ------
    BundleError
        Naming the file and field at fault.
    """
    meta_path = directory / METADATA_FILE
    schema_path = directory / SCHEMA_FILE
    meta = read_json(meta_path, directory)
    schema_raw = read_json(schema_path, directory) if os.path.lexists(schema_path) else None

    if "format_version" in meta:
        if schema_raw is None:
            raise BundleError(
                f"{schema_path} is missing; a format {meta['format_version']} bundle must say how "
                "its features are computed. Restore the file or retrain the bundle.",
                path=schema_path,
            )
        metadata = BundleMetadata.from_dict(meta, meta_path)
        schema = FeatureSchema.from_dict(schema_raw, schema_path)
        if (metadata.input.sequence_length, metadata.input.n_features) != (
            schema.sequence_length,
            len(schema.features),
        ):
            raise BundleError(
                f"{meta_path}: input.shape [null, {metadata.input.sequence_length}, "
                f"{metadata.input.n_features}] contradicts {schema_path.name} "
                f"({schema.sequence_length} bars x {len(schema.features)} features).",
                path=meta_path,
                field="input.shape",
            )
        drift = meta.get("drift_reference")
        if drift is not None and list(drift["features"]) != schema.feature_names:
            raise BundleError(
                f"{meta_path}: field 'drift_reference.features' names "
                f"{list(drift['features'])[:5]}, but {schema_path.name} has the features "
                f"{schema.feature_names[:5]} (in this order). Retrain the bundle or remove "
                "drift_reference.",
                path=meta_path,
                field="drift_reference.features",
            )
    else:
        metadata, schema = adapt_legacy(meta, schema_raw, meta_path, schema_path)
    check_fitted_scales(schema)
    training_period(meta, meta_path)  # unusable lineage dates fail now, not in a backtest

    expected = identity or (directory.parent.parent.name, directory.parent.name, directory.name)
    found = (metadata.symbol, metadata.model_type, metadata.version)
    if found != expected:
        raise BundleError(
            f"{meta_path} describes {plain(model_key(*found))} but lives at "
            f"{plain('/'.join(expected))}; move the directory or fix symbol/model_type/version.",
            path=meta_path,
            field="version",
        )
    spec = BundleSpec(directory, metadata, schema)
    model_path = spec.model_path
    try:
        check_file(model_path, directory, "model")
    except BundleError as e:
        if not os.path.lexists(model_path):
            raise BundleError(
                f"{model_path} is missing; the bundle has no model. Restore it or retrain.",
                path=model_path,
            ) from e
        raise
    if verify_checksum and metadata.model_sha256 is not None:
        actual = sha256_file(model_path, directory, "model")
        if actual != metadata.model_sha256:
            raise BundleError(
                f"{model_path} has sha256 {actual[:12]}..., but {meta_path.name} records "
                f"{metadata.model_sha256[:12]}...: the model file was changed or corrupted. "
                "Restore it or retrain the bundle.",
                path=model_path,
                field="model_sha256",
            )
    return spec
