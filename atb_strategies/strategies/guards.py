"""Guards that stop a model from trading when it should not be trusted any more.

Each guard looks at the bar about to be decided and returns a reason when it fires; the
strategy then applies the guard's action (``MlStrategy.next``):

* ``warn``: log once (per model, per guard) and trade as usual;
* ``no_entries``: also refuse new entries (open positions keep their stop-loss and
  take-profit, and exits on a reversed prediction still happen);
* ``flatten``: also close open positions.

The guards:

* **model age** (``max_model_age`` + ``age_action``): the bar is later than the model's
  training data (lineage ``seen_until``) plus the limit;
* **drift** (``drift_action``): the population stability index of a model input over the last
  ``drift_window`` bars, against the distribution the model was trained on (bundle metadata
  ``drift_reference``), exceeds ``drift_threshold``; see ``atb_strategies.features.drift``;
* **sentiment staleness** (``max_sentiment_age``): the sentiment value a sentiment model reads
  at this bar was published longer ago than the limit. It always acts as ``no_entries``: a
  stale input says nothing about the position already held.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import backtrader as bt
import pandas as pd

from atb_strategies.bundle.lineage import training_period
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features.candles import timeframe_to_timedelta
from atb_strategies.sentiment import sentiment_staleness

log = logging.getLogger(__name__)

#: What a firing guard does (see the module docstring).
GUARD_ACTIONS = ("warn", "no_entries", "flatten")


def check_action(owner: str, name: str, value: Any) -> str:
    if value not in GUARD_ACTIONS:
        raise ConfigurationError(
            f"The {name!r} parameter of {owner} must be one of 'warn', 'no_entries', "
            f"'flatten'. Got {value!r} instead."
        )
    return value


def parse_duration(owner: str, name: str, value: Any) -> pd.Timedelta | None:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"`` as a Timedelta; None stays None."""
    if value is None:
        return None
    try:
        parsed = timeframe_to_timedelta(str(value))  # <n>m, <n>h, <n>d or <n>w
    except ConfigurationError:
        parsed = None
    if parsed is None or parsed <= pd.Timedelta(0):
        raise ConfigurationError(
            f"The {name!r} parameter of {owner} must be a positive duration such as "
            f"'30d' or '12h'. Got {value!r} instead."
        )
    return parsed


class ModelAgeGuard:
    """Fires when the bar is more than ``max_age`` after the last bar the model was trained on.

    A model whose training period is unknown (no lineage) is reported once and never fires.
    """

    name = "model-age guard"

    def __init__(self, owner: str, max_age: Any, action: Any) -> None:
        self.enabled = max_age is not None
        self.action = check_action(owner, "age_action", action)
        self.setting = max_age
        self.max_age = parse_duration(owner, "max_model_age", max_age)
        self._seen_until: dict[str, Any] = {}
        self._reported: set[str] = set()

    def reason(self, data: bt.AbstractDataBase, pred: Any) -> str | None:
        if self.max_age is None:
            return None
        key = pred.model_key
        if key not in self._seen_until:
            bundle = next((b for b in pred.bundles if b.key == key), pred.bundle)
            period = training_period(bundle.metadata.raw)
            self._seen_until[key] = period.seen_until if period is not None else None
            if period is None:
                log.warning("%s: training period unknown; max_model_age not checked", key)
        seen = self._seen_until[key]
        if seen is None:
            return None
        age = bt.num2date(data.datetime[0]) - seen
        if age <= self.max_age:
            return None
        if key not in self._reported:
            self._reported.add(key)
            log.warning(
                "%s is %.1f days past the last bar it was trained on (max_model_age %s): %s",
                key,
                age / pd.Timedelta(days=1),
                self.setting,
                describe(self.action),
            )
        return f"model older than max_model_age {self.setting}"


class DriftGuard:
    """Fires while the serving model's drift score (``MlPrediction.drift``) is > 1: a feature's
    PSI over the last ``drift_window`` bars is past its threshold. Logged when an episode
    starts (naming the feature) and when it ends, not at every bar."""

    name = "drift guard"
    enabled = True

    def __init__(self, owner: str, action: Any) -> None:
        self.action = check_action(owner, "drift_action", action)
        self._drifting: dict[Any, str] = {}
        self.scored = 0  # bars with a drift score
        self._why_not: str | None = None

    def not_checked(self) -> str | None:
        """Why the guard never had a score (None once it had one)."""
        return None if self.scored else self._why_not

    def reason(self, data: bt.AbstractDataBase, pred: Any) -> str | None:
        if math.isfinite(float(pred.drift[0])):
            self.scored += 1
        elif not self.scored:
            self._why_not = pred.drift_unavailable()
        why = pred.drift_reason()
        if why is None:
            if data in self._drifting:
                del self._drifting[data]
                log.warning("%s: %s: inputs back within thresholds", data._name, pred.model_key)
            return None
        if data not in self._drifting:
            self._drifting[data] = why
            log.warning("%s: %s: %s: %s", data._name, pred.model_key, why, describe(self.action))
        return why


