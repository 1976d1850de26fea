"""The screen's simulation loop: one ``MlStrategy`` cell over cached predictions, bar by bar.

It follows ``strategies.virtual_book.VirtualBook`` (which reproduces backtrader's
``BackBroker`` with ``slip_out=True``, as ``atb backtest`` sets it) and the strategy's rules
(``MlStrategy.signal_for`` / ``action_for`` / ``_enter``), as plain loops over float arrays so
that numba can compile them:

* a decision at bar ``t`` (after its close) fills at bar ``t + 1``: market entries and exits at
  the open, moved against the order by the slippage;
* the bracket legs become active the bar after the entry fills; the stop is tried first (at
  the open when the bar opens through it, else at its price when the range reaches it, both
  slipped), then the take-profit (at the slipped open when it opens through it, else at its
  price); one filling cancels the other;
* commission ``|size| x price x commission`` on every fill; value = cash + position x close;
* size = value x ``position_size`` x confidence / close of the decision bar, floored to whole
  units where the strategy buys whole units (``units``: ``whole``, or ``auto`` on a model
  whose calendar closes: shares); no entry when that is 0.

* a long entry the cash cannot pay for (plus commission) is refused with its bracket, as
  ``BackBroker`` does (``Margin``): at submission at the decision bar's close, and again at the
  fill price (``position_size`` x confidence near 1); a short bracket is refused when its
  legs, checked in turn at their prices after the entry, would leave negative cash (the
  take-profit after the stop counts as a new long: ``stop_loss`` above ``take_profit``).

Not modelled: a short's cover refused for cash, partial fills, guards.

With numba installed (the ``sweep`` extra) the loop is compiled and cells run in parallel
(``prange``); without it the same Python code runs, about a thousand times slower.
"""

from __future__ import annotations

import math

import numpy as np

try:  # the ``sweep`` extra
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    HAVE_NUMBA = False
    prange = range

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        """No numba: the function itself, uncompiled."""
        if args and callable(args[0]):
            return args[0]
        return lambda fn: fn


#: Columns of the per-cell params matrix.
PARAMS = (
    "long_threshold",
    "short_threshold",
    "exit_threshold",
    "min_confidence",
    "position_size",
    "stop_loss",
    "take_profit",
    "allow_shorts",
    "units",  # 1: whole units (floored sizes), 0: fractions (``screen.params_matrix``)
)

#: Columns of the per-cell accumulators the loop returns.
STATS = (
    "end_value",
    "sum_r",
    "sum_r2",
    "sum_r3",
    "sum_r4",
    "n_r",
    "down_r2",
    "n_down",
    "max_drawdown",
    "trades",
    "wins",
    "exposed_bars",
    "fees",
)


@njit(cache=True, nogil=True)
def _fill(cash: float, pos: float, signed: float, price: float, comm: float) -> tuple:
    """(cash, position, fee) after a fill of ``signed`` units at ``price``."""
    fee = abs(signed) * price * comm
    cash = cash - signed * price - fee
    pos = pos + signed
    if abs(pos) < 1e-12:
        pos = 0.0
    return cash, pos, fee


