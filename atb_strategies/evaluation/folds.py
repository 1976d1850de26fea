"""Walk-forward folds: where each fold trains, where it is tested, and the gap between.

Bars are positions in the candles. Fold ``k`` trains on ``[train_start, train_end)`` (its last
``val_fraction`` is the validation part that early stopping watches), leaves an **embargo** of
``embargo`` bars, and is tested on decision bars ``[test_start, test_end)``. The next fold steps
``step`` bars forward; ``expanding`` keeps ``train_start`` at the first bar.

* **Purge.** A training (or validation) sample belongs to its part only if its window, its
  feature warm-up and its target (``horizon`` bars ahead) lie inside the part, so no training
  label reaches into the embargo or the test period.
* **Embargo.** ``test_start - train_end`` bars feed no part. Its default covers what a sample
  spans: ``horizon + warm-up + sequence_length``. Folds here always train before they test, so
  no training data follows a test period inside a fold: the embargo before the test is the one
  that matters (an embargo after it would have nothing to act on).
* Test samples read their windows from bars before ``test_start``: that is their past, exactly
  what a deployed model sees, not leakage.

``check_fold`` refuses a fold whose training window reaches within ``embargo`` bars of its test
period (one bar of overlap is enough to refuse).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from atb_strategies.exceptions import ConfigurationError


@dataclass(frozen=True)
class Fold:
    """One fold, in bar positions of the candles (ends exclusive)."""

    number: int
    train_start: int
    val_start: int
    train_end: int
    test_start: int
    test_end: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def check_fold(fold: Fold, embargo: int) -> Fold:
    """Return ``fold`` if its parts are ordered and separated by ``embargo``; else raise."""
    f = fold
    if not 0 <= f.train_start < f.val_start < f.train_end:
        raise ConfigurationError(
            f"Fold {f.number}: training window {f.train_start}..{f.train_end} has no room for a "
            f"validation part starting at {f.val_start}."
        )
    if f.train_end + embargo > f.test_start:
        raise ConfigurationError(
            f"Fold {f.number}: the training window ends at bar {f.train_end} but its test period "
            f"starts at bar {f.test_start}; they must be at least the embargo ({embargo} bars) "
            "apart, or training labels would reach into the test period."
        )
    if f.test_start >= f.test_end:
        raise ConfigurationError(
            f"Fold {f.number}: empty test period {f.test_start}..{f.test_end}."
        )
    return fold


def make_folds(
    n_bars: int,
    *,
    train_bars: int,
    test_bars: int,
    step: int | None = None,
    embargo: int,
    expanding: bool = False,
    val_fraction: float = 0.15,
    horizon: int = 1,
    max_folds: int | None = None,
) -> list[Fold]:
    """Folds over ``n_bars`` candles, in time order.

    The first fold trains on ``[0, train_bars)`` and tests from ``train_bars + embargo``; each
    next one moves ``step`` (default ``test_bars``) bars on. The last test period ends where
    the candles (less ``horizon`` bars for its last targets) end. ``max_folds`` keeps the last
    ones.

    Raises
    ------
    ConfigurationError
        A parameter out of range, or no fold fits in the candles.
    """
    step = test_bars if step is None else step
    for name, value, low in (
        ("train_bars", train_bars, 2),
        ("test_bars", test_bars, 1),
        ("step", step, 1),
        ("embargo", embargo, 0),
    ):
        if value < low:
            raise ConfigurationError(
                f"The {name!r} parameter of make_folds must be >= {low}. Got {value!r} instead."
            )
    if not 0 < val_fraction < 1:
        raise ConfigurationError(
            f"The 'val_fraction' parameter of make_folds must be in (0, 1). "
            f"Got {val_fraction!r} instead."
        )
    usable = n_bars - horizon
    folds: list[Fold] = []
    test_start = train_bars + embargo
    while test_start < usable:
        train_end = test_start - embargo
        train_start = 0 if expanding else train_end - train_bars
        val_start = train_end - max(1, int((train_end - train_start) * val_fraction))
        test_end = min(test_start + test_bars, usable)
        fold = Fold(len(folds), train_start, val_start, train_end, test_start, test_end)
        folds.append(check_fold(fold, embargo))
        test_start += step
    if not folds:
        raise ConfigurationError(
            f"No fold fits: {n_bars} candles, but the first fold needs {train_bars} training "
            f"bars + {embargo} embargo + {horizon} bar(s) ahead. Use fewer --train-bars or more "
            "candles."
        )
    if max_folds is not None:
        folds = [Fold(i, *list(f.to_dict().values())[1:]) for i, f in enumerate(folds[-max_folds:])]
    return folds
