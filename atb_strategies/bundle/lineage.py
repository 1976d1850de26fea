"""What a bundle's training saw, read from its lineage (``metadata.json`` ``training``).

``training_period(metadata)`` gives the first bar training read, the last bar whose value
training or model selection saw (the last validation target), and the first bar the version
may serve without having seen it (``available_from``). Backtests use it to split in-sample from
out-of-sample bars; ``version="asof"`` to pick, at each bar, the newest version already
available then.

* Versions written by ``atb train model`` since this field exists record ``seen_until`` and
  ``available_from`` explicitly; older ones are derived from ``data.first_bar``, the validation
  part's last sample and the horizon.
* Walk-forward folds record ``train_start``, ``train_end`` and ``test_start``: a fold becomes
  available at its test period's first bar (after the embargo).
* Reference-project bundles have no usable lineage: ``None`` ("training period unknown").

All times are candle **open** times, like the training frames' index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from atb_strategies.features.candles import timeframe_to_timedelta


@dataclass(frozen=True)
class TrainingPeriod:
    """``first`` .. ``seen_until``: bars training read; ``available_from``: first unseen bar."""

    first: pd.Timestamp
    seen_until: pd.Timestamp
    available_from: pd.Timestamp

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in vars(self).items()}


def _ts(value: Any) -> pd.Timestamp | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


def training_period(metadata: Mapping[str, Any]) -> TrainingPeriod | None:
    """The training period of a bundle from its raw ``metadata.json`` (None when unknown)."""
    lineage = metadata.get("training")
    if not isinstance(lineage, Mapping):
        return None
    explicit = [_ts(lineage.get(k)) for k in ("first_bar_seen", "seen_until", "available_from")]
    if all(v is not None for v in explicit):
        return TrainingPeriod(*explicit)  # type: ignore[arg-type]
    first, last, test_start = (
        _ts(lineage.get(k)) for k in ("train_start", "train_end", "test_start")
    )
    if first is not None and last is not None and test_start is not None:
        return TrainingPeriod(first, last, test_start)
    return _derived(metadata, lineage)


def _derived(metadata: Mapping[str, Any], lineage: Mapping[str, Any]) -> TrainingPeriod | None:
    data, samples = lineage.get("data"), lineage.get("samples")
    config = lineage.get("config") if isinstance(lineage.get("config"), Mapping) else {}
    if not isinstance(data, Mapping) or not isinstance(samples, Mapping):
        return None
    val = samples.get("val")
    first = _ts(data.get("first_bar"))
    last_val = _ts(val.get("last")) if isinstance(val, Mapping) else None
    timeframe = metadata.get("timeframe")
    if first is None or last_val is None or not isinstance(timeframe, str):
        return None
    step = timeframe_to_timedelta(timeframe)
    horizon = config.get("horizon", 1) if isinstance(config.get("horizon", 1), int) else 1
    seen_until = last_val + horizon * step
    return TrainingPeriod(first, seen_until, seen_until + step)
