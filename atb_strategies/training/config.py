"""What to train (``TrainingConfig``) and what came out (``TrainingResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from atb_strategies.exceptions import ConfigurationError

#: Architectures trained without calibration unless asked (``calibrate=True``): the shipped
#: ``mlp`` default and ``gru`` keep training exactly as they did before calibration existed.
UNCALIBRATED_BY_DEFAULT = frozenset({"mlp", "gru"})

#: ``sequence_length`` when none is given: intraday bars, and daily or longer bars.
SEQUENCE_LENGTH_INTRADAY = 120
SEQUENCE_LENGTH_DAILY = 30


def default_sequence_length(timeframe: str) -> int:
    """The input window when none is given: 120 bars intraday (as ever on ``1h``), 30 bars for
    daily or longer bars (six trading weeks), so that a daily model predicts from about its
    50th bar (the window plus the recipe's 20-bar warm-up) instead of after half a year."""
    from atb_strategies.features.candles import timeframe_to_timedelta

    daily = timeframe_to_timedelta(timeframe) >= pd.Timedelta(days=1)
    return SEQUENCE_LENGTH_DAILY if daily else SEQUENCE_LENGTH_INTRADAY


@dataclass(frozen=True)
class TrainingConfig:
    """What to train. Every field has the CLI option of the same name (``--sequence-length``)."""

    symbol: str
    timeframe: str = "1h"
    model_type: str = "basic"
    start_date: str | None = None
    end_date: str | None = None
    architecture: str = "mlp"
    #: Feature set (``training.recipes``: ``price`` or ``lags``); None: the architecture's
    #: default (``price`` for mlp/gru, ``lags`` for ridge/lightgbm/auto).
    recipe: str | None = None
    #: What the model predicts: ``log_return`` (regression) or ``direction`` (class
    #: probabilities [down, up]; ``ridge`` and ``lightgbm`` only; ``training.direction``).
    target: str = "log_return"
    #: Shrink predictions toward the train mean by the validation slope (``training.calibrate``);
    #: None: off for mlp/gru (which thus train exactly as before), on for the other families.
    calibrate: bool | None = None
    #: Bars in each input window, at least 2 (a window of 1 bar has no sequence); None: the
    #: timeframe's default (``default_sequence_length``: 120 intraday, 30 daily), resolved
    #: here, so the field always holds an ``int`` after construction.
    sequence_length: int | None = None
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
    #: Move ``latest`` even when the baseline gate fails (``--force-promote``).
    force_promote: bool = False
    #: Explicit bar boundaries ``(train_end, val_end, test_start)`` within the candles given
    #: (walk-forward folds); None: ``train_fraction``/``val_fraction``. With it, test windows
    #: may read bars before ``test_start`` (their past).
    split: tuple[int, int, int] | None = None
    #: Extra lineage recorded under ``metadata.json`` ``training`` (fold, walk_forward_id...).
    lineage: dict[str, Any] = field(default_factory=dict)
    #: Bootstrap resamples for the edge's confidence interval.
    bootstrap_reps: int = 1000
    #: The market's trading calendar (``--calendar``; ``features.calendar``): ``"24/7"``,
    #: ``"weekdays"``, an exchange code such as ``"XNYS"`` or ``"csv:PATH"``. Recorded in
    #: the bundle; a closure is not a gap.
    calendar: str = "24/7"

    @property
    def calibrated(self) -> bool:
        """Whether predictions are calibrated (``calibrate``, or the architecture's default)."""
        if self.calibrate is not None:
            return self.calibrate
        return self.architecture not in UNCALIBRATED_BY_DEFAULT

    def __post_init__(self) -> None:
        if self.sequence_length is None:
            object.__setattr__(self, "sequence_length", default_sequence_length(self.timeframe))
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("sequence_length", int(self.sequence_length or 0) >= 2, "an integer >= 2"),
            ("horizon", self.horizon >= 1, "an integer >= 1"),
            ("parity_tolerance", self.parity_tolerance >= 0, "a number >= 0"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ConfigurationError(
                    f"The {name!r} parameter of TrainingConfig must be {what}. "
                    f"Got {getattr(self, name)!r} instead."
                )
        if self.target == "direction" and self.calibrate is False:
            raise ConfigurationError(
                "The 'calibrate' parameter of TrainingConfig cannot be False for "
                "target='direction': a direction classifier always calibrates its probabilities "
                "(a temperature fitted on the validation part). Leave calibrate unset."
            )


@dataclass
class TrainingResult:
    """The registered version and what was measured."""

    version: str
    path: Path
    metrics: dict[str, Any]
    promoted: bool
    timings: dict[str, float] = field(default_factory=dict)
    #: Per test sample, indexed by decision bar: ``predicted`` and ``actual`` log returns
    #: over the horizon, and the decision bar's ``close``.
    test_predictions: pd.DataFrame | None = None
