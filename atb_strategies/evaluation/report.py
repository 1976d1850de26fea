"""The walk-forward report: ``folds.csv``, ``oos_predictions.parquet``, ``summary.json``, a chart
(``chart.png``) and the interactive ``report.html`` (``evaluation.html_report``).

``summary.json`` keys: ``walk_forward_id``, ``config``, ``embargo_bars``, ``data_sha256``,
``folds`` (count), ``failed_folds``, ``oos`` (pooled: ``direction_accuracy``,
``majority_baseline``, ``edge``, ``edge_ci95``, ``fixed_baseline``, ``edge_vs_fixed``,
``edge_vs_fixed_ci95``, ``edge_ci95_method``, ``dm_vs_last_close``, ``dm_vs_drift``,
``seed_spread``, ``beats_baselines``, ``errors``), ``per_fold`` and, when the point-in-time
backtest ran, ``backtest`` (the strategy and its baselines). ``beats_baselines`` reads
``edge_vs_fixed_ci95`` (the baseline fixed before the test) and the one-sided
``dm_vs_last_close.pvalue_one_sided``; ``edge`` over the majority is reported beside it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.bundle.jsonio import write_json
from atb_strategies.evaluation.html_report import write_walk_forward_html
from atb_strategies.evaluation.walkforward import WalkForwardResult
from atb_strategies.stats import direction_accuracy, fixed_edge_differences, majority_baseline
from atb_strategies.training.register import null_if_undefined


def fold_table(result: WalkForwardResult) -> pd.DataFrame:
    """One row per (fold, seed): periods, version, test statistics, gate."""
    rows = []
    for r in result.results:
        oos = r.metrics.get("oos") or {}
        dm = oos.get("dm_vs_last_close") or {}
        ci = oos.get("edge_ci95") or [math.nan, math.nan]
        fixed_ci = oos.get("edge_vs_fixed_ci95") or [math.nan, math.nan]
        preds = r.predictions
        rows.append(
            {
                "fold": r.fold.number,
                "seed": r.seed,
                "version": r.version,
                "train_start": _at(result, r.fold.train_start),
                "train_end": _at(result, r.fold.train_end - 1),
                "test_start": _at(result, r.fold.test_start),
                "test_end": _at(result, r.fold.test_end - 1),
                "samples": 0 if preds is None else len(preds),
                "direction_accuracy": oos.get("direction_accuracy"),
                "majority_baseline": oos.get("majority_baseline"),
                "edge": oos.get("edge"),
                "edge_ci_low": ci[0],
                "edge_ci_high": ci[1],
                "fixed_baseline": oos.get("fixed_baseline"),
                "edge_vs_fixed": oos.get("edge_vs_fixed"),
                "edge_vs_fixed_ci_low": fixed_ci[0],
                "edge_vs_fixed_ci_high": fixed_ci[1],
                "dm_vs_last_close": dm.get("stat"),
                "dm_pvalue": dm.get("pvalue"),
                "dm_pvalue_one_sided": dm.get("pvalue_one_sided"),
                "gate_passed": (r.metrics.get("gate") or {}).get("passed"),
                "error": r.error,
            }
        )
    return pd.DataFrame(rows)


def _at(result: WalkForwardResult, bar: int) -> str:
    return str(result.at(bar))


def summary(result: WalkForwardResult, backtest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``summary.json`` document."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result.config).items()}
    folds = fold_table(result)
    return {
        "walk_forward_id": result.walk_forward_id,
        "config": config,
        "embargo_bars": result.embargo,
        "data_sha256": result.data_sha256,
        "folds": len(result.folds),
        "failed_folds": int(folds["error"].notna().sum()),
        "promoted": result.promoted,
        "oos": result.oos,
        "per_fold": folds.drop(columns=["error"]).to_dict(orient="records"),
        **({"backtest": backtest} if backtest is not None else {}),
    }


def rolling_edge(predictions: pd.DataFrame, window: int) -> pd.DataFrame:
    """Direction edge over the gate's baseline, the sign of the training drift (``drift``
    column; predictions written before it existed: the majority share), on a trailing
    ``window`` of samples, with the half-width of its normal-approximation 95 % band."""
    pred = predictions["predicted"].to_numpy()
    actual = predictions["actual"].to_numpy()
    has_drift = "drift" in predictions.columns
    drift = predictions["drift"].to_numpy() if has_drift else None
    values = np.full(len(pred), np.nan)
    band = np.full(len(pred), np.nan)
    for end in range(window, len(pred) + 1, max(1, window // 24)):
        p, a = pred[end - window : end], actual[end - window : end]
        if drift is None:
            values[end - 1] = direction_accuracy(p, a) - majority_baseline(a)
            band[end - 1] = 1.96 * math.sqrt(0.25 / window)
            continue
        d = fixed_edge_differences(p, a, drift[end - window : end])
        if len(d) > 1:
            values[end - 1] = d.mean()
            # paired hits: the band of the mean difference (the pooled CI is the block
            # bootstrap's; this only shows how the edge moves)
            band[end - 1] = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    out = pd.DataFrame({"edge": values, "band": band}, index=predictions.index).dropna()
    out.attrs["baseline"] = "fixed" if has_drift else "majority"
    return out


def write_report(
    result: WalkForwardResult,
    out_dir: Path,
    *,
    equity: pd.DataFrame | None = None,
    backtest: dict[str, Any] | None = None,
    title: str = "",
) -> dict[str, Path]:
    """Write the five report files into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "folds_csv": out_dir / "folds.csv",
        "predictions": out_dir / "oos_predictions.parquet",
        "summary": out_dir / "summary.json",
        "chart": out_dir / "chart.png",
        "html": out_dir / "report.html",
    }
    fold_table(result).to_csv(paths["folds_csv"], index=False)
    result.predictions.to_parquet(paths["predictions"])
    # a fold's statistic can be undefined (equal error series): null, as in metrics.json
    write_json(paths["summary"], null_if_undefined(summary(result, backtest)))
    plot_walk_forward(result, paths["chart"], equity=equity, title=title)
    write_walk_forward_html(result, paths["html"], equity=equity, backtest=backtest, title=title)
    return paths