class SentimentAgeGuard:
    """Fires when the feed's ``sentiment_age`` line (hours) exceeds ``max_age``.

    Feeds without that line (backtests on aligned sentiment, which is checked when aligned)
    never fire. The outage is logged when it starts and when it ends, not at every bar.
    """

    action = "no_entries"
    name = "sentiment staleness"

    def __init__(self, owner: str, max_age: Any) -> None:
        self.enabled = max_age is not None
        self.setting = max_age
        self.max_age = parse_duration(owner, "max_sentiment_age", max_age)
        self._stale: set[Any] = set()

    def reason(self, data: bt.AbstractDataBase, pred: Any) -> str | None:
        if self.max_age is None:
            return None
        line = getattr(data.lines, "sentiment_age", None)
        if line is None:
            return None
        hours = float(line[0])
        why = sentiment_staleness(hours, self.setting)
        if why is None:
            if data in self._stale:
                self._stale.discard(data)
                log.warning("%s: sentiment is fresh again (%.1f h old)", data._name, hours)
            return None
        if data not in self._stale:
            self._stale.add(data)
            log.warning("%s: %s: no new entries until a fresh value arrives", data._name, why)
        return why


def describe(action: str) -> str:
    return {
        "warn": "still trading",
        "no_entries": "no new entries",
        "flatten": "closing positions, no new entries",
    }[action]


#: How each guard's reasons start (``guard_report`` groups decisions by these).
_GUARD_NAMES = {
    "model older than": "model-age guard",
    "inputs drifted": "drift guard",
    "sentiment is": "sentiment staleness",
    "no sentiment value": "sentiment staleness",
}


def fired_guards(reason: str | None) -> dict[str, str]:
    """Guard name -> its part of a decision's ``reason`` (empty when no guard fired)."""
    out = {}
    for part in str(reason or "").split("; "):
        name = next((n for p, n in _GUARD_NAMES.items() if part.startswith(p)), None)
        if name is not None:
            out[name] = part
    return out


def guard_report(decisions: list[dict[str, Any]], guards: list[Any]) -> list[dict[str, Any]]:
    """Per enabled guard (``MlStrategy.guards``): its action, on how many of the decided bars
    it fired, the first and last such bar, the first reason, and for a guard that never had
    anything to check (a drift window that never filled, a model without a drift reference)
    why. The backtest summary prints it and ``summary.json`` keeps it under ``guards``."""
    fired: dict[str, list[dict[str, Any]]] = {}
    for decision in decisions:
        for name, part in fired_guards(decision.get("reason")).items():
            fired.setdefault(name, []).append({**decision, "reason": part})
    report = []
    for guard in guards:
        if not getattr(guard, "enabled", True):
            continue
        rows = fired.get(guard.name, [])
        not_checked = guard.not_checked() if hasattr(guard, "not_checked") else None
        report.append(
            {
                "guard": guard.name,
                "action": guard.action,
                "fired_bars": len(rows),
                "decided_bars": len(decisions),
                "first": rows[0]["bar"] if rows else None,
                "last": rows[-1]["bar"] if rows else None,
                "first_reason": rows[0]["reason"] if rows else None,
                "not_checked": not_checked,
            }
        )
    return report


def format_guard_report(report: list[dict[str, Any]]) -> list[str]:
    """The summary lines of :func:`guard_report` (one per guard)."""
    lines = []
    for g in report:
        head = f"  {g['guard'].capitalize():<22} "
        if g["not_checked"]:
            lines.append(f"{head}not checked: {g['not_checked']}")
        elif not g["fired_bars"]:
            lines.append(f"{head}never fired ({g['action']})")
        else:
            first, last = (g[k][:16].replace("T", " ") for k in ("first", "last"))
            lines.append(
                f"{head}fired on {g['fired_bars']:,} of {g['decided_bars']:,} bars "
                f"({g['action']}; first {first}, last {last}): {g['first_reason']}"
            )
    return lines
