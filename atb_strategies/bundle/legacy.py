"""Read bundles written by the reference project (no ``format_version``) by mapping them onto
the self-describing format, or refuse them with a message a person can act on.

Only one legacy layout can be served faithfully: ``feature_strategy:
price_only_rolling_minmax`` with ``price_normalization: {method: rolling_minmax, window:
<sequence_length>, target_feature: close}``. Its serving semantics, which lived only in that
project's code, are:

* features ``<column>_normalized`` for ``close, volume, high, low, open`` (in the order the
  bundle lists them), each min-max normalised inside the window, *expanding* from the window's
  first row, 0.5 where max == min; computed in float64, fed as float32;
* output: the normalised close of the next bar; price = raw * (max - min) + min over the
  window's closes (min when max == min).

Everything else is refused when the bundle is selected:

* no ``price_normalization``: the output is a normalised close but nothing says how to turn it
  into a price (reading it as dollars was the reference project's silent bug);
* features scaled by fitted scalers (``*_scaled``) whose parameters were never saved, or any
  unknown ``feature_strategy``: the inputs cannot be reproduced.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atb_strategies.bundle.format import (
    MAX_SEQUENCE_LENGTH,
    MAX_WINDOW_VALUES,
    BundleMetadata,
    FeatureSchema,
    FeatureSpec,
    FieldReader,
    InputSpec,
    OutputSpec,
    read_model_file,
    read_timeframe,
)
from atb_strategies.bundle.safeio import plain
from atb_strategies.bundle.safeio import shown as show_value
from atb_strategies.exceptions import BundleError

SERVABLE_STRATEGY = "price_only_rolling_minmax"
_OHLCV = ("open", "high", "low", "close", "volume")


def _feature_names(
    meta: FieldReader, schema: Mapping[str, Any] | None, schema_path: Path
) -> list[str]:
    if schema is not None:
        sr = FieldReader(schema, schema_path)
        items = sr.get("features", list)
        names = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise sr.fail(f"features[{i}].name", "is missing.")
            names.append(item["name"])
        return names
    names = meta.get("feature_names", list)
    if not all(isinstance(n, str) for n in names):
        raise meta.fail("feature_names", f"must be a list of strings; got {show_value(names)}.")
    return names


def summary_fields(
    meta: Mapping[str, Any],
) -> tuple[tuple[int | None, ...] | None, str | None]:
    """``(input_shape, created_at)`` read leniently from a native or reference-project
    ``metadata.json`` for discovery listings (None where unknown; nothing is validated)."""
    shape: tuple[int | None, ...] | None = None
    inp = meta.get("input")
    if isinstance(inp, dict) and isinstance(inp.get("shape"), list):
        shape = tuple(inp["shape"])
    elif isinstance(meta.get("sequence_length"), int) and isinstance(
        meta.get("feature_names"), list
    ):
        shape = (None, meta["sequence_length"], len(meta["feature_names"]))
    created = meta.get("created_at") or meta.get("training_date")
    return shape, created if isinstance(created, str) else None


def adapt_legacy(
    meta: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
    meta_path: Path,
    schema_path: Path,
) -> tuple[BundleMetadata, FeatureSchema]:
    """Map a reference-project bundle onto the format, or raise ``BundleError`` saying why not."""
    r = FieldReader(meta, meta_path)
    seq = r.positive_int("sequence_length")
    if seq > MAX_SEQUENCE_LENGTH:
        raise r.fail("sequence_length", f"must be at most {MAX_SEQUENCE_LENGTH:,}; got {seq}.")
    if schema is not None and schema.get("sequence_length") not in (None, seq):
        raise BundleError(
            f"{schema_path}: sequence_length {show_value(schema.get('sequence_length'))} "
            "contradicts "
            f"{meta_path.name} sequence_length {seq}.",
            path=schema_path,
            field="sequence_length",
        )
    names = _feature_names(r, schema, schema_path)
    version = r.get("version_id", str)
    label = plain(f"{meta.get('symbol')}/{meta.get('model_type')}@{version}")
    strategy = meta.get("feature_strategy")
    norm = meta.get("price_normalization")

    if strategy != SERVABLE_STRATEGY:
        missing = []
        if strategy is None:
            missing.append("'feature_strategy' (how the inputs were computed)")
        if norm is None:
            missing.append(
                "'price_normalization' (what the output means and how to de-normalise it)"
            )
        scaled = [n for n in names if n.endswith("_scaled")]
        if scaled:
            shown = ", ".join(sorted(scaled)[:5]) + (" ..." if len(scaled) > 5 else "")
            reason = (
                f"its {len(scaled)} features ({shown}) were scaled with fitted scalers whose "
                "parameters were never saved (no scaler min/max or mean/std anywhere in the "
                "bundle), so its inputs cannot be reproduced"
            )
        elif strategy is not None:
            reason = (
                f"feature_strategy {show_value(strategy)} is not one whose serving semantics "
                f"are known (only {SERVABLE_STRATEGY!r} is)"
            )
        else:
            reason = "nothing in it says how its inputs were computed"
        if norm is None and strategy is not None:
            reason += (
                "; and it has no 'price_normalization', so its output (a normalised close) "
                "cannot be turned into a price"
            )
        raise BundleError(
            f"Bundle {label} cannot be served faithfully: {reason}. "
            f"Missing in {meta_path}: {', '.join(missing) or 'serving details'}. "
            "It was written by the reference project without the fields this format requires; "
            "retrain it with `atb train model` (or pick another version).",
            path=meta_path,
            field="price_normalization" if norm is None else "feature_strategy",
        )
    if norm is None:
        raise BundleError(
            f"Bundle {label} cannot be served: {meta_path} has no 'price_normalization'. "
            "Its output is a normalised close, and without it the output would be read as a "
            "price in dollars (the reference project's silent bug). Retrain the bundle.",
            path=meta_path,
            field="price_normalization",
        )
    nr = r.child("price_normalization")
    assert nr is not None
    method = nr.get("method", str)
    window = nr.positive_int("window")
    target = nr.get("target_feature", str)
    if method != "rolling_minmax" or target != "close" or window != seq:
        raise nr.fail(
            "method",
            f"must describe rolling_minmax of close over the {seq}-bar window; got "
            f"method={show_value(method)}, target_feature={show_value(target)}, "
            f"window={show_value(window)}.",
        )
    features = []
    for i, name in enumerate(names):
        column = name.removesuffix("_normalized")
        if not name.endswith("_normalized") or column not in _OHLCV:
            raise BundleError(
                f"{schema_path if schema is not None else meta_path}: feature {i} is "
                f"{show_value(name)}; "
                f"{SERVABLE_STRATEGY} bundles have only <ohlcv column>_normalized features.",
                path=schema_path if schema is not None else meta_path,
                field=f"features[{i}].name",
            )
        features.append(
            FeatureSpec(
                name, (column,), ({"op": "window_expanding_minmax", "constant_value": 0.5},)
            )
        )
    if seq * len(features) > MAX_WINDOW_VALUES:
        raise r.fail(
            "sequence_length",
            f"x {len(features)} features is more than {MAX_WINDOW_VALUES:,} values per window.",
        )
    feature_schema = FeatureSchema(
        seq, tuple(features), "raise", schema_path if schema is not None else meta_path
    )
    metadata = BundleMetadata(
        symbol=r.get("symbol", str),
        model_type=r.get("model_type", str),
        timeframe=read_timeframe(r),
        version=version,
        input=InputSpec(None, "float32", seq, len(features)),
        output=OutputSpec(target="close_window_minmax", horizon=1),
        model_sha256=None,
        created_at=r.get("created_at", str, required=False),
        framework=r.get("framework", str, required=False),
        model_file=read_model_file(r),
        origin=f"legacy:{SERVABLE_STRATEGY}",
        raw=dict(meta),
        path=meta_path,
    )
    return metadata, feature_schema
