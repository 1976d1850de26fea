"""Power of the walk-forward gate: how often each model family finds a planted signal.

For each noise (``gaussian``, ``garch_t``), signal strength ``phi`` (0 is the null) and market
seed, ``generate_planted_ohlcv`` draws a market; then

* every model family in ``--families`` (default: every family registered in
  ``atb_strategies.training.family``; ``NAME:RECIPE:calibrated`` also sets the recipe and
  calibration, e.g. ``mlp:lags:calibrated``) runs the walk-forward on it
  (``run_walk_forward``, local executor) and the run counts as "edge" when the pooled
  ``beats_baselines`` is true;
* the **oracle** (the true conditional mean of the next return) is fed to the same statistics
  on the test bars of the same folds, with the same per-fold training drift
  (``atb_strategies.evaluation.oracle``): its rate of "edge" is the ceiling any model can
  reach. At phi = 0 the oracle predicts a zero return, exactly last close, and never claims an
  edge: the false-positive rates that matter are the families'.

Printed: a table (family, noise, phi, runs, detect rate, how often the edge CI and the one-sided
Diebold-Mariano test held alone, oracle rate, ratio), the false-positive
rate at phi = 0 against the 5 % goal; written to ``--out``: ``power.csv`` (one row per run) and
``power.png`` (detect rate against phi per noise, the oracle dashed).

Goals (issue 18), at the default sizes (18,000 bars, 4,000 train, 1,000 test: ~14,000
out-of-sample bars): false positives <= 5 % at phi = 0 for every family (>= 40 runs over both
noises); the best family detects phi = 0.05 in >= 80 % of runs, phi = 0.1 in >= 95 %, and
reaches >= 80 % of the oracle's rate at each strength.

Usage: ``python3 benchmarks/bench_power.py [--families mlp,gru] [--seeds 20] [--phis
0,0.02,0.05,0.1,0.2] [--noises gaussian,garch_t] [--rule ar1] [--bars 18000] [--train-bars
4000] [--test-bars 1000] [--expanding] [--epochs 30] [--sequence-length 24] [--workers 2] [--out
out/bench_power] [--report] [--fresh]``. A run **resumes**: every ``power.csv`` row keeps its
sizes, and a later run with the same sizes skips the (family, noise, phi, seed) already there
and appends the rest, so a small run can be grown (more seeds: ``--first-seed``; more phis,
noises or families) and the table always covers every run of those sizes that matches the
arguments; ``--report`` trains nothing and only prints and plots; ``--fresh`` starts over.
``--quick``: oracle + mlp, 3 seeds, 4,000 bars, phi 0, 0.1, 0.2 (a check
that it runs, not a measurement). A full run is hours of training on 2 cores: 2 noises x 5
phis x 20 seeds x (families) walk-forwards of 14 folds each.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.data.planted import NOISES, RULES, generate_planted_ohlcv
from atb_strategies.evaluation.oracle import oracle_oos
from atb_strategies.evaluation.walkforward import WalkForwardConfig, run_walk_forward
from atb_strategies.exceptions import AtbError
from atb_strategies.training.family import FAMILIES, model_family

ORACLE = "oracle"
PHIS = (0.0, 0.02, 0.05, 0.1, 0.2)


def _row(family: str, noise: str, phi: float, seed: int, oos: dict[str, Any]) -> dict[str, Any]:
    dm = oos["dm_vs_last_close"]
    return {
        "family": family,
        "noise": noise,
        "phi": phi,
        "seed": seed,
        "samples": oos["samples"],
        "direction_accuracy": oos["direction_accuracy"],
        "edge_vs_fixed": oos["edge_vs_fixed"],
        "edge_vs_fixed_ci_low": oos["edge_vs_fixed_ci95"][0],
        "edge": oos["edge"],
        "dm_stat": dm["stat"],
        "dm_pvalue_one_sided": dm.get("pvalue_one_sided"),
        "beats_baselines": bool(oos["beats_baselines"]),
    }


#: The sizes a run was made with, kept in every row of ``power.csv``: a later run with the same
#: sizes resumes (skips the (family, noise, phi, seed) already there) and appends; rows of other
#: sizes stay in the file but out of this run's table.
SIZE_COLUMNS = (
    "rule",
    "bars",
    "train_bars",
    "test_bars",
    "epochs",
    "sequence_length",
    "expanding",
)


def _sizes(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SIZE_COLUMNS}


def load_previous(path: Path, args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of an earlier ``power.csv``: (those with this run's sizes, the others)."""
    if args.fresh or not path.exists():
        return pd.DataFrame(), pd.DataFrame()
    old = pd.read_csv(path)
    # runs from before --expanding (no value) were all rolling windows
    expanding = old["expanding"] if "expanding" in old.columns else pd.Series(False, old.index)
    old["expanding"] = expanding.fillna(False).astype(bool)
    if not set(SIZE_COLUMNS) <= set(old.columns):
        return pd.DataFrame(), old
    same = np.ones(len(old), dtype=bool)
    for name, value in _sizes(args).items():
        same &= (old[name] == value).to_numpy()
    return old[same].reset_index(drop=True), old[~same].reset_index(drop=True)


