"""``bars.jsonl``: the per-bar status of a live or paper session, one JSON object a line.

``LiveStatus`` hands each live bar's status to a :class:`BarsLog` (``bars.jsonl`` beside the
journal): time, symbol, close, prediction, return, confidence, signal, action, position, value,
P&L, drift, the guards firing, the serving model and its age (hours since the last bar it was
trained on), the orders filled since the last bar and the orders still open. Each line is
flushed as it is written, so a reader (``atb dashboard``) sees a running session bar by bar and
a killed session loses at most its unfinished last line, which :func:`read_bars` skips.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import backtrader as bt

from atb_strategies.bundle.lineage import training_period
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.strategies.guards import fired_guards

log = logging.getLogger(__name__)

#: File name of the per-bar status inside a session directory.
BARS_FILE = "bars.jsonl"

_DONE = (bt.Order.Completed, bt.Order.Partial)
_OPEN = (bt.Order.Submitted, bt.Order.Accepted, bt.Order.Partial)


def _number(value: Any) -> float | None:
    """A float, or None for NaN / infinity (JSON has no NaN)."""
    x = float(value)
    return x if math.isfinite(x) else None


def model_age_hours(pred: Any, when: Any) -> float | None:
    """Hours from the last bar the serving model was trained on to ``when``; None unknown."""
    key = pred.model_key
    bundle = next((b for b in getattr(pred, "bundles", ()) if b.key == key), pred.bundle)
    try:
        period = training_period(bundle.metadata.raw)
    except Exception:  # a bundle with a bad lineage date: the age is unknown, nothing else
        return None
    if period is None:
        return None
    seen = period.seen_until.tz_localize(None) if period.seen_until.tzinfo else period.seen_until
    return round((when - seen.to_pydatetime()).total_seconds() / 3600, 2)


def _order(order: bt.Order, data: bt.AbstractDataBase) -> dict[str, Any]:
    return {
        "ref": order.ref,
        "side": "buy" if order.isbuy() else "sell",
        "type": order.getordername().lower(),
        "amount": abs(float(order.created.size)),
        "price": None if order.exectype == bt.Order.Market else _number(order.created.price),
        "symbol": data._name,
    }


class BarsLog:
    """Append one line per live bar to ``path`` (created with its folder), flushed per line.

    Parameters
    ----------
    path : Path or str
        The ``bars.jsonl`` file; an unfinished last line left by a killed session is cut first.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self.path.open("rb+") as f:
                text = f.read()
                if text and not text.endswith(b"\n"):
                    f.truncate(text.rfind(b"\n") + 1)
        self._file = self.path.open("a", encoding="utf-8")
        self._filled: set[tuple[int, float]] = set()

    @classmethod
    def beside(cls, journal: Path | str) -> BarsLog:
        """The session's ``bars.jsonl``, in the folder of its journal."""
        return cls(Path(journal).with_name(BARS_FILE))

    def close(self) -> None:
        self._file.close()

    def write(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one JSON line and flush it."""
        self._file.write(json.dumps(row, default=str, allow_nan=False) + "\n")
        self._file.flush()

    def _orders(self, strategy: bt.Strategy, data: bt.AbstractDataBase) -> tuple[list, list]:
        """The fills of ``data`` not written yet and its open orders (backtrader's broker keeps
        every order in ``orders``; a live broker's are in its journal instead)."""
        fills, still_open = [], []
        for order in getattr(strategy.broker, "orders", None) or []:
            if not isinstance(order, bt.Order) or order.data is not data:
                continue
            if order.status in _OPEN and order.status != bt.Order.Partial:
                still_open.append(_order(order, data))
            done = (order.ref, float(order.executed.size))
            if order.status in _DONE and done not in self._filled and order.executed.size:
                self._filled.add(done)
                fills.append(
                    {
                        **_order(order, data),
                        "amount": abs(float(order.executed.size)),
                        "price": _number(order.executed.price),
                        "fee": _number(order.executed.comm),
                        "time": f"{bt.num2date(order.executed.dt):%Y-%m-%dT%H:%M:%S}",
                    }
                )
        return fills, still_open

    def bar(
        self,
        strategy: bt.Strategy,
        data: bt.AbstractDataBase,
        pred: Any,
        decision: dict[str, Any],
        value: float,
        pnl: float,
    ) -> None:
        """Write the status of ``data``'s current bar (what ``LiveStatus`` prints, and more)."""
        when = bt.num2date(data.datetime[0])
        fills, still_open = self._orders(strategy, data)
        self.write(
            {
                "time": f"{when:%Y-%m-%dT%H:%M:%S}",
                "symbol": data._name,
                "close": _number(data.close[0]),
                "prediction": _number(pred.predicted_price[0]),
                "return": _number(pred.predicted_return[0]),
                "confidence": _number(pred.confidence[0]),
                "signal": decision.get("signal"),
                "action": decision.get("action"),
                "position": float(strategy.getposition(data).size),
                "value": _number(value),
                "pnl": _number(pnl),
                "drift": _number(pred.drift[0]),
                "guards": [n.split()[0] for n in fired_guards(decision.get("reason"))],
                "reason": decision.get("reason"),
                "model": pred.model_key,
                "model_age_hours": model_age_hours(pred, when),
                "fills": fills,
                "open_orders": still_open,
            }
        )


def bars_path(path: Path | str) -> Path:
    """``bars.jsonl`` of a session: ``path`` is the file, its folder, or the journal beside it."""
    path = Path(path)
    if path.is_dir():
        return path / BARS_FILE
    return path if path.suffix == ".jsonl" else path.with_name(BARS_FILE)


def read_bars(path: Path | str) -> list[dict[str, Any]]:
    """Every complete line of a ``bars.jsonl`` (none when it does not exist yet); a damaged or
    unfinished last line (a session writing or killed) is skipped.

    Raises
    ------
    ConfigurationError
        A line before the last is not a JSON object: names the file and the line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"{path} cannot be read ({e}); restore it or remove it.") from e
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            if number == len(lines):
                log.debug("%s: skipped an unfinished last line", path)
                break
            raise ConfigurationError(
                f"{path}: line {number} is not a bar record (JSON object); restore the file "
                "or remove that line."
            ) from None
        rows.append(row)
    return rows
