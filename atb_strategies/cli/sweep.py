"""``atb sweep STRATEGY``: backtest a strategy over a grid of params, symbols and model
versions, serially, on every core or on a Ray cluster; rank the cells and draw a heatmap."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from atb_strategies.cli.options import (
    POSITIVE_INT,
    backtest_options,
    data_files,
    money_options,
    registry_option,
    symbol_list,
)
from atb_strategies.cli.outputs import check_out, force_option, output_dir
from atb_strategies.strategies.registry import strategy_names
from atb_strategies.sweep.metrics import RANK_METRICS

DEFAULT_VERIFY = 20  # sweep.screen.DEFAULT_VERIFY (not imported: it loads numba)


class GridOption(click.Option):
    """``--grid``: its help lists each strategy's parameter names, read when the help is shown
    (the strategy classes load backtrader, which a bare ``atb`` does not)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from atb_strategies.strategies.registry import get_strategy

        names = "; ".join(
            f"{name}: {', '.join(get_strategy(name).params._getkeys())}"
            for name in strategy_names()
        )
        record = super().get_help_record(ctx)
        return None if record is None else (record[0], f"{record[1]} Parameters of {names}.")


@click.command("sweep")
@click.argument("strategy", type=click.Choice(strategy_names()))
@click.option("--symbol", default="BTCUSDT", show_default=True, help="The market (one symbol).")
@click.option("--symbols", default=None, help="Several markets: A,B (with --data A=FILE ...).")
@click.option("--timeframe", default="1h", show_default=True, help="Candle size of the model.")
@click.option(
    "--data",
    multiple=True,
    help="Candles file (CSV, parquet, feather); with several symbols SYMBOL=FILE, repeated.",
)
@click.option("--synthetic", is_flag=True, help="The seeded synthetic market (seed+i per symbol).")
@backtest_options
@click.option(
    "--model-version",
    "model_versions",
    multiple=True,
    help="Version to sweep, repeatable; 'asof' replays the retraining schedule [latest].",
)
@money_options
@click.option(
    "--grid",
    "grid_options",
    multiple=True,
    metavar="NAME=V1,V2,...",
    cls=GridOption,
    help="A strategy param and its values (int, float, true/false, none or text); repeatable.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray", "serial"]),
    default="local",
    show_default=True,
    help="Where cells run: local = a process per core, ray = a Ray cluster, serial = here.",
)
@click.option("--workers", type=POSITIVE_INT, default=None, help="Parallel cells [every core].")
@click.option(
    "--ray-address",
    default=None,
    help="A Ray cluster: 'auto' (joined with ray start here) or ray://HEAD:10001 [a local Ray].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output directory [a new out/sweep_<strategy>_<symbols>/<UTC stamp>/; "
    "out/sweep_<strategy>_<symbols>/latest links to the newest]. An existing, non-empty DIR "
    "needs --force or --resume.",
)
@force_option("sweep")
@click.option(
    "--resume",
    is_flag=True,
    help="Skip cells already finished in --out, or without --out in the latest run of this "
    "sweep (failed ones run again).",
)
@click.option(
    "--rank-by",
    type=click.Choice(list(RANK_METRICS)),
    default="sharpe",
    show_default=True,
    help="The metric cells are ranked by (and the heatmap shows).",
)
@click.option("--top", type=POSITIVE_INT, default=10, show_default=True, help="Cells printed.")
@click.option(
    "--walk-forward",
    is_flag=True,
    help="Also choose the best cell on each fold's train bars and trade it on the test bars "
    "(needs --train-bars and --test-bars).",
)
@click.option("--train-bars", type=POSITIVE_INT, default=None, help="Walk-forward train bars.")
@click.option(
    "--test-bars", type=POSITIVE_INT, default=None, help="Walk-forward test bars (and step)."
)
@click.option(
    "--screen",
    is_flag=True,
    help="Screen every cell with the vectorised simulation first, then backtest only the best "
    "--verify cells (writes screen.csv).",
)
@click.option(
    "--verify",
    type=POSITIVE_INT,
    default=None,
    help=f"Cells backtested after --screen [{DEFAULT_VERIFY}].",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@registry_option
def sweep(
    strategy: str,
    symbol: str,
    symbols: str | None,
    timeframe: str,
    data: tuple[str, ...],
    synthetic: bool,
    bars: int,
    seed: int,
    sentiment: Path | None,
    synthetic_sentiment: bool,
    start_date: str | None,
    end_date: str | None,
    model_type: str | None,
    model_versions: tuple[str, ...],
    cash: float,
    commission: float,
    slippage_bps: float,
    grid_options: tuple[str, ...],
    executor: str,
    workers: int | None,
    ray_address: str | None,
    out_dir: Path | None,
    force: bool,
    resume: bool,
    rank_by: str,
    top: int,
    walk_forward: bool,
    train_bars: int | None,
    test_bars: int | None,
    screen: bool,
    verify: int | None,
    no_progress: bool,
    registry_path: Path | None,
) -> None:
    """Backtest STRATEGY for every combination of --grid values, symbol and model version.

    Each finished cell is written to OUT/cells/<hash>.json at once (Ctrl-C keeps them; --resume
    runs only the others); then OUT/results.csv, OUT/heatmap.png and OUT/sweep.json. Each
    model's predictions are computed once and handed to every worker. The ranking ends with a
    verdict: whether the best cell survives the deflated Sharpe ratio and Hansen's SPA test
    against buy-and-hold scaled to its exposure (with the PBO). --walk-forward also chooses
    the best cell on each fold's train bars and reports the stitched out-of-sample result.
    --screen simulates every cell over the cached predictions with array code first (fills as
    backtrader's), then backtests the best --verify cells by --rank-by and reports how well the
    screen agreed with them (Spearman, return difference per cell).
    """
    from atb_strategies.data.sources import load_candles
    from atb_strategies.strategies.registry import get_strategy
    from atb_strategies.sweep.grid import check_grid, parse_grid
    from atb_strategies.sweep.report import format_ranking, rank_cells
    from atb_strategies.sweep.runner import run_sweep
    from atb_strategies.sweep.screen import format_screen
    from atb_strategies.sweep.walkforward import format_walk_forward

    check_out(out_dir, "sweep", force=force, resume=resume)
    folds = _walk_forward(walk_forward, train_bars, test_bars, rank_by)
    if verify is not None and not screen:
        raise click.BadParameter("only applies with --screen.", param_hint="--verify")
    cls = get_strategy(strategy)
    names = symbol_list(symbol, symbols, data)
    files = data_files(data, names)
    grid = parse_grid(grid_options)
    check_grid(grid, cls.params._getkeys(), cls.__name__)  # before any candle is loaded
    params: dict = {}
    if model_type is not None:
        params["model_type"] = model_type
    if registry_path is not None:
        params["registry"] = str(registry_path)
    _check_grid_values(cls, grid, params)
    mtype = model_type or cls.params.model_type
    frames = {}
    for i, name in enumerate(names):
        frames[name] = load_candles(
            files.get(name),
            synthetic,
            timeframe,
            bars,
            seed + i,
            sentiment=sentiment,
            synthetic_sentiment=synthetic_sentiment,
            need_sentiment=mtype == "sentiment",
        )
    default = f"sweep_{strategy}_{'-'.join(names)}"
    out = output_dir(out_dir, default, "sweep", force=force, resume=resume)
    results = run_sweep(
        strategy,
        frames,
        grid,
        timeframe=timeframe,
        versions=list(model_versions) or [None],
        params=params,
        cash=cash,
        commission=commission,
        slippage_bps=slippage_bps,
        start=start_date,
        end=end_date,
        executor=executor,
        workers=workers,
        ray_address=ray_address,
        out=out,
        resume=resume,
        rank_by=rank_by,
        progress=not no_progress,
        walk_forward=folds,
        screen=screen,
        verify=verify or DEFAULT_VERIFY,
    )
    a = results.attrs
    failed = int(results["error"].notna().sum())
    sources = "; ".join(f"{n}: {f.attrs.get('source', 'dataframe')}" for n, f in frames.items())
    click.echo(
        f"Sweep {strategy} {timeframe}: {len(results)} cells ({a['ran']} ran, {a['resumed']} "
        f"resumed, {failed} failed) in {a['seconds']:.1f} s, {executor} executor"
    )
    click.echo(f"Data: {sources}")
    if a.get("screen"):
        click.echo(format_screen(a["screen"]))
    ranked = len(rank_cells(results, rank_by))
    if ranked:
        click.echo(
            f"Best {min(top, ranked)} by {rank_by} (the best of {ranked} cells on the same "
            "bars: expect less out of sample):"
        )
    click.echo(format_ranking(results, grid, rank_by, top))
    stats = a.get("overfitting") or {}
    if stats.get("verdict"):
        click.echo(f"verdict: {stats['verdict']}")
    elif stats.get("error"):
        click.echo(f"warning: no overfitting statistics: {stats['error']}")
    wf = a.get("walk_forward")
    if wf and "error" not in wf:
        click.echo(format_walk_forward(wf))
    for warning in a["warnings"]:
        click.echo(f"warning: {warning}")
    click.echo(f"results: {out / 'results.csv'}")
    if a.get("heatmap"):
        click.echo(f"heatmap: {a['heatmap']}")
    page = _write_html(results, grid, out, f"Sweep {strategy} {timeframe}: {', '.join(names)}")
    if page is not None:
        click.echo(f"report:  {page}")
    click.echo(f"cells:   {out / 'cells'}")
    if wf and "error" in wf:
        raise click.ClickException(
            f"walk-forward selection: {wf['error']} (the sweep's results are kept in {out})"
        )
    if failed:
        first = results["error"].dropna().iloc[0]
        raise click.ClickException(
            f"{failed} of {len(results)} cells failed (first: {first}); every error is in "
            f"{out / 'results.csv'}. Fix the cause and run the same command with --resume: it "
            "runs only the failed cells."
        )


def _write_html(results: object, grid: dict, out: Path, title: str) -> Path | None:
    """``OUT/report.html`` (``sweep.html_report``; with ``--screen`` its heatmaps show every
    screened cell of ``screen.csv``), or a warning and None: a page never loses the results."""
    import pandas as pd

    from atb_strategies.sweep.html_report import write_sweep_html

    try:
        screened = out / "screen.csv"
        screen = pd.read_csv(screened) if screened.is_file() else None
        return write_sweep_html(results, grid, out / "report.html", screen=screen, title=title)  # type: ignore[arg-type]
    except Exception as e:
        click.echo(f"warning: report.html could not be written: {e}", err=True)
        return None


def _walk_forward(
    walk_forward: bool, train_bars: int | None, test_bars: int | None, rank_by: str
) -> Callable[[int], list] | None:
    """The folds function ``run_sweep`` takes for --walk-forward (``make_folds``, no embargo:
    the cells' rules are fixed, only the choice among them is trained), or None."""
    if not walk_forward:
        if train_bars is not None or test_bars is not None:
            raise click.BadParameter(
                "--train-bars and --test-bars only apply with --walk-forward.",
                param_hint="--walk-forward",
            )
        return None
    if train_bars is None or test_bars is None:
        raise click.BadParameter(
            "needs --train-bars N and --test-bars M (bars of each fold's train and test periods).",
            param_hint="--walk-forward",
        )
    if train_bars < 2:
        raise click.BadParameter(
            f"must be at least 2; got {train_bars}.", param_hint="--train-bars"
        )
    from atb_strategies.sweep.walkforward import WALK_FORWARD_METRICS

    if rank_by not in WALK_FORWARD_METRICS:
        raise click.BadParameter(
            f"walk-forward selection ranks by {', '.join(WALK_FORWARD_METRICS)} (computed from "
            f"each cell's per-bar returns); got {rank_by!r}.",
            param_hint="--rank-by",
        )
    from atb_strategies.evaluation.folds import make_folds

    return functools.partial(
        make_folds, train_bars=train_bars, test_bars=test_bars, embargo=0, horizon=0
    )


def _check_grid_values(cls: type, grid: dict, params: dict) -> None:
    """Every --grid value the strategy would refuse, as a usage error before any data loads."""
    from atb_strategies.sweep.grid import grid_value_problem

    for name, values in grid.items():
        for value in values:
            problem = grid_value_problem(cls, name, value, params)
            if problem is not None:
                raise click.BadParameter(f"{name}={value}: {problem}", param_hint="--grid")