def family_options(label: str) -> dict[str, Any]:
    """The ``WalkForwardConfig`` fields of a ``--families`` entry: a family name, optionally
    followed by ``:RECIPE`` and ``:calibrated`` or ``:uncalibrated`` (``mlp:lags:calibrated``:
    the MLP on the lagged-return recipe, calibrated on validation). The label is the run's
    ``family`` in ``power.csv``."""
    name, *options = label.split(":")
    out: dict[str, Any] = {"architecture": name}
    for option in options:
        if option in ("calibrated", "uncalibrated"):
            out["calibrate"] = option == "calibrated"
        else:
            out["recipe"] = option
    return out


def run_point(
    families: list[str],
    noise: str,
    phi: float,
    seed: int,
    args: argparse.Namespace,
    base: WalkForwardConfig,
    done: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """The oracle's and every family's record on one planted market, but those in ``done``
    (already in ``power.csv`` from an earlier run)."""
    candles, true_mean = generate_planted_ohlcv(
        args.bars, phi=phi, rule=args.rule, noise=noise, seed=seed
    )
    rows = []
    if ORACLE not in done:
        rows.append(_row(ORACLE, noise, phi, seed, oracle_oos(candles, true_mean, base)))
    for family in families:
        if family in done:
            continue
        registry = Path(tempfile.mkdtemp(prefix="bench-power-"))
        config = replace(base, **family_options(family), registry=registry)
        started = time.perf_counter()
        try:
            result = run_walk_forward(candles, config, executor="local", workers=args.workers)
        except AtbError as e:
            print(f"  {family} {noise} phi={phi} seed={seed}: FAILED {e}")
            continue
        finally:
            shutil.rmtree(registry, ignore_errors=True)
        row = _row(family, noise, phi, seed, result.oos)
        row["seconds"] = time.perf_counter() - started
        row["failed_folds"] = sum(r.error is not None for r in result.results)
        rows.append(row)
    return rows


def power_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Detect rate per (family, noise, phi), the oracle's on the same markets, their ratio, and
    how often each half of the gate held alone (``ci_rate``: the edge CI above 0; ``dm_rate``:
    the one-sided Diebold-Mariano test), which says which condition limits detection."""
    runs = runs.assign(
        ci_ok=runs["edge_vs_fixed_ci_low"] > 0, dm_ok=runs["dm_pvalue_one_sided"] < 0.05
    )
    rate = (
        runs.groupby(["family", "noise", "phi"])
        .agg(
            runs=("beats_baselines", "count"),
            detect_rate=("beats_baselines", "mean"),
            ci_rate=("ci_ok", "mean"),
            dm_rate=("dm_ok", "mean"),
        )
        .reset_index()
    )
    oracle = rate[rate["family"] == ORACLE][["noise", "phi", "detect_rate"]]
    table = rate.merge(oracle.rename(columns={"detect_rate": "oracle_rate"}), on=["noise", "phi"])
    with np.errstate(divide="ignore", invalid="ignore"):
        table["ratio"] = table["detect_rate"] / table["oracle_rate"]
    table.loc[table["phi"] == 0, "ratio"] = np.nan  # at the null it is the false-positive rate
    table["first"] = table["family"] != ORACLE  # the oracle's rows first
    table = table.sort_values(["first", "family", "noise", "phi"]).drop(columns="first")
    return table.reset_index(drop=True)


def plot_power(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Detect rate against phi, one panel per noise; the oracle dashed, the 5 % level dotted.

    The phis are evenly spaced categories (0, 0.02, 0.05 ... would crowd at the left on a linear
    axis) and each family's markers are shifted a little sideways, so that families at the same
    rate do not hide each other; every marker is labelled with its runs (``detected/runs``)."""
    from matplotlib.figure import Figure

    noises = list(dict.fromkeys(table["noise"]))
    phis = sorted(table["phi"].unique())
    families = list(dict.fromkeys(table["family"]))
    width = 0.5 / max(1, len(families))
    fig = Figure(figsize=(max(6.0, 0.9 * len(phis) + 3) * len(noises), 5))
    axes = fig.subplots(1, len(noises), squeeze=False)[0]
    for ax, noise in zip(axes, noises, strict=True):
        part = table[table["noise"] == noise]
        for k, family in enumerate(families):
            rows = part[part["family"] == family].sort_values("phi")
            if rows.empty:
                continue
            oracle = family == ORACLE
            x = [phis.index(phi) + (k - (len(families) - 1) / 2) * width for phi in rows["phi"]]
            y = 100 * rows["detect_rate"]
            (line,) = ax.plot(
                x,
                y,
                marker="o",
                linestyle="--" if oracle else "-",
                color="black" if oracle else None,
                label=f"{family} (ceiling)" if oracle else str(family),
            )
            for xi, yi, rate, runs in zip(x, y, rows["detect_rate"], rows["runs"], strict=True):
                ax.annotate(
                    f"{round(rate * runs)}/{runs}",
                    (xi, yi),
                    xytext=(0, 5),
                    textcoords="offset points",
                    fontsize=6,
                    ha="center",
                    color=line.get_color(),
                )
        ax.axhline(5, color="red", linestyle=":", linewidth=1, label="5 % (false positives)")
        ax.set_xticks(range(len(phis)), [f"{phi:g}" for phi in phis])
        ax.set_xlim(-0.6, len(phis) - 0.4)
        ax.set_title(f"noise: {noise}")
        ax.set_xlabel("planted strength phi (families shifted sideways to stay visible)")
        ax.set_ylabel("runs where beats_baselines, %")
        ax.set_ylim(-3, 108)
        ax.legend(loc="center left", fontsize=8, bbox_to_anchor=(0.0, 0.6))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _span(counts: pd.Series) -> str:
    """``5`` or ``1-5``: how many runs the points of the curve rest on."""
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}-{high}"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--phis", default=",".join(f"{p:g}" for p in PHIS))
    parser.add_argument("--noises", default=",".join(NOISES))
    parser.add_argument("--rule", default="ar1", choices=RULES)
    parser.add_argument("--bars", type=int, default=18_000)
    parser.add_argument("--train-bars", type=int, default=4_000)
    parser.add_argument("--test-bars", type=int, default=1_000)
    parser.add_argument(
        "--expanding",
        action="store_true",
        help="every fold trains on all bars before its test period (walk-forward --expanding)",
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--sequence-length", type=int, default=24)
    parser.add_argument("--bootstrap-reps", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/bench_power"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--report",
        action="store_true",
        help="train nothing: the table and curve of the runs already in power.csv",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="ignore (and overwrite) an earlier power.csv"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.families, args.seeds, args.phis = "mlp", 3, "0,0.1,0.2"
        args.bars, args.train_bars, args.test_bars = 4_000, 1_200, 600
        args.epochs, args.bootstrap_reps = 5, 300
    return args


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = _parse(argv)
    families = [f for f in args.families.split(",") if f]
    for name in list(families):
        try:
            model_family(family_options(name)["architecture"])
        except AtbError as e:
            print(f"skipping family {name!r}: {e}")
            families.remove(name)
    phis = [float(p) for p in args.phis.split(",")]
    noises = args.noises.split(",")
    base = WalkForwardConfig(
        symbol="BTCUSDT",
        train_bars=args.train_bars,
        test_bars=args.test_bars,
        sequence_length=args.sequence_length,
        epochs=args.epochs,
        bootstrap_reps=args.bootstrap_reps,
        expanding=args.expanding,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "power.csv"
    previous, other_sizes = load_previous(csv, args)
    rows: list[dict[str, Any]] = previous.to_dict("records")
    if rows:
        print(f"resuming: {len(rows)} run(s) with these sizes already in {csv}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(
        f"power: families {families or '(oracle only)'}, rule {args.rule}, noises {noises}, "
        f"phi {phis}, {args.seeds} seeds, {args.bars} bars ({args.train_bars} train, "
        f"{args.test_bars} test{', expanding' if args.expanding else ''}), "
        f"embargo {base.resolved_embargo()}"
    )
    started = time.perf_counter()
    for noise in [] if args.report else noises:
        for phi in phis:
            for seed in seeds:
                done = frozenset(
                    r["family"]
                    for r in rows
                    if r["noise"] == noise and r["phi"] == phi and r["seed"] == seed
                )
                new = run_point(families, noise, phi, seed, args, base, done)
                rows.extend({**row, **_sizes(args)} for row in new)
                if new:  # progress kept after every market
                    pd.concat([other_sizes, pd.DataFrame(rows)]).to_csv(csv, index=False)
            done = [
                r
                for r in rows
                if r["noise"] == noise
                and r["phi"] == phi
                and r["seed"] in seeds
                and r["family"] in (ORACLE, *families)
            ]
            rates = pd.DataFrame(done).groupby("family")["beats_baselines"].mean()
            print(
                f"  {noise:8s} phi={phi:<5g} "
                + "  ".join(f"{k} {100 * v:.0f} %" for k, v in rates.items())
                + f"  ({time.perf_counter() - started:.0f} s)"
            )
    runs = pd.DataFrame(rows)
    pd.concat([other_sizes, runs]).to_csv(csv, index=False)
    runs = runs[
        runs["noise"].isin(noises)
        & runs["phi"].isin(phis)
        & runs["seed"].isin(seeds)
        & runs["family"].isin([ORACLE, *families])
    ]
    table = power_table(runs)
    print()
    print(
        table.to_string(
            index=False,
            formatters={
                "detect_rate": "{:.0%}".format,
                "ci_rate": "{:.0%}".format,
                "dm_rate": "{:.0%}".format,
                "oracle_rate": "{:.0%}".format,
                "ratio": "{:.2f}".format,
            },
        )
    )
    null = runs[runs["phi"] == 0].groupby("family")["beats_baselines"].agg(["count", "mean"])
    print("\nfalse positives at phi = 0 (goal <= 5 %, >= 40 runs):")
    for family, (count, mean) in null.iterrows():
        print(f"  {family:8s} {100 * mean:.1f} % of {int(count)} runs")
    title = (
        f"planted {args.rule}: {args.bars} bars, train "
        f"{'>= ' if args.expanding else ''}{args.train_bars}, test "
        f"{args.test_bars}, {_span(runs.groupby(['family', 'noise', 'phi']).size())} runs "
        "per point"
    )
    path = plot_power(table, args.out / "power.png", title)
    print(f"\nwritten: {args.out / 'power.csv'}, {path}")
    return table


if __name__ == "__main__":
    # quiet per-fold training logs when run as a script (not when imported, e.g. by a test:
    # a process-wide level would silence other tests' log capture)
    logging.getLogger("atb_strategies").setLevel(logging.WARNING)
    main()
