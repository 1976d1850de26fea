"""Stage 1, data: the candles trained on, limited to the configured period, validated, inspected."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from atb_strategies.data.loaders import CandleReport, inspect_candles
from atb_strategies.data.periods import naive_utc, period_end
from atb_strategies.features.calendar import get_calendar
from atb_strategies.features.candles import validate_candles
from atb_strategies.training.config import TrainingConfig
from atb_strategies.training.logger import log


@dataclass(frozen=True)
class CandleData:
    """Validated training candles.

    Attributes
    ----------
    frame : pandas.DataFrame
        The candles of ``[start_date, end_date]``, indexed by time.
    columns : dict of str to numpy.ndarray
        The columns the features read, as float64 arrays.
    report : CandleReport
        Gaps and zero-volume bars found in ``frame``.
    """

    frame: pd.DataFrame
    columns: dict[str, np.ndarray]
    report: CandleReport


def slice_period(frame: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    """Rows from ``start`` to ``end`` (``data.periods``: an ``end`` given as a bare date
    includes that whole day, one with a time ends at that instant)."""
    out = frame
    if start is not None:
        out = out.loc[naive_utc(start) :]
    if end is not None:
        out = out.loc[: period_end(end)]
    return out


def prepare_candles(candles: pd.DataFrame, config: TrainingConfig, needed: list[str]) -> CandleData:
    """Slice ``candles`` to the configured period, validate the ``needed`` columns, log findings.

    Raises
    ------
    CandleDataError
        If the candles are not valid (gaps are allowed; they are reported and handled later).
    """
    frame = validate_candles(
        slice_period(candles, config.start_date, config.end_date),
        columns=needed,
        timeframe=config.timeframe,
        gap_policy="allow",
        what=f"training candles for {config.symbol}",
        calendar=get_calendar(config.calendar),
    )
    report = inspect_candles(frame, config.timeframe, calendar=config.calendar)
    for line in report.lines():
        log.info("data: %s", line)
    columns = {c: frame[c].to_numpy(dtype=np.float64) for c in needed}
    return CandleData(frame, columns, report)
