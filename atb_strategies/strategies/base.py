"""``MlStrategy``: trade a registry model's next-bar prediction, one model per data feed.

Each bar after the model's warm-up, for each feed:

1. read the ``MlPrediction`` indicator: predicted return of the next bar against the current
   close, and confidence;
2. signal ``long`` when ``predicted_return > long_threshold`` and ``confidence >=
   min_confidence``; ``short`` likewise below ``-short_threshold`` when ``allow_shorts``
   (a class-probability model's direction, +1 or -1, stands in for its return:
   ``decision_return``);
3. flat and a signal: enter with a bracket order, a market entry protected by a stop-loss
   (``stop_loss``, fraction of the close) and a take-profit (``take_profit``); the size is
   the host's sizer when the cerebro has one (``cerebro.addsizer``), else ``position_size x
   confidence`` of the portfolio value, in whole units or contracts where the market trades
   them (``units``, ``entry_size``);
4. in a position and the prediction reverses beyond ``exit_threshold``: cancel the bracket legs
   and close at market;
5. a position the strategy finds already open on its first tradeable bar (live trading: a
   restart, or holdings in the account, which the live broker seeds as the position) is
   protected at once, when ``protect_adopted`` is on: a stop order at ``stop_loss`` and a
   take-profit limit at ``take_profit`` from that bar's close, linked one-cancels-other. The
   close is the reference because the account does not say what the position cost. The same
   protection is re-armed when an exit order is refused (its legs were cancelled to send it).
   A backtest starts flat, so adoption never happens there; the re-arming can, only when the
   backtest broker refuses an exit (a short cover the cash cannot pay for).

The defaults follow the reference project (2 % stop, 4 % take-profit) with a 0.2 % entry
threshold. Every order carries, in ``order.info``, the model key and the prediction that caused
it; closed trades are recorded in ``self.trade_records`` and every decision in
``self.decisions`` (and logged with ``log_decisions=True``). A bar after the warm-up without a
prediction (``MlPrediction`` made none: under ``gap_policy="skip"`` because its rows span a gap
in the candles) is recorded too, with action ``"skip"`` and a ``reason`` from
``NO_PREDICTION_REASONS`` ("no prediction: its rows span a gap in the candles"); the strategy
does nothing on it (an open position and its bracket stay as they are).

Each traded feed also gets an ``MlConfidence`` indicator, so that backtrader's ``cerebro.plot()``
draws the prediction's confidence (0..1) on its own axis, apart from the predicted return
(``plot_confidence=False``: none, one indicator less to step per bar where nothing plots).

Backtrader keeps a clone of every order at every notification (``Strategy._orders``, which
nothing reads) for the whole run; ``MlStrategy`` keeps none (``clear``): a long backtest or a
live session does not grow by every status change of every order.

The strategy never branches on backtest vs paper vs live: in live trading, only bars the feed
marks ``LIVE`` are traded (``trade_live_only``); backfilled bars only warm the model up.
"""

from __future__ import annotations

import bisect
import logging
import math
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import backtrader as bt

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features.candles import check_gap_policy
from atb_strategies.features.drift import DEFAULT_WINDOW
from atb_strategies.indicators.confidence import MlConfidence
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.inference.decode import REJECTED_OUTPUT_REASONS
from atb_strategies.strategies.guards import DriftGuard, ModelAgeGuard, SentimentAgeGuard
from atb_strategies.strategies.shadow import ShadowDesk, parse_shadows

log = logging.getLogger(__name__)

_EPOCH_DAYS = 719163.0  # backtrader's date number of 1970-01-01

#: Why a bar has no prediction, by code: the ``reason`` of a ``"skip"`` decision is
#: ``"no prediction: " + text``; the backtest summary counts bars per code.
NO_PREDICTION_REASONS: dict[str, str] = {
    "warm_up": "the model's warm-up (history and window) is not complete",
    "gap": "its rows span a gap in the candles",
    **REJECTED_OUTPUT_REASONS,
    "model": "the model's output has no predicted return",
}


#: ``notify_order``'s order states: still working (nothing to do), and over without a fill.
_OPEN_STATUSES = (bt.Order.Submitted, bt.Order.Accepted, bt.Order.Partial)
_DEAD_STATUSES = (bt.Order.Canceled, bt.Order.Margin, bt.Order.Rejected, bt.Order.Expired)
_COMPLETED, _CANCELED = bt.Order.Completed, bt.Order.Canceled