@njit(cache=True, nogil=True)
def simulate_cell(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    ret: np.ndarray,
    conf: np.ndarray,
    first: int,
    p: np.ndarray,
    cash0: float,
    comm: float,
    slip: float,
    stats: np.ndarray,
    values: np.ndarray,
    keep_values: bool,
) -> None:
    """Run one cell (params row ``p``, see ``PARAMS``) over bars ``first..``; fill ``stats``
    (see ``STATS``) and, with ``keep_values``, ``values[t - first]`` (value at each close)."""
    lt, st, et, mc, ps, sl, tp = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    shorts = p[7] != 0.0
    whole = p[8] != 0.0
    cash = cash0
    pos = 0.0
    pend = 0  # 0 none, 1 market entry, 2 market exit
    pend_side = 0.0
    pend_size = 0.0
    pend_ref = 0.0  # close of the decision bar (the price of the submission check)
    stop = math.nan  # leg prices (NaN: no leg)
    limit = math.nan
    leg_size = 0.0
    legs_state = 0  # 0 none, 1 arming (entry filled this bar), 2 active, 3 waiting for entry
    trade_cash = 0.0  # cash before the open of the current round trip
    peak = cash0
    prev = cash0
    sum_r = 0.0
    sum_r2 = 0.0
    sum_r3 = 0.0
    sum_r4 = 0.0
    n_r = 0
    down_r2 = 0.0
    n_down = 0
    max_dd = 0.0
    trades = 0
    wins = 0
    exposed = 0
    fees = 0.0
    n = len(close)
    for t in range(first, n):
        o, h, lo, c = open_[t], high[t], low[t], close[t]
        # ---- fills (VirtualBook.on_bar)
        if legs_state == 1:
            legs_state = 2
        refused = False
        if pend == 1 and pend_side > 0:
            # BackBroker refuses a buy the cash cannot pay for (Margin; the bracket goes with
            # it): checked at submission at the decision bar's close, then at the fill price
            cost = pend_size * max(pend_ref, o * (1.0 + slip)) * (1.0 + comm)
            refused = cash - cost < 0.0
        elif pend == 1:
            # a short bracket at submission: the entry (sold at the decision close), then its
            # stop (bought back at its price), then its take-profit (bought at its price:
            # after the stop, a new long) in turn must leave cash >= 0, else all are refused
            left = cash + pend_size * pend_ref * (1.0 - comm)
            if not math.isnan(stop):
                left -= pend_size * stop * (1.0 + comm)
                refused = left < 0.0
                if not refused and not math.isnan(limit):
                    refused = left - pend_size * limit * (1.0 + comm) < 0.0
            elif not math.isnan(limit):
                refused = left - pend_size * limit * (1.0 + comm) < 0.0
        if refused:
            pend = 0
            legs_state = 0
        elif pend == 1:
            price = o * (1.0 + pend_side * slip)
            before = pos
            cash0_trade = cash
            cash, pos, fee = _fill(cash, pos, pend_side * pend_size, price, comm)
            fees += fee
            if before == 0.0 and pos != 0.0:
                trade_cash = cash0_trade
            pend = 0
            if legs_state == 3:
                legs_state = 1
        elif pend == 2:
            side = -1.0 if pos > 0 else 1.0
            price = o * (1.0 + side * slip)
            cash, pos, fee = _fill(cash, pos, side * abs(pos), price, comm)
            fees += fee
            pend = 0
            trades += 1
            if cash - trade_cash > 0:
                wins += 1
        if legs_state == 2:
            if pos == 0.0:
                legs_state = 0
            else:
                # one path for both sides: ``side`` is the legs' order (-1 sells a long,
                # +1 buys a short back); ``adverse`` is the bar's extreme against the
                # position (a long's low, a short's high), ``favour`` the other one
                side = -1.0 if pos > 0 else 1.0
                adverse = lo if side < 0 else h
                favour = h if side < 0 else lo
                price = math.nan
                if not math.isnan(stop):
                    if side * (o - stop) >= 0.0:  # opens through the stop
                        price = o * (1.0 + side * slip)
                    elif side * (adverse - stop) >= 0.0:  # the range reaches it
                        price = stop * (1.0 + side * slip)
                if math.isnan(price) and not math.isnan(limit):
                    if side * (limit - o) >= 0.0:  # opens through the take-profit
                        price = o * (1.0 + side * slip)
                    elif side * (limit - favour) >= 0.0:  # the range reaches it
                        price = limit
                if not math.isnan(price):
                    size = min(leg_size, abs(pos))
                    cash, pos, fee = _fill(cash, pos, side * size, price, comm)
                    fees += fee
                    legs_state = 0
                    if pos == 0.0:
                        trades += 1
                        if cash - trade_cash > 0:
                            wins += 1
        value = cash + pos * c
        # ---- equity statistics (value at the close, as the backtest's EquityRecorder)
        if t > first:
            r = value / prev - 1.0
            sum_r += r
            r2 = r * r
            sum_r2 += r2
            sum_r3 += r2 * r
            sum_r4 += r2 * r2
            n_r += 1
            if r < 0:
                down_r2 += r2
                n_down += 1
        prev = value
        if value > peak:
            peak = value
        dd = 1.0 - value / peak
        if dd > max_dd:
            max_dd = dd
        if pos != 0.0:
            exposed += 1
        if keep_values:
            values[t - first] = value
        # ---- decision (MlStrategy.signal_for / action_for / _enter / _exit)
        x = ret[t]
        if math.isnan(x):
            continue
        cf = conf[t]
        signal = 0.0
        if x > lt and cf >= mc:
            signal = 1.0
        elif shorts and x < -st and cf >= mc:
            signal = -1.0
        if pend != 0:
            continue  # wait
        if pos == 0.0 and signal != 0.0:
            size = value * ps * cf / c
            if whole:
                size = math.floor(size)
            if size > 0:
                pend, pend_side, pend_size, pend_ref = 1, signal, size, c
                stop = c * (1.0 - signal * sl) if sl != 0.0 else math.nan
                limit = c * (1.0 + signal * tp) if tp != 0.0 else math.nan
                leg_size = size
                legs_state = 3 if (sl != 0.0 or tp != 0.0) else 0
        elif (pos > 0 and x < -et) or (pos < 0 and x > et):  # folded by sign: slower
            legs_state = 0
            pend = 2
    stats[0] = prev
    stats[1] = sum_r
    stats[2] = sum_r2
    stats[3] = sum_r3
    stats[4] = sum_r4
    stats[5] = n_r
    stats[6] = down_r2
    stats[7] = n_down
    stats[8] = max_dd
    stats[9] = trades
    stats[10] = wins
    stats[11] = exposed
    stats[12] = fees


