"""The self-describing bundle format (``format_version`` 1), as typed, validated objects.

A bundle directory holds ``model.onnx``, ``metadata.json`` (identity, input tensor, output
meaning, checksum, lineage) and ``feature_schema.json`` (how to compute every input feature from
candles). ``docs/bundle-format.md`` is the human-readable specification; this module is the
executable one. Parsing never guesses: a missing or invalid field raises ``BundleError`` naming
the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atb_strategies.exceptions import BundleError
from atb_strategies.features.transforms import (
    SERIES_TRANSFORMS,
    WINDOW_TRANSFORMS,
    SeriesTransform,
    WindowTransform,
)

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
SCHEMA_FILE = "feature_schema.json"
MODEL_FILE = "model.onnx"

#: What a model's output can mean. Each entry: does decoding need the window's closes?
TARGETS: dict[str, str] = {
    "close": "the close `horizon` bars ahead, in price units",
    "close_window_minmax": (
        "the close `horizon` bars ahead, min-max normalised by the closes of the input window: "
        "price = raw * (max - min) + min (min if max == min)"
    ),
    "close_zscore": "the close `horizon` bars ahead as (close - mean) / std; params mean, std",
    "log_return": "ln(close[t+horizon] / close[t]); price = close[t] * exp(raw)",
    "simple_return": "close[t+horizon] / close[t] - 1; price = close[t] * (1 + raw)",
    "class_probabilities": (
        "probabilities of the classes listed in `classes` (down/flat/up) over `horizon` bars; "
        "no price"
    ),
}
CLASS_DIRECTIONS = {"down": -1, "flat": 0, "up": 1}
NAN_POLICIES = ("raise",)
TENSOR_DTYPES = ("float32",)


class _Reader:
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
            raise self.fail(name, f"must be {names}; got {value!r} instead.")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(name, f"must be finite; got {value!r} instead.")
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
            raise self.fail(name, f"must be a positive integer; got {value!r} instead.")
        return value

    def child(self, name: str, *, required: bool = True) -> _Reader | None:
        value = self.get(name, dict, required=required)
        if value is None:
            return None
        return _Reader(value, self.path, f"{self.prefix}{name}.")


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
        r = _Reader(data, path)
        r.check_format_version()
        seq = r.positive_int("sequence_length")
        nan_policy = r.get("nan_policy", str, required=False, default="raise")
        if nan_policy not in NAN_POLICIES:
            raise r.fail("nan_policy", f"must be one of {list(NAN_POLICIES)}; got {nan_policy!r}.")
        raw_features = r.get("features", list)
        if not raw_features:
            raise r.fail("features", "must list at least one feature.")
        features = []
        names: set[str] = set()
        for i, item in enumerate(raw_features):
            if not isinstance(item, dict):
                raise r.fail(f"features[{i}]", f"must be an object; got {item!r}.")
            fr = _Reader(item, path, f"features[{i}].")
            name = fr.get("name", str)
            if name in names:
                raise fr.fail("name", f"repeats feature name {name!r}; names must be unique.")
            names.add(name)
            source = fr.get("source", list)
            if not source or not all(isinstance(s, str) and s for s in source):
                raise fr.fail(
                    "source", f"must be a non-empty list of column names; got {source!r}."
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


@dataclass(frozen=True)
class InputSpec:
    """The model's input tensor: ``[batch, sequence_length, n_features]`` of ``dtype``.

    ``name`` is None only for adapted legacy bundles, which never recorded it: the ONNX graph's
    single input is used and checked against the shape when the session opens.
    """

    name: str | None
    dtype: str
    sequence_length: int
    n_features: int

    @property
    def shape(self) -> list[int | None]:
        return [None, self.sequence_length, self.n_features]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape}


@dataclass(frozen=True)
class OutputSpec:
    """What the model predicts and how to turn it into a price (see ``TARGETS``)."""

    target: str
    horizon: int = 1
    name: str | None = None
    params: Mapping[str, float] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    confidence_return_scale: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "target": self.target,
            "horizon": self.horizon,
            "params": dict(self.params),
            "confidence_return_scale": self.confidence_return_scale,
        }
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_reader(cls, r: _Reader) -> OutputSpec:
        target = r.get("target", str)
        if target not in TARGETS:
            raise r.fail("target", f"must be one of {sorted(TARGETS)}; got {target!r} instead.")
        horizon = r.positive_int("horizon")
        name = r.get("name", str, required=False)
        params = r.get("params", dict, required=False, default={})
        pr = _Reader(params, r.path, f"{r.prefix}params.")
        if target == "close_zscore":
            pr.get("mean", (int, float))
            std = pr.get("std", (int, float))
            if std <= 0:
                raise pr.fail("std", f"must be > 0; got {std!r}.")
        classes = None
        if target == "class_probabilities":
            raw = r.get("classes", list)
            if (
                len(raw) < 2
                or not all(c in CLASS_DIRECTIONS for c in raw)
                or len(set(raw)) != len(raw)
            ):
                raise r.fail(
                    "classes",
                    f"must list two or more distinct classes from {sorted(CLASS_DIRECTIONS)}; "
                    f"got {raw!r}.",
                )
            classes = tuple(raw)
        scale = r.get("confidence_return_scale", (int, float), required=False, default=0.01)
        if scale <= 0:
            raise r.fail("confidence_return_scale", f"must be > 0; got {scale!r}.")
        return cls(target, horizon, name, dict(params), classes, float(scale))


@dataclass(frozen=True)
class BundleMetadata:
    """Identity, tensors, output meaning and lineage of one bundle (``metadata.json``)."""

    symbol: str
    model_type: str
    timeframe: str
    version: str
    input: InputSpec
    output: OutputSpec
    model_sha256: str | None
    created_at: str | None = None
    framework: str | None = None
    model_file: str = MODEL_FILE
    origin: str = f"atb-bundle-{FORMAT_VERSION}"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    path: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The strict-JSON form; extra keys of ``raw`` (training, metrics...) are kept."""
        out = {k: v for k, v in self.raw.items() if k not in _METADATA_KEYS}
        out.update(
            {
                "format_version": FORMAT_VERSION,
                "symbol": self.symbol,
                "model_type": self.model_type,
                "timeframe": self.timeframe,
                "version": self.version,
                "created_at": self.created_at,
                "framework": self.framework,
                "model_file": self.model_file,
                "model_sha256": self.model_sha256,
                "input": self.input.to_dict(),
                "output": self.output.to_dict(),
            }
        )
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> BundleMetadata:
        r = _Reader(data, path)
        r.check_format_version()
        ir = r.child("input")
        assert ir is not None
        shape = ir.get("shape", list)
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape[1:]):
            raise ir.fail(
                "shape", f"must be [null, sequence_length, n_features]; got {shape!r} instead."
            )
        dtype = ir.get("dtype", str)
        if dtype not in TENSOR_DTYPES:
            raise ir.fail("dtype", f"must be one of {list(TENSOR_DTYPES)}; got {dtype!r}.")
        inp = InputSpec(ir.get("name", str), dtype, shape[1], shape[2])
        outr = r.child("output")
        assert outr is not None
        sha = r.get("model_sha256", str)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise r.fail("model_sha256", f"must be 64 lowercase hex digits; got {sha!r}.")
        return cls(
            symbol=r.get("symbol", str),
            model_type=r.get("model_type", str),
            timeframe=r.get("timeframe", str),
            version=r.get("version", str),
            input=inp,
            output=OutputSpec.from_reader(outr),
            model_sha256=sha,
            created_at=r.get("created_at", str, required=False),
            framework=r.get("framework", str, required=False),
            model_file=r.get("model_file", str, required=False, default=MODEL_FILE),
            raw=dict(data),
            path=path,
        )


_METADATA_KEYS = {
    "format_version",
    "symbol",
    "model_type",
    "timeframe",
    "version",
    "created_at",
    "framework",
    "model_file",
    "model_sha256",
    "input",
    "output",
}
