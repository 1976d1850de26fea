"""The feature schema (``feature_schema.json``) as typed, validated objects.

``FeatureSpec`` is one input feature (source columns and a transform chain); ``FeatureSchema`` the
ordered features, window length and warm-up of a model. ``FieldReader`` reads typed JSON fields and
raises ``BundleError`` naming the file and the field; ``bundle.format`` parses ``metadata.json``
with it too. This module sits below ``bundle`` so that the feature pipeline needs nothing above
``features``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atb_strategies.exceptions import BundleError, shown
from atb_strategies.features.transforms import (
    SERIES_TRANSFORMS,
    WINDOW_TRANSFORMS,
    SeriesTransform,
    WindowTransform,
)

#: Version of the bundle format (``metadata.json`` and ``feature_schema.json``).
FORMAT_VERSION = 1
NAN_POLICIES = ("raise",)


class FieldReader:
    """Reads typed fields out of one JSON object, raising BundleError that names file and field."""

    def __init__(self, data: Mapping[str, Any], path: Path | None, prefix: str = "") -> None:
        self.data = data
        self.path = path
        self.prefix = prefix

    def _where(self) -> str:
        return self.path.name if self.path is not None else "bundle"

    def fail(self, name: str, problem: str) -> BundleError:
        full = f"{self.prefix}{name}"
        return BundleError(
            f"{self.path or 'bundle'}: field {full!r} {problem}",
            path=self.path,
            field=full,
        )

    def get(
        self,
        name: str,
        kind: type | tuple[type, ...],
        *,
        required: bool = True,
        default: Any = None,
    ) -> Any:
        if name not in self.data or self.data[name] is None:
            if required:
                raise self.fail(name, "is missing.")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if int in kinds and float not in kinds and isinstance(value, float):
            ok = False
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(name, f"must be {names}; got {shown(value)} instead.")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(name, f"must be finite; got {shown(value)} instead.")
        return value

    def check_format_version(self) -> None:
        version = self.get("format_version", int)
        if version != FORMAT_VERSION:
            raise self.fail(
                "format_version",
                f"is {version}; this atb_strategies reads format {FORMAT_VERSION}. "
                "Upgrade atb_strategies.",
            )

    def positive_int(self, name: str, *, required: bool = True, default: int | None = None) -> int:
        value = self.get(name, int, required=required, default=default)
        if value is not None and value < 1:
            raise self.fail(name, f"must be a positive integer; got {shown(value)} instead.")
        return value

    def child(self, name: str, *, required: bool = True) -> FieldReader | None:
        value = self.get(name, dict, required=required)
        if value is None:
            return None
        return FieldReader(value, self.path, f"{self.prefix}{name}.")


@dataclass(frozen=True)
class FeatureSpec:
    """One model input feature: source column(s), causal series transforms, window transform."""

    name: str
    source: tuple[str, ...]
    transforms: tuple[dict[str, Any], ...]

    def build(self) -> tuple[list[SeriesTransform], WindowTransform | None]:
        """Instantiate the transform chain; raise ``ValueError`` if it is not well formed."""
        series: list[SeriesTransform] = []
        window: WindowTransform | None = None
        for i, step in enumerate(self.transforms):
            params = {k: v for k, v in step.items() if k != "op"}
            op = step.get("op")
            if window is not None:
                raise ValueError(
                    f"step {i} ({op!r}) follows window transform {window.op!r}; "
                    "a window transform must be the last step."
                )
            if op in SERIES_TRANSFORMS:
                series.append(SERIES_TRANSFORMS[op](**params))
            elif op in WINDOW_TRANSFORMS:
                window = WINDOW_TRANSFORMS[op](**params)
            else:
                known = sorted(SERIES_TRANSFORMS) + sorted(WINDOW_TRANSFORMS)
                raise ValueError(f"step {i} has unknown op {op!r}; known ops: {known}.")
        if not series:
            series.append(SERIES_TRANSFORMS["identity"]())
        if series[0].arity != len(self.source):
            raise ValueError(
                f"{series[0].op!r} takes {series[0].arity} source column(s); "
                f"source lists {len(self.source)}: {list(self.source)}."
            )
        for step in series[1:]:
            if step.arity != 1:
                raise ValueError(
                    f"{step.op!r} takes {step.arity} inputs, so it can only be the first step."
                )
        return series, window

    @property
    def warmup(self) -> int:
        series, _ = self.build()
        return sum(s.warmup for s in series)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": list(self.source),
            "transforms": [dict(t) for t in self.transforms],
        }


@dataclass(frozen=True)
class FeatureSchema:
    """How to compute a model's input window from candles (``feature_schema.json``)."""

    sequence_length: int
    features: tuple[FeatureSpec, ...]
    nan_policy: str = "raise"
    path: Path | None = field(default=None, compare=False)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        """Candle columns needed, in first-use order."""
        seen: dict[str, None] = {}
        for f in self.features:
            for c in f.source:
                seen.setdefault(c, None)
        return list(seen)

    @property
    def warmup_bars(self) -> int:
        """Bars of history needed before a window's first row (the longest feature warm-up)."""
        return max((f.warmup for f in self.features), default=0)

    @property
    def min_bars(self) -> int:
        """Bars needed for the first complete window."""
        return self.warmup_bars + self.sequence_length

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "sequence_length": self.sequence_length,
            "warmup_bars": self.warmup_bars,
            "nan_policy": self.nan_policy,
            "columns": self.columns,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> FeatureSchema:
        r = FieldReader(data, path)
        r.check_format_version()
        seq = r.positive_int("sequence_length")
        nan_policy = r.get("nan_policy", str, required=False, default="raise")
        if nan_policy not in NAN_POLICIES:
            raise r.fail(
                "nan_policy", f"must be one of {list(NAN_POLICIES)}; got {shown(nan_policy)}."
            )
        raw_features = r.get("features", list)
        if not raw_features:
            raise r.fail("features", "must list at least one feature.")
        features = []
        names: set[str] = set()
        for i, item in enumerate(raw_features):
            if not isinstance(item, dict):
                raise r.fail(f"features[{i}]", f"must be an object; got {shown(item)}.")
            fr = FieldReader(item, path, f"features[{i}].")
            name = fr.get("name", str)
            if name in names:
                raise fr.fail("name", f"repeats feature name {shown(name)}; names must be unique.")
            names.add(name)
            source = fr.get("source", list)
            if not source or not all(isinstance(s, str) and s for s in source):
                raise fr.fail(
                    "source", f"must be a non-empty list of column names; got {shown(source)}."
                )
            steps = fr.get("transforms", list, required=False, default=[])
            if not all(isinstance(s, dict) and isinstance(s.get("op"), str) for s in steps):
                raise fr.fail("transforms", "must be a list of objects each with a string 'op'.")
            spec = FeatureSpec(name, tuple(source), tuple(dict(s) for s in steps))
            try:
                spec.build()
            except ValueError as e:
                raise fr.fail("transforms", f"is not computable: {e}") from e
            features.append(spec)
        schema = cls(seq, tuple(features), nan_policy, path)
        declared = r.get("warmup_bars", int, required=False)
        if declared is not None and declared != schema.warmup_bars:
            raise r.fail(
                "warmup_bars",
                f"says {declared} but the declared transforms need {schema.warmup_bars}.",
            )
        return schema
