"""Each cell's per-bar returns, kept compactly in its cell file, and the sweep's bars x cells
matrix of them (what ``overfitting`` and ``walkforward`` read; no cell is run again).

A cell's record holds ``returns``: its bars' open times (epoch seconds, delta-encoded) and its
per-bar simple returns (``value_t / value_{t-1} - 1`` of the backtest's equity curve, 0 on the
first bar), both as zlib-compressed base64 (a flat cell compresses to almost nothing), and its
``net_exposure``: the mean over its bars of the signed fraction of its value held in positions
(long positive, short negative), which scales its buy-and-hold benchmark.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

#: The encoding of ``returns`` in a cell record.
RETURNS_FORMAT = "zlib-base64-v1"


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(values.tobytes(), 6)).decode("ascii")


def _unpack(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype)


def encode_returns(equity: pd.DataFrame) -> dict[str, Any]:
    """The ``returns`` block of a cell record from a backtest's equity curve (columns
    ``value``, ``invested``, ``long``, ``short``; indexed by candle open time)."""
    values = equity["value"].to_numpy(dtype=np.float64)
    returns = np.zeros(len(values))
    if len(values) > 1:
        returns[1:] = values[1:] / values[:-1] - 1
    seconds = pd.DatetimeIndex(equity.index).as_unit("s").asi8.astype("<i8")
    side = equity["long"].astype(float).to_numpy() - equity["short"].astype(float).to_numpy()
    net = equity["invested"].to_numpy(dtype=np.float64) * side
    return {
        "format": RETURNS_FORMAT,
        "bars": len(values),
        "times": _pack(np.diff(seconds, prepend=0).astype("<i8")),
        "returns": _pack(returns.astype("<f8")),
        "net_exposure": float(net.mean()) if len(net) else 0.0,
    }


def decode_returns(block: Mapping[str, Any]) -> pd.Series:
    """The per-bar returns of a ``returns`` block, indexed by open time (UTC-naive, as the
    candles)."""
    seconds = np.cumsum(_unpack(block["times"], "<i8"))
    values = _unpack(block["returns"], "<f8")
    index = pd.DatetimeIndex(pd.to_datetime(seconds, unit="s"), name="time")
    return pd.Series(values, index=index)


def returns_matrix(records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Bars x cells: the returns of every record (cell name -> record) that has them, on the
    bars they all share (cells of different symbols or periods meet on their common bars)."""
    series = {
        name: decode_returns(record["returns"])
        for name, record in records.items()
        if isinstance(record.get("returns"), Mapping)
    }
    if not series:
        return pd.DataFrame()
    return pd.concat(series, axis=1, join="inner").sort_index()


def benchmark_matrix(
    returns: pd.DataFrame,
    records: Mapping[str, Mapping[str, Any]],
    closes: Mapping[str, pd.Series],
) -> pd.DataFrame:
    """Each cell's benchmark on the bars of ``returns``: buy-and-hold of its symbol (close to
    close, ``closes``: symbol -> close indexed by open time) scaled to its ``net_exposure``."""
    out = {}
    for name in returns.columns:
        record = records[name]
        close = closes[record["symbol"]].astype(np.float64)
        index = pd.DatetimeIndex(close.index)
        if index.tz is not None:
            close = close.set_axis(index.tz_convert(None))
        bh = close.pct_change().reindex(returns.index).fillna(0.0)
        bh.iloc[0] = 0.0  # the first bar has no position yet, like the cell's own returns
        out[name] = bh.to_numpy() * float(record["returns"]["net_exposure"])
    return pd.DataFrame(out, index=returns.index)
