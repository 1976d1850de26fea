"""Shadow challengers: other model versions predicting and trading virtual books beside the
model that trades.

``MlStrategy(shadows=["2026-11-29_1h_v2", "sentiment@2026-11-26_1h_v1"])`` adds, for each
traded feed, one ``MlPrediction`` per challenger (pinned: a shadow never follows ``latest``)
and a ``VirtualBook`` per model, the trading model's own included (its *virtual twin*, so that
champion and challengers are compared on one footing: same rules, sizing, fees and slippage,
the same simulated fills). Every tradeable bar, each book first fills what it had pending on
the bar, then decides with the strategy's own rules (``MlStrategy.signal_for`` and
``MlStrategy.action_for``); the model-age guard and ``trade_live_only`` do not apply to the
books (they describe the model, not the account). A row per model and bar goes to
``ShadowDesk.rows``: ``atb live`` writes them to ``shadow.csv`` and compares the books at stop
(``atb_strategies.live.shadow_report``).

No shadow ever reaches the broker: the books are plain Python objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import backtrader as bt

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.strategies.virtual_book import VirtualBook

if TYPE_CHECKING:
    from atb_strategies.strategies.base import MlStrategy

#: Columns of a shadow row (and of ``shadow.csv``), in order.
SHADOW_COLUMNS = (
    "time",
    "symbol",
    "role",
    "model_key",
    "close",
    "predicted_return",
    "confidence",
    "signal",
    "action",
    "position",
    "equity",
    "trades",
)


@dataclass(frozen=True)
class ShadowSpec:
    """A challenger: a model type and a pinned version."""

    model_type: str
    version: str


def parse_shadows(specs: Sequence[str] | str | None, default_type: str) -> list[ShadowSpec]:
    """``"VERSION"`` (the strategy's model type) or ``"TYPE@VERSION"`` per challenger."""
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [specs]
    out = []
    for spec in specs:
        model_type, _, version = str(spec).rpartition("@")
        if not version or version in ("latest", "asof") or "/" in str(spec):
            raise ConfigurationError(
                f"The 'shadows' parameter of MlStrategy takes pinned versions, 'VERSION' or "
                f"'TYPE@VERSION'. Got {spec!r}; list versions with `atb models list`."
            )
        parsed = ShadowSpec(model_type or default_type, version)
        if parsed not in out:  # the same challenger twice is one book
            out.append(parsed)
    return out


class _Book:
    """One model's predictions and virtual account on one feed."""

    def __init__(self, role: str, pred: MlPrediction) -> None:
        self.role = role
        self.pred = pred
        self.book: VirtualBook | None = None


class ShadowDesk:
    """The virtual books of a strategy: its own model's twin and each challenger, per feed.

    Create it inside the strategy's ``__init__`` (the challengers' indicators must be created
    there) and call :meth:`on_bar` for each tradeable bar of each traded feed.
    """

    def __init__(self, strategy: MlStrategy, specs: Sequence[ShadowSpec]) -> None:
        self.strategy = strategy
        self.rows: list[dict[str, Any]] = []
        self.books: dict[Any, list[_Book]] = {}
        for data, champion in strategy.predictions.items():
            books = [_Book("champion", champion)]
            for spec in specs:
                # pinned, never reloaded, no guards: a challenger is judged as it is
                pred = strategy.prediction_for(
                    data,
                    model_type=spec.model_type,
                    version=spec.version,
                    asof_run=None,
                    follow_latest=False,
                    drift_window=None,
                    sequence_length=None,
                )
                pred.plotinfo.plot = False
                books.append(_Book("shadow", pred))
            self.books[data] = books

    def _new_book(self, data: bt.AbstractDataBase) -> VirtualBook:
        broker = self.strategy.broker
        comminfo = broker.getcommissioninfo(data)
        commission = float(getattr(comminfo.p, "commission", 0.0) or 0.0)
        params = getattr(broker, "p", None)
        slippage = float(getattr(params, "slip_perc", 0.0) or 0.0)
        cap = bool(getattr(params, "slip_match", True)) and not getattr(params, "slip_out", False)
        return VirtualBook(broker.getvalue(), commission, slippage, cap=cap)

    def on_bar(self, data: bt.AbstractDataBase) -> None:
        """Fill each book's pending orders on this bar, then decide for it and record a row."""
        strat = self.strategy
        p = strat.p
        bar = [float(x[0]) for x in (data.open, data.high, data.low, data.close)]
        stamp = bt.num2date(data.datetime[0]).isoformat()
        for entry in self.books[data]:
            if entry.book is None:
                entry.book = self._new_book(data)
            book = entry.book
            book.on_bar(*bar)
            ret = float(entry.pred.predicted_return[0])
            conf = float(entry.pred.confidence[0])
            if math.isnan(ret):
                signal, action = "none", "skip"
            else:
                signal = strat.signal_for(ret, conf)
                action = strat.action_for(book.position, book.pending_entry_or_exit, signal, ret)
                if action.startswith("enter_"):
                    side = 1 if action == "enter_long" else -1
                    size = book.value * p.position_size * conf / bar[3]
                    if size > 0:
                        book.enter(side, size, *strat._protective_prices(bar[3], side))
                elif action == "exit":
                    book.exit()
            self.rows.append(
                {
                    "time": stamp,
                    "symbol": getattr(data, "_name", ""),
                    "role": entry.role,
                    "model_key": entry.pred.model_key,
                    "close": bar[3],
                    "predicted_return": ret,
                    "confidence": conf,
                    "signal": signal,
                    "action": action,
                    "position": book.position,
                    "equity": book.value,
                    "trades": book.trades,
                }
            )
