"""Stage 7, register: a new version of the registry, atomically, then (if asked) ``latest``.

The version id is allocated (and burned in ``.versions``, so it is never reissued), the bundle
is written and validated in a staging registry inside the registry
(``atb_strategies.registry.writer.stage_bundle``), the quick backtest runs on that staged
registry, ``metrics.json`` is written, and the version directory is renamed into
``<SYMBOL>/<TYPE>/<VERSION>`` in one step. Only then is ``latest`` switched. A failure or Ctrl-C
at any point leaves no version and ``latest`` untouched.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atb_strategies.bundle.format import BundleMetadata, FeatureSchema, InputSpec, OutputSpec
from atb_strategies.bundle.jsonio import write_json
from atb_strategies.bundle.loader import load_bundle_spec
from atb_strategies.features.calendar import ALWAYS_OPEN, get_calendar
from atb_strategies.features.drift import METADATA_KEY, DriftReference
from atb_strategies.inference.bundle import ModelBundle
from atb_strategies.inference.certificate import (
    CERTIFICATE_FILE,
    certificate_bytes,
    pick_windows,
)
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.manage import allocate_version, promote
from atb_strategies.registry.writer import stage_bundle
from atb_strategies.training.config import TrainingConfig
from atb_strategies.training.data import CandleData
from atb_strategies.training.dataset import Part
from atb_strategies.training.family import ModelFamily
from atb_strategies.training.gates import GateResult
from atb_strategies.training.lineage import training_lineage
from atb_strategies.training.logger import log
from atb_strategies.training.quick_backtest import quick_backtest
from atb_strategies.training.timing import Stopwatch


@dataclass(frozen=True)
class Candidate:
    """A trained model that passed the gates: what gets registered.

    ``drift`` (the train part's feature and prediction distributions) is written to
    ``metadata.json`` ``drift_reference``; None writes nothing. ``choices`` (architecture asked
    for, family trained, recipe, calibration, what validation selected) join the lineage.
    """

    family: ModelFamily
    fitted: Any
    schema: FeatureSchema
    gates: GateResult
    drift: DriftReference | None = None
    choices: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    """The registered version, its directory, and whether ``latest`` now points at it.

    A version that fails the baseline gate (``metrics["gate"]``) is registered (it is a record)
    but ``latest`` moves to it only with ``config.force_promote``.
    """

    version: str
    path: Path
    promoted: bool


def confidence_scale(y_train: np.ndarray) -> float:
    """Predicted |return| that maps to confidence 1: the 90th percentile of |train returns|."""
    return float(np.quantile(np.abs(y_train), 0.9)) or 0.01


def output_spec(config: TrainingConfig, parts: dict[str, Part]) -> OutputSpec:
    """The log return (regression) or the ``[down, up]`` probabilities (``direction``)."""
    if config.target == "direction":
        return OutputSpec(
            "class_probabilities", config.horizon, "prediction", classes=("down", "up")
        )
    return OutputSpec(
        "log_return",
        config.horizon,
        "prediction",
        confidence_return_scale=confidence_scale(parts["train"].y),
    )


def bundle_metadata(
    config: TrainingConfig,
    version: str,
    candidate: Candidate,
    data: CandleData,
    parts: dict[str, Part],
) -> BundleMetadata:
    """``metadata.json`` of the new version (the checksum is filled in when it is staged)."""
    schema = candidate.schema
    raw: dict[str, Any] = {
        "training": {
            **training_lineage(config, data, parts, candidate.gates.parity, candidate.family.name),
            **candidate.choices,
        }
    }
    if candidate.drift is not None:
        raw[METADATA_KEY] = candidate.drift.to_dict()
    calendar = get_calendar(config.calendar).name  # a csv: path made absolute
    if calendar != ALWAYS_OPEN:  # absent means 24/7 (features.calendar)
        raw["calendar"] = calendar
    return BundleMetadata(
        symbol=config.symbol,
        model_type=config.model_type,
        timeframe=config.timeframe,
        version=version,
        input=InputSpec("features", "float32", config.sequence_length, len(schema.features)),
        output=output_spec(config, parts),
        model_sha256=None,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        framework=candidate.family.framework,
        raw=raw,
    )


def null_if_undefined(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON ``null``), recursively.

    A statistic that is undefined for this model (a Diebold-Mariano statistic when the model's
    errors equal a baseline's, as for a model calibrated to the train mean) is recorded as
    ``null`` in ``metrics.json`` rather than refusing the whole version.
    """
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: null_if_undefined(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [null_if_undefined(v) for v in value]
    return value


def write_parity_certificate(path: Path, test_windows: np.ndarray) -> None:
    """Store test windows and this machine's ONNX outputs for them in the staged bundle
    (``inference.certificate``), computed by the runner that will serve them."""
    bundle = ModelBundle(load_bundle_spec(path), {})
    windows = pick_windows(test_windows.astype(np.float32))
    outputs = bundle.runner.run_raw(windows)
    (path / CERTIFICATE_FILE).write_bytes(certificate_bytes(windows, outputs))


def register_model(
    config: TrainingConfig,
    candidate: Candidate,
    data: CandleData,
    parts: dict[str, Part],
    metrics: dict[str, Any],
    clock: Stopwatch,
) -> Registration:
    """Register ``candidate`` as a new version; promote it when ``config.promote``.

    ``metrics`` gains ``backtest`` (when ``config.backtest``) and ``timings`` (``clock``'s,
    finished just before ``metrics.json`` is written).
    """
    layout = RegistryLayout(config.registry)
    version = allocate_version(layout, config.symbol, config.model_type, config.timeframe)
    metadata = bundle_metadata(config, version, candidate, data, parts)
    family = candidate.family
    with stage_bundle(
        config.registry,
        metadata,
        candidate.schema,
        candidate.gates.model_bytes,
        extra_files={family.framework_file: family.serialize(candidate.fitted)},
    ) as staged:
        if config.backtest:
            with clock.measure("backtest_seconds"):
                metrics["backtest"] = quick_backtest(
                    staged.staging_root, data.frame, config, parts["test"].stamps[0], version
                )
        metrics["timings"] = clock.finish()
        write_json(staged.path / "metrics.json", null_if_undefined(metrics))
        write_parity_certificate(staged.path, parts["test"].X)
        final = staged.commit()
    promoted = False
    gate = metrics.get("gate", {"passed": True, "reasons": []})
    if config.promote and (gate["passed"] or config.force_promote):
        promote(layout, config.symbol, config.model_type, version)
        promoted = True
    log.info(
        "registered %s/%s@%s%s",
        config.symbol,
        config.model_type,
        version,
        " and moved latest" if promoted else "",
    )
    if config.promote and not gate["passed"]:
        why = "; ".join(gate["reasons"])
        if promoted:
            log.warning("baseline gate failed (%s); latest moved anyway (force_promote)", why)
        else:
            log.warning(
                "baseline gate failed: %s. latest did not move; pass force_promote=True to move "
                "it anyway",
                why,
            )
    return Registration(version, final, promoted)
