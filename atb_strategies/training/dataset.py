"""Training datasets: windows from the runtime feature pipeline, targets, chronological split.

Bars are split in time: train ``[0, a)``, validation ``[a, b)``, test ``[b, n)``. A sample (the
window ending at bar ``e``, target at ``e + horizon``) belongs to a part only if its whole window
*including feature warm-up* and its target lie inside that part, so consecutive parts are
separated by at least ``warmup + sequence_length`` bars and no bar feeds two parts. Scaler
parameters are fitted on train bars only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from atb_strategies.bundle.format import FeatureSchema
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features.pipeline import FeaturePipeline


@dataclass(frozen=True)
class BarSplit:
    """Bar boundaries: train ``[0, train_end)``, val ``[train_end, val_end)``, test
    ``[test_start, n_bars)`` (``test_start`` defaults to ``val_end``; bars between are an
    embargo that feeds no part).

    ``test_uses_history``: a validation or test sample's window may read bars before its part
    (the past of its decision bar, as in deployment; walk-forward folds, whose parts are
    short), while its decision bar and target lie in the part. Otherwise the whole window lies
    in the part too. Training samples always lie wholly in the training part, so no training
    target reaches into a later part either way.
    """

    n_bars: int
    train_end: int
    val_end: int
    test_start: int | None = None
    test_uses_history: bool = False

    @classmethod
    def by_fraction(cls, n_bars: int, train: float = 0.7, val: float = 0.15) -> BarSplit:
        if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
            raise ConfigurationError(
                f"Split fractions must be in (0, 1) and leave room for a test part. "
                f"Got train={train!r}, val={val!r} instead."
            )
        return cls(n_bars, int(n_bars * train), int(n_bars * (train + val)))

    def parts(self) -> dict[str, tuple[int, int]]:
        return {
            "train": (0, self.train_end),
            "val": (self.train_end, self.val_end),
            "test": (self.val_end if self.test_start is None else self.test_start, self.n_bars),
        }


@dataclass(frozen=True)
class Part:
    """One part of the dataset: float32 windows, float64 log-return targets, and context."""

    X: np.ndarray
    y: np.ndarray
    end_index: np.ndarray
    close: np.ndarray
    future_close: np.ndarray
    stamps: pd.DatetimeIndex
    #: Samples of this part dropped because their window, warm-up or target spans a gap.
    dropped_for_gaps: int = 0

    def __len__(self) -> int:
        return len(self.y)


def build_parts(
    frame: pd.DataFrame, schema: FeatureSchema, split: BarSplit, horizon: int
) -> dict[str, Part]:
    """Windows and next-``horizon`` log-return targets for each part of ``split``."""
    pipe = FeaturePipeline(schema)
    cols = {c: frame[c].to_numpy(dtype=np.float64) for c in pipe.columns}
    batch = pipe.batch_windows(cols)
    close = cols["close"]
    end = batch.end_index
    start = end - (pipe.min_bars - 1)
    target_at = end + horizon
    out = {}
    for name, (lo, hi) in split.parts().items():
        first = end if name != "train" and split.test_uses_history else start
        mask = (first >= lo) & (start >= 0) & (target_at < hi)
        idx = np.flatnonzero(mask)
        if len(idx) < 10:
            raise ConfigurationError(
                f"The {name} part has {len(idx)} samples (bars {lo}..{hi - 1}); each sample "
                f"needs {pipe.min_bars} bars plus {horizon} ahead. Train on a longer period."
            )
        e = end[idx]
        out[name] = Part(
            X=batch.windows[idx].astype(np.float32),
            y=np.log(close[e + horizon] / close[e]),
            end_index=e,
            close=close[e],
            future_close=close[e + horizon],
            stamps=frame.index[e],
        )
    return out
