"""The self-describing bundle format (``format_version`` 1), as typed, validated objects.

A bundle directory holds ``model.onnx``, ``metadata.json`` (identity, input tensor, output
meaning, checksum, lineage) and ``feature_schema.json`` (how to compute every input feature from
candles). ``docs/bundle-format.md`` is the human-readable specification; this module is the
executable one. Parsing never guesses: a missing or invalid field raises ``BundleError`` naming
the file and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The feature schema is part of the bundle format; its types live in features.schema (re-exported).
from atb_strategies.features.drift import drift_reference
from atb_strategies.features.schema import FORMAT_VERSION as FORMAT_VERSION
from atb_strategies.features.schema import NAN_POLICIES as NAN_POLICIES
from atb_strategies.features.schema import FeatureSchema as FeatureSchema
from atb_strategies.features.schema import FeatureSpec as FeatureSpec
from atb_strategies.features.schema import FieldReader as FieldReader

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
TENSOR_DTYPES = ("float32",)


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
    def from_reader(cls, r: FieldReader) -> OutputSpec:
        target = r.get("target", str)
        if target not in TARGETS:
            raise r.fail("target", f"must be one of {sorted(TARGETS)}; got {target!r} instead.")
        horizon = r.positive_int("horizon")
        name = r.get("name", str, required=False)
        params = r.get("params", dict, required=False, default={})
        pr = FieldReader(params, r.path, f"{r.prefix}params.")
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
        r = FieldReader(data, path)
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
        # Optional, but checked now so that a malformed one fails at selection, not mid-session.
        drift_reference(data, path)
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
