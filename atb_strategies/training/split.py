"""Stage 3, split: chronological train / validation / test parts, without gap-spanning samples.

``time_split`` fixes the bar boundaries (the features stage fits its scalers on the train bars);
``split_samples`` then builds each part's windows and targets (``dataset.build_parts``), drops
the samples whose window, warm-up or target spans a gap in the candles, and checks that every
part keeps enough samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atb_strategies.bundle.format import FeatureSchema
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features.calendar import get_calendar, suggest_calendar
from atb_strategies.features.candles import find_gaps
from atb_strategies.training.config import TrainingConfig
from atb_strategies.training.dataset import BarSplit, Part, build_parts
from atb_strategies.training.logger import log

#: Fewest samples a part may keep after gap-spanning samples are dropped.
MIN_PART_SAMPLES = 10


def time_split(n_bars: int, config: TrainingConfig) -> BarSplit:
    """Bar boundaries of the parts: ``config.split`` when given, else from ``train_fraction``
    and ``val_fraction``."""
    if config.split is not None:
        train_end, val_end, test_start = config.split
        if not 0 < train_end < val_end <= test_start < n_bars:
            raise ConfigurationError(
                f"The 'split' parameter of TrainingConfig must satisfy 0 < train_end < val_end "
                f"<= test_start < {n_bars} bars. Got {config.split!r} instead."
            )
        return BarSplit(n_bars, train_end, val_end, test_start, test_uses_history=True)
    return BarSplit.by_fraction(n_bars, config.train_fraction, config.val_fraction)


def drop_gap_samples(
    parts: dict[str, Part],
    frame: pd.DataFrame,
    schema: FeatureSchema,
    timeframe: str,
    horizon: int,
    calendar: str | None = None,
) -> dict[str, Part]:
    """Remove samples whose window, warm-up or target spans a gap in the candles (in trading
    time: a closure of ``calendar`` is no gap)."""
    stamps = frame.index.as_unit("ns").asi8
    after, _ = find_gaps(
        stamps,
        timeframe,
        what="training candles",
        label=lambda i: f"row {i} ({frame.index[i]})",
        calendar=get_calendar(calendar),
    )
    gap_after = after - 1  # gap between bar g and g+1
    if len(gap_after) == 0:
        return parts
    out = {}
    for name, part in parts.items():
        lo = part.end_index - (schema.min_bars - 1)
        hi = part.end_index + horizon
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
            int((~keep).sum()),
        )
    return out


def split_samples(
    frame: pd.DataFrame, schema: FeatureSchema, split: BarSplit, config: TrainingConfig
) -> dict[str, Part]:
    """The ``train``, ``val`` and ``test`` parts of ``frame``, gap-spanning samples removed.

    Raises
    ------
    ConfigurationError
        If a part has fewer than ``MIN_PART_SAMPLES`` samples.
    """
    parts = build_parts(frame, schema, split, config.horizon)
    parts = drop_gap_samples(
        parts, frame, schema, config.timeframe, config.horizon, config.calendar
    )
    for name, part in parts.items():
        if len(part) < MIN_PART_SAMPLES:
            hint = None
            if get_calendar(config.calendar).always_open:
                hint = suggest_calendar(frame.index.as_unit("ns").asi8, config.timeframe)
            raise ConfigurationError(
                f"The {name} part has {len(part)} samples left after dropping those that span "
                "gaps in the candles; "
                + (
                    f"{hint}."
                    if hint
                    else "fill the gaps or train on a longer period (if the gaps are a market's "
                    "closures, pass its calendar, e.g. calendar='XNYS')."
                )
            )
    for name, part in parts.items():
        log.info("%s: %d samples, %s .. %s", name, len(part), part.stamps[0], part.stamps[-1])
    return parts
