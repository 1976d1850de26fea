"""What a bundle was trained on and with (``metadata.json`` ``training``)."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import platform
from dataclasses import asdict
from typing import Any

import pandas as pd

from atb_strategies.features.candles import timeframe_to_timedelta
from atb_strategies.training.config import TrainingConfig
from atb_strategies.training.data import CandleData
from atb_strategies.training.dataset import Part

#: Distributions whose versions are recorded (those installed).
LIBRARIES = (
    "numpy",
    "pandas",
    "onnxruntime",
    "onnx",
    "scikit-learn",
    "skl2onnx",
    "lightgbm",
    "onnxmltools",
    "torch",
)


def library_versions() -> dict[str, str]:
    """Python's version and those of the installed ``LIBRARIES``."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def training_lineage(
    config: TrainingConfig,
    data: CandleData,
    parts: dict[str, Part],
    parity: float,
    architecture: str,
) -> dict[str, Any]:
    """Settings, data, samples per part, architecture, seed and library versions."""
    cfg = asdict(config)
    cfg["registry"] = str(config.registry)
    cfg.pop("lineage")
    frame = data.frame
    return {
        "config": cfg,
        "data": {
            "source": config.data_source,
            "first_bar": str(frame.index[0]),
            "last_bar": str(frame.index[-1]),
            "rows": len(frame),
            "gaps": len(data.report.gaps),
            "zero_volume_bars": len(data.report.zero_volume),
        },
        "samples": {
            name: {
                "count": len(p),
                "first": str(p.stamps[0]),
                "last": str(p.stamps[-1]),
                "dropped_for_gaps": p.dropped_for_gaps,
            }
            for name, p in parts.items()
        },
        "architecture": architecture,
        "seed": config.seed,
        "libraries": library_versions(),
        "export_parity_max_abs_diff": parity,
        **_period(config, frame, parts),
        **config.lineage,
        "target_scaling": "fitted on train targets; undone inside the ONNX graph",
    }


def _period(config: TrainingConfig, frame: pd.DataFrame, parts: dict[str, Part]) -> dict[str, str]:
    """``first_bar_seen``, ``seen_until`` (the last validation target) and ``available_from``
    (the first bar after it; with an explicit split, the test part's first bar), read by
    ``bundle.lineage.training_period``."""
    last_target = int(parts["val"].end_index.max()) + config.horizon
    seen_until = frame.index[min(last_target, len(frame) - 1)]
    if config.split is not None:
        available = frame.index[config.split[2]]
    else:
        available = seen_until + timeframe_to_timedelta(config.timeframe)
    return {
        "first_bar_seen": str(frame.index[0]),
        "seen_until": str(seen_until),
        "available_from": str(available),
    }
