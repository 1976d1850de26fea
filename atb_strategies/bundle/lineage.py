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

All times are candle **open** times, like the training frames' index. A date that parses but
lies outside 1678..2261 (pandas' nanosecond range, which the candles use), or a period that
would leave it, raises ``BundleError``: such lineage is corrupt, and the loader checks it when
the bundle is selected so that no backtest or guard meets it later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from atb_strategies.bundle.format import MAX_HORIZON, is_timeframe
from atb_strategies.bundle.safeio import shown
from atb_strategies.exceptions import BundleError
from atb_strategies.features.candles import timeframe_to_timedelta


@dataclass(frozen=True)
class TrainingPeriod:
    """``first`` .. ``seen_until``: bars training read; ``available_from``: first unseen bar."""

    first: pd.Timestamp
    seen_until: pd.Timestamp
    available_from: pd.Timestamp

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in vars(self).items()}


_OUT_OF_RANGE = (ValueError, TypeError, OverflowError, NotImplementedError, AttributeError)


def _bad(path: Path | None, field: str, value: Any) -> BundleError:
    return BundleError(
        f"{path or 'metadata.json'}: lineage field {field!r} is {shown(value)}, not a date "
        "between 1678 and 2261; the bundle's training period cannot be known. Repair "
        "metadata.json or retrain the bundle.",
        path=path,
        field=field,
    )


def _ts(value: Any, path: Path | None, field: str) -> pd.Timestamp | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        stamp = pd.Timestamp(value)
    except _OUT_OF_RANGE:
        return None
    if stamp is pd.NaT:
        return None
    try:
        if stamp.tzinfo:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return stamp.as_unit("ns")
    except _OUT_OF_RANGE as e:
        raise _bad(path, field, value) from e


def training_period(metadata: Mapping[str, Any], path: Path | None = None) -> TrainingPeriod | None:
    """The training period of a bundle from its raw ``metadata.json`` (None when unknown).

    Raises
    ------
    BundleError
        A lineage date is out of range (see the module docstring); ``path`` names the file.
    """
    lineage = metadata.get("training")
    if not isinstance(lineage, Mapping):
        return None
    names = ("first_bar_seen", "seen_until", "available_from")
    explicit = [_ts(lineage.get(k), path, f"training.{k}") for k in names]
    if all(v is not None for v in explicit):
        return TrainingPeriod(*explicit)  # type: ignore[arg-type]
    first, last, test_start = (
        _ts(lineage.get(k), path, f"training.{k}")
        for k in ("train_start", "train_end", "test_start")
    )
    if first is not None and last is not None and test_start is not None:
        return TrainingPeriod(first, last, test_start)
    return _derived(metadata, lineage, path)


def _derived(
    metadata: Mapping[str, Any], lineage: Mapping[str, Any], path: Path | None
) -> TrainingPeriod | None:
    data, samples = lineage.get("data"), lineage.get("samples")
    config = lineage.get("config") if isinstance(lineage.get("config"), Mapping) else {}
    if not isinstance(data, Mapping) or not isinstance(samples, Mapping):
        return None
    val = samples.get("val")
    first = _ts(data.get("first_bar"), path, "training.data.first_bar")
    last_val = (
        _ts(val.get("last"), path, "training.samples.val.last")
        if isinstance(val, Mapping)
        else None
    )
    timeframe = metadata.get("timeframe")
    if first is None or last_val is None or not is_timeframe(timeframe):
        return None
    step = timeframe_to_timedelta(str(timeframe))
    horizon = config.get("horizon", 1)
    if not isinstance(horizon, int) or isinstance(horizon, bool) or not 1 <= horizon <= MAX_HORIZON:
        horizon = 1
    try:
        seen_until = last_val + horizon * step
        return TrainingPeriod(first, seen_until, (seen_until + step).as_unit("ns"))
    except _OUT_OF_RANGE as e:
        raise _bad(path, "training.samples.val.last", val.get("last")) from e  # type: ignore[union-attr]
