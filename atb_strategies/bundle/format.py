"""The self-describing bundle format (``format_version`` 1), as typed, validated objects.

A bundle directory holds ``model.onnx``, ``metadata.json`` (identity, input tensor, output
meaning, checksum, lineage) and ``feature_schema.json`` (how to compute every input feature from
candles). ``docs/bundle-format.md`` is the human-readable specification; this module is the
executable one. Parsing never guesses: a missing or invalid field raises ``BundleError`` naming
the file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atb_strategies.bundle.safeio import shown

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
#: Smallest fitted scale (a ``std`` or ``max - min``) a bundle may divide by: below it, a
#: deviation of a few units overflows float32 and every window would be refused at run time.
MIN_SCALE = 1e-30
TENSOR_DTYPES = ("float32",)
#: Upper bounds that keep every later computation (windows, horizons, lineage dates) in range.
MAX_SEQUENCE_LENGTH = 100_000
MAX_FEATURES = 10_000
#: Values in one input window (sequence_length x n_features).
MAX_WINDOW_VALUES = 1_000_000
MAX_HORIZON = 100_000
#: ``<n><unit>``: 1 to 9999 minutes, hours, days or weeks, ASCII only.
_TIMEFRAME = re.compile(r"[1-9][0-9]{0,3}[mhdw]", re.ASCII)
#: A file a bundle names: one plain name inside its version folder.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)


def is_timeframe(value: object) -> bool:
    """True for a timeframe a bundle may declare: ``<n>m|h|d|w`` with 1 <= n <= 9999."""
    return isinstance(value, str) and _TIMEFRAME.fullmatch(value) is not None


def read_timeframe(r: FieldReader) -> str:
    """The ``timeframe`` field of ``r``, checked with ``is_timeframe``."""
    value = r.get("timeframe", str)
    if not is_timeframe(value):
        raise r.fail(
            "timeframe",
            f"must be <n>m, <n>h, <n>d or <n>w with n from 1 to 9999 (1h, 15m, 1d...); got "
            f"{shown(value)} instead.",
        )
    return value


def read_model_file(r: FieldReader) -> str:
    """The ``model_file`` field of ``r``: a plain file name inside the version folder."""
    value = r.get("model_file", str, required=False, default=MODEL_FILE)
    if not _FILE_NAME.fullmatch(value) or ".." in value:
        raise r.fail(
            "model_file",
            "must be the name of a file inside the bundle's own folder (letters, digits, '.', "
            f"'_', '-'; no path, at most 128 characters); got {shown(value)} instead. A bundle "
            "never serves a file from outside its folder: copy the model next to metadata.json.",
        )
    return value


def _at_most(r: FieldReader, name: str, value: int, limit: int) -> int:
    if value > limit:
        raise r.fail(name, f"must be at most {limit:,}; got {shown(value, 40)} instead.")
    return value


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
            raise r.fail(
                "target", f"must be one of {sorted(TARGETS)}; got {shown(target)} instead."
            )
        horizon = _at_most(r, "horizon", r.positive_int("horizon"), MAX_HORIZON)
        name = r.get("name", str, required=False)
        params = r.get("params", dict, required=False, default={})
        pr = FieldReader(params, r.path, f"{r.prefix}params.")
        if target == "close_zscore":
            pr.get("mean", (int, float))
            std = pr.get("std", (int, float))
            if not std >= MIN_SCALE:
                raise pr.fail("std", f"must be at least {MIN_SCALE:g}; got {shown(std)}.")
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
                    f"got {shown(raw)}.",
                )
            classes = tuple(raw)
        scale = r.get("confidence_return_scale", (int, float), required=False, default=0.01)
        if scale <= 0:
            raise r.fail("confidence_return_scale", f"must be > 0; got {shown(scale)}.")
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
        if (
            len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape[1:])
            or shape[1] > MAX_SEQUENCE_LENGTH
            or shape[2] > MAX_FEATURES
            or shape[1] * shape[2] > MAX_WINDOW_VALUES
        ):
            raise ir.fail(
                "shape",
                "must be [null, sequence_length, n_features] with sequence_length at most "
                f"{MAX_SEQUENCE_LENGTH:,}, n_features at most {MAX_FEATURES:,} and at most "
                f"{MAX_WINDOW_VALUES:,} values in all; got {shown(shape)} instead.",
            )
        dtype = ir.get("dtype", str)
        if dtype not in TENSOR_DTYPES:
            raise ir.fail("dtype", f"must be one of {list(TENSOR_DTYPES)}; got {shown(dtype)}.")
        inp = InputSpec(ir.get("name", str), dtype, shape[1], shape[2])
        outr = r.child("output")
        assert outr is not None
        sha = r.get("model_sha256", str)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise r.fail("model_sha256", f"must be 64 lowercase hex digits; got {shown(sha)}.")
        # Optional, but checked now so that a malformed one fails at selection, not mid-session.
        drift_reference(data, path)
        return cls(
            symbol=r.get("symbol", str),
            model_type=r.get("model_type", str),
            timeframe=read_timeframe(r),
            version=r.get("version", str),
            input=inp,
            output=OutputSpec.from_reader(outr),
            model_sha256=sha,
            created_at=r.get("created_at", str, required=False),
            framework=r.get("framework", str, required=False),
            model_file=read_model_file(r),
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