def _ms(num: float) -> int:
    """A backtrader date number as integer milliseconds since the epoch (exact for bar times)."""
    return round((num - _EPOCH_DAYS) * 86_400_000.0)


#: Valid ranges of the numeric params: (low, high, low inclusive, high inclusive, in words).
_RANGES = {
    "position_size": (0.0, 1.0, False, True, "a fraction in (0, 1]"),
    "stop_loss": (0.0, 1.0, True, False, "a fraction in [0, 1) (0 disables the leg)"),
    "take_profit": (0.0, math.inf, True, False, "a fraction >= 0 (0 disables the leg)"),
    "min_confidence": (0.0, 1.0, True, True, "in [0, 1]"),
    "exit_threshold": (0.0, math.inf, True, False, "a return >= 0"),
    "short_threshold": (0.0, math.inf, True, False, "a return >= 0"),
}


#: The ``units`` a strategy sizes in (see ``MlStrategy``).
UNITS = ("auto", "fractional", "whole")


def _check_params(owner: str, p: Any) -> None:
    """One line per bad numeric param, sklearn's wording."""
    for name, (low, high, low_in, high_in, words) in _RANGES.items():
        value = getattr(p, name)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (value >= low if low_in else value > low) and (
                value <= high if high_in else value < high
            )
        if not ok:
            raise ConfigurationError(
                f"The {name!r} parameter of {owner} must be {words}. Got {value!r} instead."
            )
    if p.units not in UNITS:
        raise ConfigurationError(
            f"The 'units' parameter of {owner} must be one of {list(UNITS)}. "
            f"Got {p.units!r} instead."
        )
    if not isinstance(p.long_threshold, int | float) or not math.isfinite(p.long_threshold):
        raise ConfigurationError(
            f"The 'long_threshold' parameter of {owner} must be a number. "
            f"Got {p.long_threshold!r} instead."
        )


