"""``shadow.csv`` and the champion-versus-challengers table of a live or paper session.

``ShadowLog`` (an analyzer ``build_live_cerebro`` adds when the strategy has shadows) appends
the rows of ``MlStrategy.shadow`` to ``shadow.csv`` as each bar is decided (flushed per bar, so
a crash loses nothing written), with a ``session`` column: a restart appends a new session
rather than overwriting the last. :func:`compare_books` turns a session's rows into one line per
model: return, Sharpe, max drawdown, closed trades, and the agreement rate (the share of bars
where the model's signal equals the trading model's). ``atb live`` prints that table at stop;
``atb live report DIR`` prints it again from the file.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd

from atb_strategies.backtest.runner import value_metrics
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.strategies.shadow import SHADOW_COLUMNS

log = logging.getLogger(__name__)

#: File name of the shadow rows inside a session directory.
SHADOW_FILE = "shadow.csv"
_COLUMNS = ("session", *SHADOW_COLUMNS)


def _cut_partial_line(path: Path) -> None:
    """Drop an unterminated last line (what a session killed while writing leaves)."""
    with path.open("rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
            log.warning("%s: dropped an incomplete last line left by an earlier session", path)


class ShadowLog(bt.Analyzer):
    """Append the strategy's shadow rows to ``path`` as they are made.

    Parameters
    ----------
    path : str or Path
        The CSV (``shadow.csv``); created with a header when missing.
    """

    params = (("path", None),)

    def start(self) -> None:
        self.path = Path(self.p.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            _cut_partial_line(self.path)  # a killed session may have left half a line
        self._file = self.path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=_COLUMNS)
        if new:
            self._writer.writeheader()
        self.session = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
        self._done = 0

    def next(self) -> None:
        desk = getattr(self.strategy, "shadow", None)
        if desk is None:
            return
        for row in desk.rows[self._done :]:
            self._writer.writerow({"session": self.session, **row})
        self._done = len(desk.rows)
        self._file.flush()

    def stop(self) -> None:
        self.next()
        self._file.close()


def read_shadow_csv(path: Path | str, session: str | None = None) -> pd.DataFrame:
    """The rows of one session of a ``shadow.csv`` (default: the last session).

    ``path`` may be the file or the directory holding it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / SHADOW_FILE
    if not path.is_file():
        raise ConfigurationError(
            f"{path} does not exist: shadow rows are written by `atb live ... --shadow VERSION` "
            "(in the folder of --shadow-csv)."
        )
    try:
        frame = pd.read_csv(path, dtype={"session": str, "time": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ConfigurationError(
            f"{path} is not a readable shadow.csv ({' '.join(str(e).split())}); restore it or "
            "remove the damaged lines."
        ) from e
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigurationError(f"{path} is not a shadow.csv: it lacks columns {missing}.")
    if frame.empty:
        raise ConfigurationError(f"{path} has no rows yet: no bar was decided in a session.")
    numbers = ["close", "equity", "trades", "position"]
    values = frame[numbers].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1) | frame["time"].isna()
    if bad.iloc[:-1].any():  # a damaged last line is what a killed session leaves: dropped
        row = int(bad.iloc[:-1].to_numpy().argmax())
        raise ConfigurationError(
            f"{path}: line {row + 2} is damaged (a number missing or not a number); restore it "
            "or remove that line."
        )
    if bad.iloc[-1]:
        log.warning("%s: the last line is incomplete (a session stopped while writing it)", path)
    frame = frame[~bad].copy()
    frame[numbers] = values[~bad]
    frame["trades"] = frame["trades"].astype(int)
    sessions = list(dict.fromkeys(frame["session"]))
    chosen = session or sessions[-1]
    if chosen not in sessions:
        raise ConfigurationError(
            f"{path} has no session {chosen!r}; sessions: {', '.join(sessions)}."
        )
    return frame[frame["session"] == chosen].reset_index(drop=True)


def compare_books(rows: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """One row per (symbol, role, model): bars, total return, Sharpe, max drawdown, trades,
    agreement with the trading model's signal over the book's bars (1 for the champion).

    After a hot reload the champion's virtual twin is one continuous book, reported in one row
    per model that served it. A bar's return (and a trade closed on it) is credited to the
    model that served the bar before, whose decision held the position through it; each row
    compounds only its model's bars, so no model is credited with another's, even when the
    pointer went back and forth.
    """
    out: list[dict[str, Any]] = []
    for symbol, per_symbol in rows.groupby("symbol", sort=False):
        champion = per_symbol[per_symbol["role"] == "champion"].set_index("time")
        books = [("champion", champion)] + [
            ("shadow", b.set_index("time"))
            for _, b in per_symbol[per_symbol["role"] == "shadow"].groupby("model_key", sort=False)
        ]
        for role, book in books:
            if book.empty:
                continue
            bar_return = book["equity"].pct_change().fillna(0.0)
            closed = book["trades"].diff().fillna(0.0).clip(lower=0)
            credited = book["model_key"].shift(1).fillna(book["model_key"].iloc[0])
            for model_key in dict.fromkeys(book["model_key"]):
                mine = (credited == model_key).to_numpy()
                served = (book["model_key"] == model_key).to_numpy()
                metrics = {"total_return": 0.0, "sharpe": None, "max_drawdown": 0.0}
                if mine.any():  # a model that served only the last bar has no return yet
                    times = pd.to_datetime(book.index[mine])
                    curve = (1.0 + bar_return[mine]).cumprod().to_numpy()
                    values = pd.Series([1.0, *curve], index=[times[0], *times])
                    metrics = value_metrics(values, timeframe)
                signals = book["signal"][served]
                same = champion["signal"].reindex(signals.index)
                out.append(
                    {
                        "symbol": symbol,
                        "role": role,
                        "model_key": model_key,
                        "bars": int(served.sum()),
                        "total_return": metrics["total_return"],
                        "sharpe": metrics["sharpe"],
                        "max_drawdown": metrics["max_drawdown"],
                        "trades": int(closed[mine].sum()),
                        "agreement": float((signals == same).mean()),
                    }
                )
    return pd.DataFrame(out)


def _pct(value: float) -> str:
    """A return in percent, with a third decimal for the small ones of short sessions."""
    return f"{value:+.3f} %" if abs(value) < 1 else f"{value:+.2f} %"


def plot_books(rows: pd.DataFrame, path: Path | str, title: str = "") -> Path | None:
    """A PNG of the books' returns (%) over the session, per symbol: the trading model's twin
    in black (its serving model named in the legend at each hot reload), each challenger in
    colour, and below, each book's drawdown. Written with matplotlib's ``Figure`` (no pyplot).
    Returns None (and writes nothing) when there are fewer than two bars to draw.
    """
    if rows["time"].nunique() < 2:
        return None
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    symbols = list(dict.fromkeys(rows["symbol"]))
    fig = Figure(figsize=(13, 4.5 * len(symbols) + 1.5), layout="constrained")
    axes = fig.subplots(
        2 * len(symbols),
        1,
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1] * len(symbols)},
    )[:, 0]
    for k, symbol in enumerate(symbols):
        ax_ret, ax_dd = axes[2 * k], axes[2 * k + 1]
        per_symbol = rows[rows["symbol"] == symbol]
        champion = per_symbol[per_symbol["role"] == "champion"]
        shadows = per_symbol[per_symbol["role"] == "shadow"].groupby("model_key", sort=False)
        books = [("champion", None, champion), *(("shadow", n, b) for n, b in shadows)]
        for role, key, book in books:
            if book.empty:
                continue
            t = pd.to_datetime(book["time"])
            equity = book["equity"]
            ret = 100 * (equity / equity.iloc[0] - 1)
            dd = 100 * (equity / equity.cummax() - 1)
            if role == "shadow":
                label = f"shadow: {key} ({_pct(ret.iloc[-1])})"
                line = ax_ret.plot(t, ret.to_numpy(), lw=0.9, label=label)[0]
                ax_dd.plot(t, dd.to_numpy(), lw=0.8, color=line.get_color())
                continue
            # one continuous book; a line style per model that served it (hot reloads)
            served_keys = list(dict.fromkeys(book["model_key"]))
            for i, served_by in enumerate(served_keys):
                served = (book["model_key"] == served_by).to_numpy().copy()
                served[1:] |= served[:-1]  # through the next bar: the segments join
                total = f" (book: {_pct(ret.iloc[-1])} in all)" if i == 0 else ""
                ax_ret.plot(
                    t,
                    ret.where(served).to_numpy(),
                    color="black",
                    lw=1.4,
                    ls=("-", "--", ":")[i % 3],
                    zorder=3,  # over a challenger that trades the same way
                    label=f"trading model (twin): {served_by}{total}",
                )
            ax_dd.plot(t, dd.to_numpy(), color="black", lw=1.0, zorder=3)
        ax_ret.axhline(0.0, color="0.6", lw=0.6)
        ax_ret.set_ylabel(f"{symbol} return %")
        ax_dd.set_ylabel("drawdown %")
        ax_ret.legend(loc="upper left", fontsize=8)
        ax_ret.grid(alpha=0.3)
        ax_dd.grid(alpha=0.3)
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    first, last = (rows["time"].iloc[i][:16].replace("T", " ") for i in (0, -1))
    fig.suptitle(
        (title + "\n" if title else "")
        + f"virtual books, same rules, fees and slippage: {first} .. {last} (UTC bar close)"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def format_comparison(table: pd.DataFrame) -> str:
    """The comparison as aligned text lines (champion first); with several symbols, each
    symbol's books under a ``SYMBOL:`` line (a model serving several symbols is named the same
    on each)."""
    lines = [
        f"{'role':<9}{'model':<42}{'bars':>6}{'return %':>10}{'Sharpe':>8}"
        f"{'max DD %':>10}{'trades':>8}{'agree %':>9}"
    ]
    several = "symbol" in table.columns and table["symbol"].nunique() > 1
    shown = None
    for row in table.itertuples(index=False):
        if several and row.symbol != shown:
            shown = row.symbol
            lines.append(f"{row.symbol}:")
        sharpe = "n/a" if pd.isna(row.sharpe) else f"{row.sharpe:.2f}"
        lines.append(
            f"{row.role:<9}{row.model_key:<42}{row.bars:>6}{100 * row.total_return:>+10.3f}"
            f"{sharpe:>8}{100 * row.max_drawdown:>10.2f}{row.trades:>8}"
            f"{100 * row.agreement:>9.1f}"
        )
    return "\n".join(lines)
