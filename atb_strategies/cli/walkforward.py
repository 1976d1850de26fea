"""``atb train walk-forward SYMBOL``: retrain on a schedule, test out of sample, say if it is
luck."""

from __future__ import annotations

from pathlib import Path

import click

from atb_strategies.cli.options import (
    POSITIVE_INT,
    architecture_option,
    calendar_option,
    calibrate_option,
    check_target,
    commission_option,
    data_tz_option,
    recipe_option,
    registry_option,
    sequence_length_option,
    slippage_option,
    target_option,
    training_data_options,
)
from atb_strategies.cli.outputs import (
    check_out,
    force_option,
    output_dir,
    training_registry,
)


def _seeds(value: str) -> tuple[int, ...]:
    """``3`` -> seeds 0, 1, 2; ``0,5,9`` -> those seeds."""
    try:
        if "," in value:
            return tuple(int(v) for v in value.split(","))
        count = int(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a count or a comma list of seeds.", param_hint="--seeds"
        ) from None
    if count < 1:
        raise click.BadParameter(f"needs at least one seed; got {count}.", param_hint="--seeds")
    return tuple(range(count))


@click.command("walk-forward")
@click.argument("symbol")
@training_data_options
@calendar_option
@data_tz_option
@click.option("--train-bars", type=POSITIVE_INT, required=True, help="Bars each fold trains on.")
@click.option("--test-bars", type=POSITIVE_INT, required=True, help="Bars each fold is tested on.")
@click.option("--step", type=POSITIVE_INT, default=None, help="Bars between folds [--test-bars].")
@click.option(
    "--embargo",
    type=click.IntRange(min=0),
    default=None,
    help="Bars between training and test [horizon + warm-up + window].",
)
@click.option("--expanding", is_flag=True, help="Train on all bars so far (not a rolling window).")
@click.option("--max-folds", type=POSITIVE_INT, default=None, help="Keep only the last N folds.")
@click.option("--seeds", default="1", show_default=True, help="A count (0..N-1) or a list: 0,5,9.")
@click.option("--seed", default=0, show_default=True, help="Synthetic market seed.")
@architecture_option
@recipe_option
@target_option
@calibrate_option
@sequence_length_option
@click.option(
    "--horizon", type=POSITIVE_INT, default=1, show_default=True, help="Bars ahead predicted."
)
@click.option(
    "--epochs",
    type=POSITIVE_INT,
    default=30,
    show_default=True,
    help="Most training passes per fold (mlp, gru).",
)
@click.option("--promote-last", is_flag=True, help="Move latest to the last fold if it passes.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray", "serial"]),
    default="local",
    show_default=True,
    help="Where folds train: local = a process per core, ray = a Ray cluster, serial = here.",
)
@click.option("--workers", type=POSITIVE_INT, default=None, help="Parallel folds [every core].")
@click.option("--ray-address", default=None, help="An existing Ray cluster ('auto' for local).")
@click.option(
    "--bootstrap-reps",
    type=click.IntRange(min=100),
    default=1000,
    show_default=True,
    help="Block-bootstrap resamples for the edge's 95 % CI.",
)
@click.option("--no-backtest", is_flag=True, help="Skip the point-in-time (asof) backtest.")
@click.option(
    "--long-threshold",
    type=float,
    default=0.001,
    show_default=True,
    help="MlBasic entry threshold in the asof backtest.",
)
@commission_option
@slippage_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Report directory [a new out/walkforward_<symbol>_<type>/<UTC stamp>/; "
    "out/walkforward_<symbol>_<type>/latest links to the newest]. An existing, non-empty DIR "
    "needs --force.",
)
@force_option("walk-forward")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@registry_option
def walk_forward(
    symbol: str,
    timeframe: str | None,
    start_date: str | None,
    end_date: str | None,
    model_type: str,
    data: Path | None,
    synthetic: bool,
    download: bool,
    exchange_id: str,
    data_dir: Path | None,
    bars: int,
    sentiment: Path | None,
    synthetic_sentiment: bool,
    calendar: str,
    tz: str | None,
    train_bars: int,
    test_bars: int,
    step: int | None,
    embargo: int | None,
    expanding: bool,
    max_folds: int | None,
    seeds: str,
    seed: int,
    architecture: str,
    recipe: str | None,
    target: str,
    calibrate: bool | None,
    sequence_length: int | None,
    horizon: int,
    epochs: int,
    promote_last: bool,
    executor: str,
    workers: int | None,
    ray_address: str | None,
    bootstrap_reps: int,
    no_backtest: bool,
    long_threshold: float,
    commission: float,
    slippage_bps: float,
    out_dir: Path | None,
    force: bool,
    no_progress: bool,
    registry_path: Path | None,
) -> None:
    """Walk-forward evaluation of a SYMBOL model: every fold trained like `atb train model`,
    registered (lineage: fold, periods, data digest, seed) without moving latest, tested on the
    bars after it; the pooled out-of-sample record against the baselines, with its CI."""
    from tqdm import tqdm

    from atb_strategies.cli.options import check_dates, check_dates_in_data, resolved_timeframe
    from atb_strategies.data.sources import default_data_dir, load_candles
    from atb_strategies.evaluation.report import write_report
    from atb_strategies.evaluation.walkforward import (
        WalkForwardConfig,
        asof_backtest,
        run_walk_forward,
    )
    from atb_strategies.features.calendar import get_calendar
    from atb_strategies.features.candles import validate_candles
    from atb_strategies.training.config import default_sequence_length

    check_dates(start_date, end_date)
    check_target(target, architecture, calibrate)
    check_out(out_dir, "walk-forward", force=force)  # before the folds train
    registry, note = training_registry(registry_path)
    if note:
        click.echo(note, err=True)
    frame = load_candles(
        data,
        synthetic,
        timeframe,
        bars,
        seed,
        sentiment=sentiment,
        synthetic_sentiment=synthetic_sentiment,
        need_sentiment=model_type == "sentiment",
        symbol=symbol,
        exchange_id=exchange_id,
        data_dir=data_dir or default_data_dir(),
        download=download,
        start=start_date,
        end=end_date,
        calendar=calendar,
        tz=tz,
    )
    source = frame.attrs.get("source", "dataframe")
    check_dates_in_data(frame, start_date, end_date)
    timeframe = resolved_timeframe(timeframe, data, frame)
    frame = frame.loc[start_date:end_date] if (start_date or end_date) else frame
    frame = validate_candles(
        frame,
        timeframe=timeframe,
        gap_policy="allow",
        what=source,
        calendar=get_calendar(calendar),
    )
    config = WalkForwardConfig(
        symbol=symbol,
        train_bars=train_bars,
        test_bars=test_bars,
        step=step,
        embargo=embargo,
        expanding=expanding,
        seeds=_seeds(seeds),
        max_folds=max_folds,
        timeframe=timeframe,
        model_type=model_type,
        architecture=architecture,
        recipe=recipe,
        target=target,
        calibrate=calibrate,
        sequence_length=sequence_length or default_sequence_length(timeframe),
        horizon=horizon,
        epochs=epochs,
        registry=Path(registry),
        promote_last=promote_last,
        bootstrap_reps=bootstrap_reps,
        data_source=source,
        calendar=calendar,
    )
    bars: list[tqdm] = []  # made when the first fold finishes, so an early error is alone

    def progress(result: object, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc="folds", unit="fold", disable=no_progress, total=total))
        bars[0].update(1)

    try:
        result = run_walk_forward(
            frame,
            config,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            on_result=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    backtest = equity = None
    if not no_backtest:
        backtest, equity = asof_backtest(
            frame,
            result,
            commission=commission,
            slippage_bps=slippage_bps,
            long_threshold=long_threshold,
        )
    out = output_dir(out_dir, f"walkforward_{symbol}_{model_type}", "walk-forward", force=force)
    paths = write_report(
        result,
        out,
        equity=equity,
        backtest=backtest,
        title=f"{symbol} {model_type} {timeframe} ({source})",
    )
    _print_result(result, paths, backtest)


def _print_result(result, paths: dict[str, Path], backtest: dict | None) -> None:  # type: ignore[no-untyped-def]
    o = result.oos
    failed = [r for r in result.results if r.error]
    click.echo(
        f"walk-forward {result.walk_forward_id}: {len(result.folds)} fold(s), "
        f"{len(result.results) - len(failed)} trained version(s), embargo {result.embargo} bars"
    )
    for r in failed:
        click.echo(f"  fold {r.fold.number} seed {r.seed} FAILED: {r.error}")
    for line in oos_lines(o):
        click.echo(line)
    spread = o["seed_spread"]["direction_accuracy"]
    if spread["seeds"] > 1:
        click.echo(
            f"  seeds: direction {100 * spread['mean']:.1f} % +/- {100 * spread['std']:.1f} "
            f"over {spread['seeds']} seeds"
        )
    verdict = "BEATS the baselines" if o["beats_baselines"] else "does NOT beat the baselines"
    click.echo(f"  verdict: {verdict}")
    if backtest is not None:
        from atb_strategies.backtest.report import format_summary

        click.echo(
            format_summary(backtest, "  asof backtest (each bar: newest fold trained before it)")
        )
    if result.promoted:
        click.echo(f"  latest -> {result.promoted}")
    click.echo(f"report: {paths['summary'].parent}")


def oos_lines(o: dict) -> list[str]:  # type: ignore[type-arg]
    """The pooled record as the gate reads it: the edge over the baseline fixed in training
    (direction of the training drift) with its CI, and the one-sided Diebold-Mariano p against
    last close; the majority share (known only in hindsight) beside it, labelled."""
    from atb_strategies.stats import ALPHA

    lo, hi = o["edge_vs_fixed_ci95"]
    dm = o["dm_vs_last_close"]
    p = dm.get("pvalue_one_sided", float("nan"))
    lines = [
        f"  out of sample: {o['samples']} bars, direction {100 * o['direction_accuracy']:.1f} % "
        f"vs fixed baseline (training drift's direction) {100 * o['fixed_baseline']:.1f} %: "
        f"edge {100 * o['edge_vs_fixed']:+.1f} points (95 % CI {100 * lo:+.1f}..{100 * hi:+.1f})"
        f"  [majority share, hindsight: {100 * o['majority_baseline']:.1f} %]",
    ]
    for name in ("last_close", "drift"):
        test = o[f"dm_vs_{name}"]
        one_sided = test.get("pvalue_one_sided", float("nan"))
        if test["stat"] < 0:
            reading = "  model errors smaller"
        elif test["stat"] >= 0:
            reading = "  model errors not smaller"
        else:  # NaN: the two error series are equal
            reading = "  undefined (errors equal)"
        lines.append(
            f"  Diebold-Mariano vs {name.replace('_', ' ')}: {test['stat']:+.2f} "
            f"(one-sided p={one_sided:.3g}){reading}"
        )
    lines.append(
        f"  gate: edge CI above 0 {'yes' if lo > 0 else 'no'}; one-sided DM p vs last close "
        f"< {ALPHA:g} {'yes' if p < ALPHA else 'no'}"
    )
    return lines
