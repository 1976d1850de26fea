"""``train_model``: candles in, a new registry version out (``atb train model``).

Steps, each logged:

1. candles from a file or a DataFrame, limited to ``[start_date, end_date]``, validated;
2. chronological split (train / validation / test; parts separated by a full window);
3. the feature schema generated from the model type's recipe, scalers fitted on train bars only;
4. windows and next-``horizon`` log-return targets computed by the runtime feature pipeline;
5. fit (progress per epoch), ONNX export, **parity gate**: the framework model and the ONNX
   model on every test window, max abs difference recorded, registration refused above
   ``parity_tolerance``;
6. **causality gate**: predictions recomputed from truncated history must equal the full-series
   ones bit for bit, or training fails;
7. honest evaluation on the test part (``metrics.json``) and a quick MlBasic backtest against
   buy-and-hold over the test period;
8. atomic registration: the bundle is written and validated in a staging directory inside the
   registry, renamed into ``<SYMBOL>/<TYPE>/<VERSION>`` in one step, and only then (if asked)
   ``latest`` is switched. A failure or Ctrl-C at any point leaves no version and ``latest``
   untouched (the version id stays used in ``.versions``, so it is never reissued).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from atb_strategies.bundle.format import (
    BundleMetadata,
    FeatureSchema,
    InputSpec,
    OutputSpec,
)
from atb_strategies.bundle.jsonio import write_json
from atb_strategies.data.loaders import inspect_candles, load_ohlcv
from atb_strategies.exceptions import ConfigurationError, TrainingError
from atb_strategies.features.candles import OHLCV, validate_candles
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.manage import allocate_version, promote
from atb_strategies.registry.writer import stage_bundle
from atb_strategies.training.dataset import BarSplit, build_parts
from atb_strategies.training.evaluate import evaluate_predictions
from atb_strategies.training.recipes import fit_schema, recipe_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    """What to train. Every field has the CLI option of the same name (``--sequence-length``)."""

    symbol: str
    timeframe: str = "1h"
    model_type: str = "basic"
    start_date: str | None = None
    end_date: str | None = None
    architecture: str = "mlp"
    sequence_length: int = 120
    horizon: int = 1
    epochs: int = 30
    seed: int = 0
    registry: Path = Path("models")
    promote: bool = True
    parity_tolerance: float = 1e-4
    train_fraction: float = 0.7
    val_fraction: float = 0.15
    data_source: str = "dataframe"
    backtest: bool = True

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("sequence_length", self.sequence_length >= 2, "an integer >= 2"),
            ("horizon", self.horizon >= 1, "an integer >= 1"),
            ("parity_tolerance", self.parity_tolerance >= 0, "a number >= 0"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ConfigurationError(
                    f"The {name!r} parameter of TrainingConfig must be {what}. "
                    f"Got {getattr(self, name)!r} instead."
                )


@dataclass
class TrainingResult:
    """The registered version and what was measured."""

    version: str
    path: Path
    metrics: dict[str, Any]
    promoted: bool
    timings: dict[str, float] = field(default_factory=dict)


def model_family(name: str) -> Any:
    """The model family called ``name`` (``mlp``; ``gru`` with the torch extra)."""
    if name == "mlp":
        try:
            import skl2onnx  # noqa: F401
            import sklearn  # noqa: F401

            from atb_strategies.training.mlp import MlpFamily
        except ImportError as e:
            raise ConfigurationError(
                f"Training needs the train extra ({e.name} is missing): pip install -e '.[train]'."
            ) from e
        return MlpFamily()
    if name == "gru":
        try:
            from atb_strategies.training.gru import GruFamily
        except ImportError as e:
            raise ConfigurationError(
                "Architecture 'gru' needs PyTorch: pip install -e '.[torch]' "
                "(torch==2.13.0, CPU build)."
            ) from e
        return GruFamily()
    raise ConfigurationError(f"Unknown architecture {name!r}; choose 'mlp' or 'gru'.")


def _slice(frame: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    out = frame
    if start is not None:
        out = out.loc[pd.Timestamp(start) :]
    if end is not None:
        stop = pd.Timestamp(end)
        if stop == stop.normalize():
            stop = stop + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
        out = out.loc[:stop]
    return out


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("numpy", "pandas", "onnxruntime", "onnx", "scikit-learn", "skl2onnx", "torch"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _onnx_predict(model_bytes: bytes, X: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: X[i : i + 4096]})[0] for i in range(0, len(X), 4096)]
    return np.concatenate(out).reshape(len(X)).astype(np.float64)


def _causality_check(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    model_bytes: bytes,
    end_index: np.ndarray,
    full: np.ndarray,
) -> int:
    """Recompute predictions at a few test bars from history truncated right after them."""
    pipe = FeaturePipeline(schema)
    cols = {c: frame[c].to_numpy(dtype=np.float64) for c in pipe.columns}
    picks = np.unique(np.linspace(0, len(end_index) - 1, num=min(8, len(end_index))).astype(int))
    for k in picks:
        e = int(end_index[k])
        part = pipe.batch_windows({c: v[: e + 1] for c, v in cols.items()}, start=e)
        again = _onnx_predict(model_bytes, part.windows[-1:].astype(np.float32))[0]
        if again != full[k]:
            raise TrainingError(
                f"Causality check failed at bar {frame.index[e]}: the prediction from history "
                f"ending there is {again!r}, but the full-series run gave {full[k]!r}. Some "
                "feature uses bars after the decision bar; the model is not registered."
            )
    return len(picks)


def _quick_backtest(
    registry: Path,
    frame: pd.DataFrame,
    config: TrainingConfig,
    test_start: pd.Timestamp,
    version: str,
) -> dict[str, Any]:
    from atb_strategies.backtest.runner import run_backtest
    from atb_strategies.registry.shared import forget_registry
    from atb_strategies.strategies.ml_basic import MlBasic

    try:
        result = run_backtest(
            frame,
            MlBasic,
            symbol=config.symbol,
            timeframe=config.timeframe,
            start=test_start,
            registry=str(registry),
            model_type=config.model_type,
            version=version,
            gap_policy="warn",
            record_decisions=False,
        )
    finally:
        forget_registry(registry)  # the staging root is about to move away
    return result.summary


def train_model(config: TrainingConfig, candles: pd.DataFrame) -> TrainingResult:
    """Train, gate, evaluate and register a model on ``candles`` (indexed by time).

    Raises
    ------
    TrainingError
        Parity or causality gate failed (nothing registered).
    ConfigurationError, CandleDataError
        Bad settings or data (nothing registered).
    """
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    family = model_family(config.architecture)
    recipe = recipe_for(config.model_type)
    needed = list(OHLCV) + sorted({c for f in recipe for c in f.source} - set(OHLCV))
    frame = _slice(candles, config.start_date, config.end_date)
    frame = validate_candles(
        frame,
        columns=needed,
        timeframe=config.timeframe,
        gap_policy="allow",
        what=f"training candles for {config.symbol}",
    )
    report = inspect_candles(frame, config.timeframe)
    for line in report.lines():
        log.info("data: %s", line)
    split = BarSplit.by_fraction(len(frame), config.train_fraction, config.val_fraction)
    cols = {c: frame[c].to_numpy(dtype=np.float64) for c in needed}
    schema = fit_schema(recipe, config.sequence_length, cols, split.train_end)
    parts = build_parts(frame, schema, split, config.horizon)
    parts = _drop_gap_samples(parts, frame, schema, config)
    for name, part in parts.items():
        if len(part) < 10:
            raise ConfigurationError(
                f"The {name} part has {len(part)} samples left after dropping those that span "
                "gaps in the candles; fill the gaps or train on a longer period."
            )
    for name, part in parts.items():
        log.info("%s: %d samples, %s .. %s", name, len(part), part.stamps[0], part.stamps[-1])

    t0 = time.perf_counter()
    fitted = family.fit(
        parts["train"].X,
        parts["train"].y,
        parts["val"].X,
        parts["val"].y,
        seed=config.seed,
        epochs=config.epochs,
    )
    timings["fit_seconds"] = time.perf_counter() - t0

    model_bytes = family.to_onnx(fitted, config.sequence_length, len(schema.features))
    test = parts["test"]
    framework_pred = family.predict(fitted, test.X)
    onnx_pred = _onnx_predict(model_bytes, test.X)
    parity = float(np.max(np.abs(framework_pred - onnx_pred)))
    log.info(
        "export parity: max |framework - onnx| = %.3g over %d test windows (tolerance %g)",
        parity,
        len(test),
        config.parity_tolerance,
    )
    if not parity <= config.parity_tolerance:
        raise TrainingError(
            f"ONNX export differs from the trained model by {parity:.3g} (> tolerance "
            f"{config.parity_tolerance:g}) on the test windows; the model is not registered."
        )
    checked = _causality_check(frame, schema, model_bytes, test.end_index, onnx_pred)
    log.info("causality check: %d truncated-history predictions identical", checked)

    train_drift = float(parts["train"].y.mean())
    metrics: dict[str, Any] = {
        "target": "log_return",
        "horizon": config.horizon,
        "test_period": [str(test.stamps[0]), str(test.stamps[-1])],
        "test": evaluate_predictions(onnx_pred, test.close, test.future_close, train_drift),
        "export_parity_max_abs_diff": parity,
        "causality_checks": checked,
    }

    layout = RegistryLayout(config.registry)
    version = allocate_version(layout, config.symbol, config.model_type, config.timeframe)
    metadata = BundleMetadata(
        symbol=config.symbol,
        model_type=config.model_type,
        timeframe=config.timeframe,
        version=version,
        input=InputSpec("features", "float32", config.sequence_length, len(schema.features)),
        output=OutputSpec(
            "log_return",
            config.horizon,
            "prediction",
            confidence_return_scale=_confidence_scale(parts["train"].y),
        ),
        model_sha256=None,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        framework=family.framework,
        raw={"training": _lineage(config, frame, parts, report, timings, parity, family)},
    )
    with stage_bundle(
        config.registry,
        metadata,
        schema,
        model_bytes,
        extra_files={family.framework_file: family.serialize(fitted)},
    ) as staged:
        if config.backtest:
            t0 = time.perf_counter()
            metrics["backtest"] = _quick_backtest(
                staged.staging_root, frame, config, test.stamps[0], version
            )
            timings["backtest_seconds"] = time.perf_counter() - t0
        timings["total_seconds"] = time.perf_counter() - t_all
        metrics["timings"] = timings
        write_json(staged.path / "metrics.json", metrics)
        final = staged.commit()
    promoted = False
    if config.promote:
        promote(layout, config.symbol, config.model_type, version)
        promoted = True
    log.info(
        "registered %s/%s@%s%s",
        config.symbol,
        config.model_type,
        version,
        " and moved latest" if promoted else "",
    )
    return TrainingResult(version, final, metrics, promoted, timings)


def _confidence_scale(y_train: np.ndarray) -> float:
    """Predicted |return| that maps to confidence 1: the 90th percentile of |train returns|."""
    return float(np.quantile(np.abs(y_train), 0.9)) or 0.01


def _drop_gap_samples(
    parts: dict, frame: pd.DataFrame, schema: FeatureSchema, config: TrainingConfig
) -> dict:
    """Remove samples whose window, warm-up or target spans a gap in the candles."""
    from atb_strategies.features.candles import timeframe_to_timedelta
    from atb_strategies.training.dataset import Part

    stamps = frame.index.as_unit("ns").asi8
    step = timeframe_to_timedelta(config.timeframe).value
    gap_after = np.flatnonzero(np.diff(stamps) > step)  # gap between bar g and g+1
    if len(gap_after) == 0:
        return parts
    out = {}
    for name, part in parts.items():
        lo = part.end_index - (schema.min_bars - 1)
        hi = part.end_index + config.horizon
        spans = np.zeros(len(part), dtype=bool)
        for g in gap_after:
            spans |= (lo <= g) & (g < hi)
        keep = ~spans
        if not keep.all():
            log.info("%s: dropped %d samples spanning a gap", name, int((~keep).sum()))
        out[name] = Part(
            part.X[keep],
            part.y[keep],
            part.end_index[keep],
            part.close[keep],
            part.future_close[keep],
            part.stamps[keep],
        )
    return out


def _lineage(
    config: TrainingConfig,
    frame: pd.DataFrame,
    parts: dict,
    report: Any,
    timings: dict,
    parity: float,
    family: Any,
) -> dict[str, Any]:
    cfg = asdict(config)
    cfg["registry"] = str(config.registry)
    return {
        "config": cfg,
        "data": {
            "source": config.data_source,
            "first_bar": str(frame.index[0]),
            "last_bar": str(frame.index[-1]),
            "rows": len(frame),
            "gaps": len(report.gaps),
            "zero_volume_bars": len(report.zero_volume),
        },
        "samples": {
            name: {"count": len(p), "first": str(p.stamps[0]), "last": str(p.stamps[-1])}
            for name, p in parts.items()
        },
        "architecture": family.name,
        "seed": config.seed,
        "libraries": _library_versions(),
        "export_parity_max_abs_diff": parity,
        "target_scaling": "fitted on train targets; undone inside the ONNX graph",
    }


def train_from_file(config: TrainingConfig, path: Path | str) -> TrainingResult:
    """``train_model`` on candles loaded (and validated) from a CSV/parquet/feather file."""
    frame = load_ohlcv(path, timeframe=config.timeframe)
    from dataclasses import replace

    return train_model(replace(config, data_source=str(path)), frame)
