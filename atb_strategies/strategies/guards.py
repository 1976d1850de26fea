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

    def __init__(self, owner: str, max_age: Any, action: Any) -> None:
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

    def __init__(self, owner: str, action: Any) -> None:
        self.action = check_action(owner, "drift_action", action)
        self._drifting: dict[Any, str] = {}

    def reason(self, data: bt.AbstractDataBase, pred: Any) -> str | None:
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

    def __init__(self, owner: str, max_age: Any) -> None:
        self.setting = max_age
        self.max_age = parse_duration(owner, "max_sentiment_age", max_age)
        self._stale: set[Any] = set()

    def reason(self, data: bt.AbstractDataBase, pred: Any) -> str | None:
        line = getattr(data.lines, "sentiment_age", None)
        if self.max_age is None or line is None:
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


#: How each guard's reasons start (``guard_summary`` groups decisions by these).
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


def guard_summary(decisions: list[dict[str, Any]]) -> list[str]:
    """One line per guard that fired in ``decisions`` (``MlStrategy.decisions``): on how many
    bars, from which bar to which, and the first reason; nothing when none fired."""
    fired: dict[str, list[dict[str, Any]]] = {}
    for decision in decisions:
        for name, part in fired_guards(decision.get("reason")).items():
            fired.setdefault(name, []).append({**decision, "reason": part})
    lines = []
    for name, rows in fired.items():
        first, last = (r["bar"][:16].replace("T", " ") for r in (rows[0], rows[-1]))
        lines.append(
            f"  {name.capitalize():<22} fired on {len(rows):,} of {len(decisions):,} bars "
            f"({first} .. {last}): {rows[0]['reason']}"
        )
    return lines