@njit(cache=True, parallel=True, nogil=True)
def _simulate_parallel(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    ret: np.ndarray,
    conf: np.ndarray,
    first: int,
    params: np.ndarray,
    cash0: float,
    comm: float,
    slip: float,
    out: np.ndarray,
) -> None:
    dummy = np.empty(1)
    for k in prange(params.shape[0]):
        simulate_cell(
            open_, high, low, close, ret, conf, first, params[k], cash0, comm, slip, out[k],
            dummy, False,
        )  # fmt: skip


def _kernel_args(
    bars: np.ndarray,
    ret: np.ndarray,
    conf: np.ndarray,
    first: int,
    params: np.ndarray,
    cash: float,
    commission: float,
    slippage: float,
) -> tuple:
    """The kernel's inputs in ``simulate_cell``'s order, as the contiguous float64 arrays and
    plain scalars numba compiles for (``params``: one row or the whole grid)."""
    return (
        *(np.ascontiguousarray(bars[:, i], dtype=np.float64) for i in range(4)),
        np.ascontiguousarray(ret, dtype=np.float64),
        np.ascontiguousarray(conf, dtype=np.float64),
        int(first),
        np.ascontiguousarray(params, dtype=np.float64),
        float(cash),
        float(commission),
        float(slippage),
    )


def simulate_cells(
    bars: np.ndarray,
    ret: np.ndarray,
    conf: np.ndarray,
    first: int,
    params: np.ndarray,
    cash: float,
    commission: float,
    slippage: float,
) -> np.ndarray:
    """The ``STATS`` of every cell: ``bars`` is (n, 4) open/high/low/close, ``ret``/``conf`` the
    predicted return and confidence per bar (NaN: no prediction), ``params`` (cells, 9) in
    ``PARAMS`` order. Cells run in parallel with numba (its thread count), serially without."""
    out = np.zeros((params.shape[0], len(STATS)))
    args = _kernel_args(bars, ret, conf, first, params, cash, commission, slippage)
    if HAVE_NUMBA:
        _simulate_parallel(*args, out)
    else:  # pragma: no cover - without numba
        dummy = np.empty(1)
        for k in range(params.shape[0]):
            simulate_cell(*args[:7], args[7][k], *args[8:], out[k], dummy, False)
    return out


def cell_values(
    bars: np.ndarray,
    ret: np.ndarray,
    conf: np.ndarray,
    first: int,
    params: np.ndarray,
    cash: float,
    commission: float,
    slippage: float,
) -> np.ndarray:
    """One cell's value at each close from bar ``first`` on (``params``: one ``PARAMS`` row)."""
    n = len(bars) - int(first)
    values = np.zeros(max(n, 1))
    stats = np.zeros(len(STATS))
    simulate_cell(
        *_kernel_args(bars, ret, conf, first, params, cash, commission, slippage),
        stats,
        values,
        True,
    )
    return values[: max(n, 0)]
