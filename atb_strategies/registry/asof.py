"""Point-in-time versions: which version a deployment would have served at each bar.

``asof_schedule(registry, symbol, model_type, timeframe)`` lists the versions with a known
training period (``bundle.lineage``) as ``(available_from, version)``, oldest first. At a bar
that opens at ``t`` the served version is the newest one with ``available_from <= t``: it never
saw that bar or any later one. Ties (several seeds of one walk-forward fold) go to the lowest
seed, then to the version registered last. Versions of another timeframe, unreadable ones and
those without lineage are left out.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

import pandas as pd

from atb_strategies.bundle.format import METADATA_FILE
from atb_strategies.bundle.jsonio import read_json
from atb_strategies.bundle.lineage import training_period
from atb_strategies.exceptions import AtbError, ModelNotFoundError
from atb_strategies.registry.layout import RegistryLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsofSchedule:
    """Versions in the order they became available; ``at(t)`` is the one serving bar ``t``."""

    symbol: str
    model_type: str
    available_from: tuple[pd.Timestamp, ...]
    versions: tuple[str, ...]

    def at(self, when: pd.Timestamp) -> str | None:
        """The version serving a bar that opens at ``when`` (None before the first one)."""
        i = bisect.bisect_right(self.available_from, pd.Timestamp(when)) - 1
        return self.versions[i] if i >= 0 else None

    def index_at(self, when: pd.Timestamp) -> int:
        """Position in ``versions`` of ``at(when)``; -1 before the first one."""
        return bisect.bisect_right(self.available_from, pd.Timestamp(when)) - 1


def asof_schedule(
    layout: RegistryLayout,
    symbol: str,
    model_type: str,
    timeframe: str,
    run: str | None = None,
) -> AsofSchedule:
    """The point-in-time schedule of ``symbol/model_type`` at ``timeframe``.

    ``run`` keeps only the versions of one walk-forward (its ``walk_forward_id``); without it
    every version with a known period takes part, and mixing several runs (or walk-forward folds
    with versions from ``atb train model``) is logged as a warning.

    Raises
    ------
    ModelNotFoundError
        When no version has a known training period (reference bundles, or none trained).
    """
    rows = []
    runs: set[str | None] = set()
    for order, version in enumerate(layout.versions(symbol, model_type)):
        try:
            path = layout.version_dir(symbol, model_type, version)
            meta = read_json(path / METADATA_FILE, path)
            if meta.get("timeframe") != timeframe:
                continue
            period = training_period(meta, path / METADATA_FILE)
        except AtbError as e:
            log.warning("version='asof' leaves out %s/%s@%s: %s", symbol, model_type, version, e)
            continue
        lineage = meta.get("training")
        lineage = lineage if isinstance(lineage, dict) else {}
        run_id = lineage.get("walk_forward_id")
        if run is not None and run_id != run:
            continue
        if period is not None:
            seed = lineage.get("seed")
            seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
            rows.append((period.available_from, -seed, order, version))
            runs.add(run_id if isinstance(run_id, str) else None)
    if not rows:
        raise ModelNotFoundError(
            f"version='asof' needs versions of {symbol}/{model_type} ({timeframe})"
            + (f" from walk-forward {run}" if run else "")
            + " whose "
            "training period is known (models trained by atb train model or atb train "
            "walk-forward); there are none. Train some, or name a version."
        )
    if len(runs) > 1:
        log.warning(
            "version='asof' of %s/%s mixes %d training runs (walk-forwards and single "
            "trainings); pass asof_run=WALK_FORWARD_ID to replay one",
            symbol,
            model_type,
            len(runs),
        )
    rows.sort()
    return AsofSchedule(
        symbol,
        model_type,
        tuple(r[0] for r in rows),
        tuple(r[3] for r in rows),
    )