def plot_walk_forward(
    result: WalkForwardResult,
    path: Path,
    *,
    equity: pd.DataFrame | None = None,
    title: str = "",
) -> Path:
    """Stitched out-of-sample equity (when given) against baselines, and the rolling direction
    edge with its 95 % band; each fold's first test bar is a dashed line labelled with the fold
    number. Buy & hold at 100 % has its own right axis with its 0 at the height of the left
    axis' 0; the rolling window is named in days (hourly bars: whole days)."""
    from matplotlib.figure import Figure

    first_seed = result.oos.get("seed", 0)
    preds = result.predictions[result.predictions["seed"] == first_seed]
    panels = 2 if equity is not None else 1
    fig = Figure(figsize=(13, 4 + 3 * panels))
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    if equity is not None:
        ax = axes[0]
        full = "buy & hold"
        for column in [c for c in equity.columns if c != full]:
            ax.plot(
                equity.index,
                100 * (equity[column] / equity[column].iloc[0] - 1),
                label=column,
                linewidth=1.6 if column == equity.columns[0] else 0.9,
            )
        ax.set_ylabel("return % (same fees, slippage, exposure)")
        ax.axhline(0, color="black", linewidth=0.5)
        handles, labels = ax.get_legend_handles_labels()
        if full in equity.columns:  # 100 % invested: its own axis, or it flattens the rest
            twin = ax.twinx()
            line = twin.plot(
                equity.index,
                100 * (equity[full] / equity[full].iloc[0] - 1),
                color="0.55",
                linewidth=0.8,
                linestyle="--",
            )
            twin.set_ylabel("buy & hold, 100 % invested: return % (right)", color="0.4")
            _align_zeros(ax, twin)
            handles, labels = handles + line, [*labels, f"{full} (right axis; 0 as left)"]
        ax.legend(handles, labels, loc="upper left", fontsize=8)
    ax = axes[-1]
    window, name = _rolling_window(preds.index)
    edge = rolling_edge(preds, window)
    baseline = (
        "the training drift's sign (the gate's baseline)"
        if edge.attrs["baseline"] == "fixed"
        else "the majority baseline"
    )
    ax.plot(
        edge.index,
        100 * edge["edge"],
        color="purple",
        linewidth=1.0,
        label=f"direction edge over {baseline}, {name}",
    )
    ax.fill_between(
        edge.index,
        100 * (edge["edge"] - edge["band"]),
        100 * (edge["edge"] + edge["band"]),
        color="purple",
        alpha=0.15,
        label=f"95 % CI of that edge (normal approximation over {window} bars)",
    )
    ax.axhline(0, color="black", linewidth=0.6)
    lo, hi = result.oos["edge_ci95"]
    flo, fhi = result.oos.get("edge_vs_fixed_ci95", [math.nan, math.nan])
    ax.set_ylabel("edge, percentage points")
    starts = [
        (fold.number, idx[0])
        for fold in result.folds
        if len(idx := preds.index[preds["fold"] == fold.number])
    ]
    every = max(1, math.ceil(len(starts) / 24))  # at most ~24 labels
    for a in axes:
        for k, (_, start) in enumerate(starts):
            a.axvline(
                start,
                color="grey",
                linewidth=0.6,
                linestyle="--",
                label="a fold's first test bar" if a is ax and k == 0 else None,
            )
    for k, (number, start) in enumerate(starts):
        if k % every == 0:
            axes[0].annotate(
                f"fold {number}",
                (start, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 2),
                textcoords="offset points",
                fontsize=7,
                color="0.35",
                ha="center",
                va="bottom",
            )
    ax.legend(loc="upper left", fontsize=8)
    o = result.oos
    fig.suptitle(
        (title + "\n" if title else "")
        + f"walk-forward {result.walk_forward_id}: {len(result.folds)} folds, "
        f"direction {100 * o['direction_accuracy']:.1f} % vs majority "
        f"{100 * o['majority_baseline']:.1f} %, edge {100 * o['edge']:+.1f} points "
        f"(95 % CI {100 * lo:+.1f}..{100 * hi:+.1f});\nvs the training drift's sign "
        f"{100 * o.get('fixed_baseline', math.nan):.1f} %, edge "
        f"{100 * o.get('edge_vs_fixed', math.nan):+.1f} points (95 % CI {100 * flo:+.1f}.."
        f"{100 * fhi:+.1f});\n"
        f"{'beats' if o['beats_baselines'] else 'does not beat'} the baselines",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _rolling_window(index: pd.Index) -> tuple[int, str]:
    """The rolling edge's window in bars (a sixth of the samples, 48..720) and its name:
    whole days when a day holds several bars ("rolling 12-day window"), else bars."""
    window = max(48, min(720, len(index) // 6 or 48))
    step = pd.Series(index).diff().median() if len(index) > 1 else None
    per_day = 0
    if isinstance(step, pd.Timedelta) and step > pd.Timedelta(0):
        per_day = round(pd.Timedelta(days=1) / step)
    if per_day > 1:
        window = max(per_day, window // per_day * per_day)
        return window, f"rolling {window // per_day}-day window"
    return window, f"rolling {window}-bar window"


def _align_zeros(left: Any, right: Any) -> None:
    """Stretch the two y axes' limits (never cut) so that 0 is at the same height on both."""
    lims = [list(a.get_ylim()) for a in (left, right)]
    for lim in lims:
        lim[0], lim[1] = min(lim[0], 0.0), max(lim[1], 0.0)
    fractions = [-lo / (hi - lo) if hi > lo else 0.0 for lo, hi in lims]
    inner = [x for x in fractions if 0 < x < 1]
    f = max(inner) if inner else 0.5
    if len(set(fractions)) == 1 and fractions[0] in (0.0, 1.0):
        f = fractions[0]  # both all above (or all below) 0: already level
    for a, (lo, hi), own in zip((left, right), lims, fractions, strict=True):
        if own < f:
            lo = -f * hi / (1 - f)
        elif own > f:
            hi = -lo * (1 - f) / f
        a.set_ylim(lo, hi)