class MlStrategy(bt.Strategy):
    """Base of the ML strategies (see the module docstring for the trading rules).

    Parameters
    ----------
    symbol : str or None
        Registry symbol for every feed; default: each feed's name.
    model_type : str
        Registry model type (default ``"basic"``).
    timeframe : str or None
        Model timeframe; default: each feed's own.
    version : str or None
        Model version; ``None`` follows ``latest``.
    registry : str or None
        Registry path; default: the configured registry.
    sequence_length : int or None
        If set, must equal the selected model's sequence length (a guard, not a setting).
    long_threshold, short_threshold : float
        Predicted-return thresholds to enter (default 0.002 each).
    exit_threshold : float
        Exit when the predicted return reverses past it (default 0.0).
    min_confidence : float
        Minimum confidence to enter (default 0.0).
    position_size : float
        Fraction of portfolio value committed at confidence 1 (default 0.1). Ignored when the
        cerebro has a sizer (``cerebro.addsizer``): then every entry is ``getsizing()``.
    units : {"auto", "fractional", "whole"}
        How the ``position_size`` budget becomes a size. A futures-like commission scheme
        (``margin`` set) always buys whole contracts of ``margin`` each (``mult`` goes into
        the P&L, as backtrader does). Otherwise ``whole`` floors to whole units (shares),
        ``fractional`` keeps fractions (crypto), and ``auto`` (default) is ``whole`` when the
        model's calendar closes (a stock market) and ``fractional`` on a 24/7 market.
    stop_loss, take_profit : float
        Bracket legs as fractions of the entry bar's close (defaults 0.02 and 0.04); 0
        disables a leg.
    allow_shorts : bool
        Also trade short signals (default False).
    trade_live_only : bool
        With live feeds, trade only ``LIVE`` bars (default True).
    gap_policy : str or None
        Passed to ``MlPrediction`` (default: ``"skip"`` for historical feeds, ``"warn"`` for
        live ones).
    asof_run : str or None
        With ``version="asof"``: replay only the versions of this walk-forward
        (``walk_forward_id``); default all versions with a known training period.
    max_model_age : str or None
        The model-age guard: how long after the last bar its training saw (lineage
        ``seen_until``) a model may trade, as a pandas duration (``"30d"``, ``"12h"``); None
        (default) disables it. A model whose training period is unknown is reported once.
    age_action : {"warn", "no_entries", "flatten"}
        What a model past ``max_model_age`` does: log once per model and give the reason in
        the decisions (``warn``), also refuse new entries (``no_entries``), or also close open
        positions (``flatten``). See ``atb_strategies.strategies.guards``.
    drift_action : {None, "warn", "no_entries", "flatten"}
        The drift guard: while a model input's population stability index over the last
        ``drift_window`` bars is past its threshold (``drift_threshold``, default per feature
        the larger of 0.25 and its calibration from training), log it and give the reason in
        the decisions (``warn``), also refuse entries (``no_entries``) or also close positions
        (``flatten``). None (default) computes no drift. Needs a bundle trained with a drift
        reference (older bundles are reported once and never fire).
    drift_window : int
        Bars in the drift window (default 168, one week of hourly bars).
    drift_threshold : float or None
        One PSI threshold for every feature instead of the calibrated ones.
    max_sentiment_age : str or None
        With a live sentiment feed (its ``sentiment_age`` line): refuse new entries while the
        sentiment value read at the bar is older than this (``"36h"``), saying so once per
        outage; None (default) disables the check.
    follow_latest : bool or None
        Hot reload of ``latest`` between bars when no version is pinned (see
        ``MlPrediction``); default (None): on for live feeds. Open positions and their
        stop-loss and take-profit orders are untouched by a switch; orders after it carry the
        new model key.
    shadows : list of str or None
        Shadow challengers, ``"VERSION"`` or ``"TYPE@VERSION"`` (pinned): each predicts on
        the same bars and trades a virtual book by these rules, with no order ever sent; the
        strategy's own model gets a virtual twin for comparison. Rows per bar in
        ``self.shadow.rows`` (see ``atb_strategies.strategies.shadow``).
    log_decisions : bool
        Log every decision at INFO (default False).
    record_decisions : bool
        Keep every decision in ``self.decisions`` (default True): a dict per traded bar from
        the first complete window on, with ``action`` (``enter_long``, ``enter_short``,
        ``exit``, ``hold``, ``wait``, or ``skip`` when there is no prediction) and ``reason``
        (why a ``skip``, else None).
    plot_confidence : bool
        Add an ``MlConfidence`` indicator per traded feed, the confidence on its own axis of
        ``cerebro.plot()`` (default True; ``self.confidences``). No decision reads it: sweep
        cells, which never plot, turn it off.
    sentiment_feed : str or None
        Name of a data feed that only carries sentiment (``make_sentiment_feed``); it is not
        traded, and every model reads its ``sentiment`` as of each bar.
    trade_from : str or None
        ISO time before which bars only warm the model up (no orders); default: trade from
        the first bar with a prediction.
    protect_adopted : bool
        Protect a position found open on the first tradeable bar with a stop-loss and a
        take-profit (rule 5 above; default True).
    """

    params = (
        ("symbol", None),
        ("model_type", "basic"),
        ("timeframe", None),
        ("version", None),
        ("registry", None),
        ("sequence_length", None),
        ("long_threshold", 0.002),
        ("short_threshold", 0.002),
        ("exit_threshold", 0.0),
        ("min_confidence", 0.0),
        ("position_size", 0.1),
        ("units", "auto"),
        ("stop_loss", 0.02),
        ("take_profit", 0.04),
        ("allow_shorts", False),
        ("trade_live_only", True),
        ("gap_policy", None),
        ("log_decisions", False),
        ("record_decisions", True),
        ("plot_confidence", True),
        ("trade_from", None),
        ("sentiment_feed", None),
        ("protect_adopted", True),
        ("max_model_age", None),
        ("age_action", "warn"),
        ("asof_run", None),
        ("follow_latest", None),
        ("shadows", None),
        ("max_sentiment_age", None),
        ("drift_action", None),
        ("drift_window", DEFAULT_WINDOW),
        ("drift_threshold", None),
    )

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> None:
        """Refuse ``values`` as ``__init__`` would, without building the strategy (no model
        loaded): the numeric ranges, the guards' actions and durations, ``gap_policy`` and
        ``shadows``; params not given take their defaults. Sweeps check every grid value with
        it before any cell runs.

        Raises
        ------
        ConfigurationError
            The first bad param, sklearn's wording.
        """
        p = types.SimpleNamespace(**{k: getattr(cls.params, k) for k in cls.params._getkeys()})
        vars(p).update(values)
        owner = cls.__name__
        _check_params(owner, p)
        ModelAgeGuard(owner, p.max_model_age, p.age_action)
        SentimentAgeGuard(owner, p.max_sentiment_age)
        if p.drift_action is not None:
            DriftGuard(owner, p.drift_action)
        if p.gap_policy is not None:
            check_gap_policy(p.gap_policy, owner)
        parse_shadows(p.shadows, p.model_type)

    def __init__(self) -> None:
        p = self.p
        _check_params(type(self).__name__, p)
        owner = type(self).__name__
        #: The guards checked before every decision (``atb_strategies.strategies.guards``).
        self.guards: list[Any] = [
            ModelAgeGuard(owner, p.max_model_age, p.age_action),
            SentimentAgeGuard(owner, p.max_sentiment_age),
        ]
        if p.drift_action is not None:
            self.guards.append(DriftGuard(owner, p.drift_action))
        self._guards_checked: list[Any] | None = None  # ``_guarded``'s cache of the enabled ones
        self._guards_len = 0
        self._enabled_guards: list[Any] = []
        # backtrader gives every strategy a FixedSize(1) before __init__ and replaces it after,
        # only when the cerebro has a sizer (cerebro.addsizer / addsizer_byidx)
        self._default_sizer = self._sizer
        self.predictions: dict[Any, MlPrediction] = {}
        self.confidences: dict[Any, MlConfidence] = {}
        extra = [d for d in self.datas if p.sentiment_feed and d._name == p.sentiment_feed]
        self._extra = extra  # the sentiment feed every prediction also reads, if any
        if p.sentiment_feed and not extra:
            raise ConfigurationError(
                f"{type(self).__name__}: no data feed named {p.sentiment_feed!r} "
                f"(sentiment_feed); feeds: {[d._name for d in self.datas]}."
            )
        for data in self.datas:
            if extra and data is extra[0]:
                continue
            pred = self.prediction_for(data)
            if p.sequence_length is not None and pred.bundle.sequence_length != p.sequence_length:
                raise ConfigurationError(
                    f"{type(self).__name__} was configured with sequence_length="
                    f"{p.sequence_length}, but model {pred.model_key} takes "
                    f"{pred.bundle.sequence_length} bars. Pass sequence_length=None to use the "
                    "model's, or select a matching version."
                )
            self.predictions[data] = pred
            if p.plot_confidence:
                self.confidences[data] = MlConfidence(pred)
        self.decisions: list[dict[str, Any]] = []
        self.trade_records: list[dict[str, Any]] = []
        #: per feed: the fill price and reason of the last order that reduced its position
        self._exit_fill: dict[Any, tuple[float, str]] = {}
        self._exit_why: dict[Any, str] = {}  # per feed: why the pending "exit" order was sent
        traded = list(self.predictions)
        self._legs: dict[Any, list[bt.Order]] = {d: [] for d in traded}
        self._entry_info: dict[Any, dict[str, Any]] = {}
        self._pending: dict[Any, bt.Order | None] = {d: None for d in traded}
        self._started: set[Any] = set()  # feeds whose first tradeable bar has been seen
        self._decided_len: dict[Any, int] = {}  # len(data) at the last decision per feed
        self._gap_ms: dict[Any, list[int]] = {d: [] for d in traded}  # pred.gap_bars, in ms
        self._trade_from = (
            bt.date2num(datetime.fromisoformat(str(p.trade_from))) if p.trade_from else None
        )
        specs = parse_shadows(p.shadows, p.model_type)
        #: Shadow challengers and the virtual twin of this strategy's model (``shadows``).
        self.shadow = ShadowDesk(self, specs) if specs else None

    # ------------------------------------------------------------------ helpers

    def prediction_for(self, data: bt.AbstractDataBase, **overrides: Any) -> MlPrediction:
        """The ``MlPrediction`` of ``data`` configured from this strategy's params (and the
        sentiment feed), with ``overrides`` (a shadow's model type and version...). Call it
        from ``__init__``: backtrader indicators are created there."""
        p = self.p
        params = {
            "symbol": p.symbol,
            "model_type": p.model_type,
            "timeframe": p.timeframe,
            "version": p.version,
            "registry": p.registry,
            "gap_policy": p.gap_policy,
            "asof_run": p.asof_run,
            "follow_latest": p.follow_latest,
            "drift_window": p.drift_window if p.drift_action is not None else None,
            "drift_threshold": p.drift_threshold,
            "sequence_length": p.sequence_length,
        }
        return MlPrediction(data, *self._extra, **{**params, **overrides})

    def _is_tradeable(self, data: bt.AbstractDataBase) -> bool:
        if self._trade_from is not None and data.datetime[0] < self._trade_from:
            return False
        if self.p.trade_live_only and data.islive():
            return data._laststatus == data.LIVE
        return True

    def _info(self, data: bt.AbstractDataBase, signal: str) -> dict[str, Any]:
        pred = self.predictions[data]
        return {
            "symbol": getattr(data, "_name", ""),
            "model_key": pred.model_key,
            "bar": bt.num2date(data.datetime[0]).isoformat(),
            "close": float(data.close[0]),
            "predicted_price": float(pred.predicted_price[0]),
            "predicted_return": float(pred.predicted_return[0]),
            "confidence": float(pred.confidence[0]),
            "signal": signal,
        }

    def _protective_prices(self, close: float, side: int) -> tuple[float | None, float | None]:
        """Stop-loss and take-profit prices around ``close`` for a position of ``side`` (+1
        long, -1 short); None where the leg is disabled."""
        p = self.p
        stop = close * (1 - side * p.stop_loss) if p.stop_loss else None
        limit = close * (1 + side * p.take_profit) if p.take_profit else None
        return stop, limit

    def entry_size(
        self, data: bt.AbstractDataBase, side: int, close: float, confidence: float
    ) -> float:
        """The size of an entry on ``data`` at ``close`` (``side`` +1 long, -1 short).

        The host's sizer when the cerebro has one; else the budget ``position_size x
        confidence x value``: whole contracts by margin under a futures-like commission
        scheme, whole units or fractions as ``units`` says.
        """
        p = self.p
        if self._sizer is not self._default_sizer:
            return float(self.getsizing(data=data, isbuy=side > 0))
        budget = self.broker.getvalue() * p.position_size * confidence
        comminfo = self.broker.getcommissioninfo(data)
        if not comminfo.stocklike:
            if p.units == "fractional":
                return budget / comminfo.get_margin(close)
            return float(comminfo.getsize(close, budget))
        if self._whole_units(data):
            return float(math.floor(budget / close))
        return budget / close

    def _whole_units(self, data: bt.AbstractDataBase) -> bool:
        if self.p.units != "auto":
            return bool(self.p.units == "whole")
        calendar = getattr(self.predictions.get(data), "calendar", None)
        return calendar is not None and not calendar.always_open

    def _enter(self, data: bt.AbstractDataBase, side: int, info: dict[str, Any]) -> None:
        close = float(data.close[0])
        size = self.entry_size(data, side, close, info["confidence"])
        if size <= 0:
            return
        stop, limit = self._protective_prices(close, side)
        bracket = self.buy_bracket if side > 0 else self.sell_bracket
        # the info goes in with the orders: a live broker sends the entry as soon as the last
        # leg arrives, inside this call, and journals what the order carries then
        orders = bracket(
            data=data,
            size=size,
            exectype=bt.Order.Market,
            stopprice=stop,
            stopexec=bt.Order.Stop if stop else None,
            limitprice=limit,
            limitexec=bt.Order.Limit if limit else None,
            role="entry",
            **info,
        )
        main, *legs = orders
        for order, role in zip(orders, ("entry", "stop_loss", "take_profit"), strict=True):
            if order is None:
                continue
            if info.keys() <= order.info.keys():  # the broker kept the keyword arguments
                order.info["role"] = role  # the legs came with the entry's role
            else:  # a broker that drops them
                order.addinfo(role=role, **info)
        self._legs[data] = [o for o in legs if o is not None]
        self._pending[data] = main
        self._entry_info[data] = info

    def _protect(self, data: bt.AbstractDataBase, why: str) -> None:
        """Arm a stop-loss and a take-profit (one cancels the other) for a position that has
        no bracket: adopted, or left by a refused exit (rule 5 in the module docstring)."""
        position = self.getposition(data)
        side = 1 if position.size > 0 else -1
        close = float(data.close[0])
        stop, limit = self._protective_prices(close, side)
        if stop is None and limit is None:
            return
        size = abs(position.size)
        close_side = self.sell if side > 0 else self.buy
        info = {**self._info(data, why), "protected_size": position.size}
        legs: list[bt.Order] = []
        if stop is not None:
            legs.append(
                close_side(
                    data=data,
                    size=size,
                    exectype=bt.Order.Stop,
                    price=stop,
                    role="stop_loss",
                    **info,
                )
            )
        if limit is not None:
            legs.append(
                close_side(
                    data=data,
                    size=size,
                    exectype=bt.Order.Limit,
                    price=limit,
                    oco=legs[0] if legs else None,
                    role="take_profit",
                    **info,
                )
            )
        self._legs[data] = [o for o in legs if o.alive()]
        self._entry_info[data] = {**info, "size": position.size, "entry_price": position.price}
        log.info(
            "%s: %s position %g protected from close %.2f: %s",
            getattr(data, "_name", "data"),
            why,
            position.size,
            close,
            ", ".join(f"{o.info['role']} at {o.created.price:.2f}" for o in legs),
        )

    def _adopt_trade(self, data: bt.AbstractDataBase) -> None:
        """Open backtrader's trade record for a position found at start (live: holdings or a
        restart), so that selling it closes a trade (``notify_trade``, ``trade_records``)
        instead of opening a phantom one the other way. Its cost basis is the position's price
        when the broker knows it, else this bar's close (the reference of its protection)."""
        position = self.getposition(data)
        trades = self._trades[data][0]
        if not position.size or (trades and trades[-1].isopen):
            return
        price = float(position.price) or float(data.close[0])
        trade = bt.trade.Trade(data=data, tradeid=0, historyon=self._tradehistoryon)
        seed = types.SimpleNamespace(p=types.SimpleNamespace(simulated=False))  # no order
        comminfo = self.broker.getcommissioninfo(data)
        trade.update(seed, position.size, price, 0.0, 0.0, 0.0, comminfo=comminfo)
        trades.append(trade)
        self._entry_info[data] = {
            **self._info(data, "adopted"),
            "size": position.size,
            "entry_price": price,
        }

    def _unprotected(self, data: bt.AbstractDataBase) -> bool:
        """An open position with no live stop-loss or take-profit, and protection wanted."""
        return bool(
            self.p.protect_adopted
            and self.getposition(data).size
            and not any(leg.alive() for leg in self._legs[data])
        )

    def _exit(self, data: bt.AbstractDataBase, info: dict[str, Any]) -> None:
        for leg in self._legs[data]:
            if leg.alive():
                self.cancel(leg)
        self._legs[data] = []
        order = self.close(data=data, role="exit", **info)  # journaled with the order
        if order is not None:
            self._pending[data] = order

    @staticmethod
    def decision_return(pred: MlPrediction) -> float:
        """The predicted return the rules compare with the thresholds.

        A class-probability model (``direction`` target) predicts no return: its direction
        (+1 up, -1 down, 0 flat) stands in, so it enters on the predicted direction when the
        class probability reaches ``min_confidence`` and exits when the direction reverses.
        """
        ret = float(pred.predicted_return[0])
        if math.isnan(ret) and pred.bundle.metadata.output.target == "class_probabilities":
            return float(pred.direction[0])
        return ret

    def signal_for(self, ret: float, conf: float) -> str:
        """``"long"``, ``"short"`` or ``"flat"`` for a predicted return and confidence (rule 2
        of the module docstring)."""
        p = self.p
        if ret > p.long_threshold and conf >= p.min_confidence:
            return "long"
        if p.allow_shorts and ret < -p.short_threshold and conf >= p.min_confidence:
            return "short"
        return "flat"

    def action_for(self, position: float, pending: bool, signal: str, ret: float) -> str:
        """``"wait"`` (an entry or exit is pending), ``"enter_long"``/``"enter_short"``,
        ``"exit"`` or ``"hold"`` (rules 3 and 4 of the module docstring)."""
        p = self.p
        if pending:
            return "wait"
        if position == 0 and signal in ("long", "short"):
            return "enter_" + signal
        if (position > 0 and ret < -p.exit_threshold) or (position < 0 and ret > p.exit_threshold):
            return "exit"
        return "hold"

    def no_prediction_reason(
        self, data: bt.AbstractDataBase, pred: MlPrediction
    ) -> tuple[str, str | None]:
        """Why ``pred`` has no value at the current bar of ``data``.

        Returns
        -------
        code : str
            A key of ``NO_PREDICTION_REASONS``: ``"warm_up"`` (fewer bars than the model's
            warm-up and window), ``"gap"`` (a bar of ``pred.gap_bars`` lies between the first
            and the last row of the bar's warm-up + window), ``"non_finite_output"`` or
            ``"implausible_output"`` (the model's output was rejected), else ``"model"``.
        gap_bar : str or None
            For ``"gap"``, the (close) time of the newest bar after a gap inside those rows.
        """
        min_bars = pred.bundle.pipeline.min_bars
        if len(data) < min_bars:
            return "warm_up", None
        stamps = self._gap_ms.setdefault(data, [])
        # gap_bars only grows (streaming appends a bar at a time): convert the new ones
        stamps.extend(int(t.value) // 1_000_000 for t in pred.gap_bars[len(stamps) :])
        if stamps:
            now = _ms(data.datetime[0])
            first_row = _ms(data.datetime[1 - min_bars]) if min_bars > 1 else now
            i = bisect.bisect_right(stamps, now)
            if i and stamps[i - 1] > first_row:
                return "gap", pred.gap_bars[i - 1].isoformat()
        return pred.rejected_output() or "model", None

    def _guarded(self, data: bt.AbstractDataBase, pred: MlPrediction) -> tuple[str, str | None]:
        """The strongest action among the guards that fire at this bar (``"flatten"`` over
        ``"no_entries"`` over ``"warn"``) and their reasons; ``("", None)`` when none fires. A guard
        whose ``enabled`` is False (built with no limit) is not asked; one without the
        attribute is."""
        guards = self.guards
        if self._guards_checked is not guards or self._guards_len != len(guards):
            # the guards that can fire (a guard built with no limit never does), recomputed
            # whenever ``self.guards`` is replaced or grows
            self._guards_checked, self._guards_len = guards, len(guards)
            self._enabled_guards = [g for g in guards if getattr(g, "enabled", True)]
        if not self._enabled_guards:
            return "", None
        fired = [(g.action, why) for g in self._enabled_guards if (why := g.reason(data, pred))]
        if not fired:
            return "", None
        rank = {"warn": 0, "no_entries": 1, "flatten": 2}
        strongest = max(fired, key=lambda f: rank[f[0]])[0]
        return strongest, "; ".join(why for _, why in fired)

    def _record_no_prediction(self, data: bt.AbstractDataBase, pred: MlPrediction) -> None:
        """Record (and log) a ``"skip"`` decision for a bar without a prediction, saying why."""
        code, gap_bar = self.no_prediction_reason(data, pred)
        decision = {
            **self._info(data, "none"),
            "position": self.getposition(data).size,
            "action": "skip",
            "reason": f"no prediction: {NO_PREDICTION_REASONS[code]}",
        }
        if gap_bar is not None:
            decision["gap_bar"] = gap_bar
        if self.p.record_decisions:
            self.decisions.append(decision)
        if self.p.log_decisions:
            log.info(
                "%s %s close=%.2f %s%s pos=%g -> skip",
                decision["bar"],
                decision["model_key"],
                decision["close"],
                decision["reason"],
                f" (gap before the bar closing at {gap_bar})" if gap_bar else "",
                decision["position"],
            )

    # ------------------------------------------------------------------ backtrader hooks

    def clear(self) -> None:
        """Drop this bar's order and trade notifications once delivered. Backtrader's own
        ``clear`` also appends every order clone to ``self._orders``, a history nothing reads
        (about 35,000 objects for 3,000 bracket trades, each traversed by every full garbage
        collection until the run ends)."""
        self._orderspending = []
        self._tradespending = []

    def next(self) -> None:
        p = self.p
        decided = self._decided_len
        for data, pred in self.predictions.items():
            bars = len(data)  # a feed's len() walks backtrader's line objects: once per bar
            if decided.get(data) == bars:
                continue  # called again without a new bar of this feed (another feed moved)
            decided[data] = bars
            if not self._is_tradeable(data):
                continue
            if self.shadow is not None:
                self.shadow.on_bar(data)
            if data not in self._started:
                self._started.add(data)
                self._adopt_trade(data)
                if self._pending[data] is None and self._unprotected(data):
                    self._protect(data, "adopted")
            ret = self.decision_return(pred)
            if math.isnan(ret):
                if p.record_decisions or p.log_decisions:
                    self._record_no_prediction(data, pred)
                continue
            conf = float(pred.confidence[0])
            guard, why = self._guarded(data, pred)
            signal = self.signal_for(ret, conf)
            position = self.getposition(data).size
            pending = self._pending[data] is not None
            action = self.action_for(position, pending, signal, ret)
            signalled = action
            if guard in ("no_entries", "flatten") and action.startswith("enter_"):
                action = "hold"
            if guard == "flatten" and position and not pending:
                action = "exit"
            if action.startswith("enter_"):
                self._enter(data, 1 if signal == "long" else -1, self._info(data, signal))
            elif action == "exit":
                self._exit_why[data] = "signal" if signalled == "exit" else "guard_flatten"
                self._exit(data, self._info(data, signal))
            if p.record_decisions or p.log_decisions:
                decision = {
                    **self._info(data, signal),
                    "position": position,
                    "action": action,
                    "reason": why,
                }
                if p.record_decisions:
                    self.decisions.append(decision)
                if p.log_decisions:
                    log.info(
                        "%s %s close=%.2f pred=%.2f ret=%+.4f conf=%.2f signal=%s pos=%g -> %s",
                        decision["bar"],
                        decision["model_key"],
                        decision["close"],
                        decision["predicted_price"],
                        decision["predicted_return"],
                        decision["confidence"],
                        signal,
                        position,
                        action,
                    )

    def notify_order(self, order: bt.Order) -> None:
        status = order.status
        if status in _OPEN_STATUSES:
            return
        data = order.data
        pending = self._pending.get(data)
        if pending is not None and pending.ref == order.ref:
            self._pending[data] = None
        role = order.info.get("role")
        if status == _COMPLETED:
            if role == "entry":
                info = self._entry_info.setdefault(data, {})
                info["size"] = order.executed.size
                info["entry_price"] = order.executed.price
                return
            if role in ("stop_loss", "take_profit"):
                self._legs[data] = []
            if not role:
                role = "exit"  # an order without a role (a host's own close) ends like an exit
            why = self._exit_why.pop(data, "signal") if role == "exit" else role
            self._exit_fill[data] = (float(order.executed.price), why)
            return
        if status in _DEAD_STATUSES:
            if role == "entry":
                self._legs[data] = []
            if role == "exit" and self._unprotected(data):
                self._protect(data, "exit_refused")  # the exit cancelled the legs: re-arm them
            if status != _CANCELED:
                log.warning(
                    "%s order %s for %s: %s",
                    order.info.get("role", "order"),
                    order.ref,
                    getattr(data, "_name", "data"),
                    order.getstatusname(),
                )

    def notify_trade(self, trade: bt.Trade) -> None:
        if not trade.isclosed:
            return
        exit_price, why = self._exit_fill.pop(trade.data, (None, None))
        self.trade_records.append(self._trade_record(trade, exit_price, why))

    def _trade_record(
        self, trade: bt.Trade, exit_price: float | None, exit_reason: str | None
    ) -> dict[str, Any]:
        """One row of ``trade_records``: ``exit_reason`` is ``"signal"`` (the model's exit),
        ``"guard_flatten"``, ``"stop_loss"``, ``"take_profit"``, ``"kill_switch_flatten"`` or
        ``"end_of_data"`` (``open_trade_records``)."""
        data = trade.data
        info = self._entry_info.get(data, {})
        size = info.get("size")
        if exit_price is None and size:  # closed by an order not seen here: from the P&L
            exit_price = float(trade.price) + float(trade.pnl) / float(size)
        return {
            "symbol": getattr(data, "_name", ""),
            "model_key": info.get("model_key"),
            "opened": bt.num2date(trade.dtopen).isoformat(),
            "closed": bt.num2date(trade.dtclose).isoformat() if trade.dtclose else None,
            "bars": trade.barlen,
            "size": size,
            "entry_price": trade.price,
            "exit_price": exit_price,
            "exit_reason": exit_reason,
            "pnl": trade.pnl,
            "pnl_net": trade.pnlcomm,
            "commission": trade.commission,
            "entry_predicted_return": info.get("predicted_return"),
            "entry_confidence": info.get("confidence"),
        }

    def open_trade_records(self) -> list[dict[str, Any]]:
        """The trades still open now, as ``trade_records`` rows closed at the last bar's close
        (``exit_reason`` ``"end_of_data"``; P&L marked to that close, no exit fee)."""
        rows = []
        for data in self.predictions:
            trades = self._trades[data][0]
            if not trades or not trades[-1].isopen or not self.getposition(data).size:
                continue
            trade, close = trades[-1], float(data.close[0])
            row = self._trade_record(trade, close, "end_of_data")
            row["closed"] = bt.num2date(data.datetime[0]).isoformat()
            row["bars"] = len(data) - trade.baropen
            row["pnl"] = float(trade.size) * (close - float(trade.price))
            row["pnl_net"] = row["pnl"] - float(trade.commission)
            rows.append(row)
        return rows
