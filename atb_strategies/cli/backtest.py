"""``atb backtest STRATEGY``: run an ML strategy on a file or synthetic candles and report."""

from __future__ import annotations

from pathlib import Path

import click

from atb_strategies.cli.options import (
    adjusted_option,
    backtest_options,
    data_tz_option,
    guard_options,
    guard_params,
    money_options,
    registry_option,
)
from atb_strategies.config import GAP_POLICIES
from atb_strategies.strategies.guards import format_guard_report, guard_report
from atb_strategies.strategies.registry import get_strategy, strategy_names


@click.command("backtest")
@click.argument("strategy", type=click.Choice(strategy_names()))
@click.option("--symbol", default="BTCUSDT", show_default=True)
@click.option("--timeframe", default="1h", show_default=True)
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Candles (CSV, parquet or feather).",
)
@click.option("--synthetic", is_flag=True, help="Use the seeded synthetic market instead.")
@data_tz_option
@adjusted_option
@backtest_options
@click.option("--model-version", default=None, help="Registry version (default: latest).")
@money_options
@click.option("--no-baselines", is_flag=True, help="Skip the baseline strategies.")
@click.option(
    "--oos-only",
    is_flag=True,
    help="Start at the model's first unseen bar (after its training and validation period).",
)
@click.option("--long-threshold", type=float, default=None, help="Override the entry threshold.")
@click.option("--allow-shorts", is_flag=True)
@click.option(
    "--gap-policy",
    type=click.Choice(GAP_POLICIES),
    default="skip",
    show_default=True,
    help="Missing candles: skip = no prediction from rows that span a gap; raise = stop; "
    "warn/allow = treat the bars either side as consecutive.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Report directory (default: out/backtest_<strategy>_<symbol>).",
)
@click.option("--no-progress", is_flag=True)
@guard_options
@registry_option
def backtest(
    strategy: str,
    symbol: str,
    timeframe: str,
    data: Path | None,
    synthetic: bool,
    tz: str | None,
    adjusted: bool,
    bars: int,
    seed: int,
    sentiment: Path | None,
    synthetic_sentiment: bool,
    start_date: str | None,
    end_date: str | None,
    model_type: str | None,
    model_version: str | None,
    cash: float,
    commission: float,
    slippage_bps: float,
    no_baselines: bool,
    oos_only: bool,
    long_threshold: float | None,
    allow_shorts: bool,
    gap_policy: str,
    out_dir: Path | None,
    no_progress: bool,
    max_model_age: str | None,
    age_action: str,
    drift_action: str | None,
    drift_window: int,
    drift_threshold: float | None,
    registry_path: Path | None,
) -> None:
    """Backtest STRATEGY and write a summary, a chart PNG and the trades (CSV and JSON)."""
    from atb_strategies.backtest.report import format_summary, plot_backtest, write_trades
    from atb_strategies.backtest.runner import first_unseen_bar, run_backtest
    from atb_strategies.cli.options import check_dates, check_dates_in_data
    from atb_strategies.data.sources import load_candles
    from atb_strategies.sweep.thresholds import threshold_warnings

    check_dates(start_date, end_date)
    cls = get_strategy(strategy)
    mtype = model_type or cls.params.model_type
    frame = load_candles(
        data,
        synthetic,
        timeframe,
        bars,
        seed,
        sentiment=sentiment,
        synthetic_sentiment=synthetic_sentiment,
        need_sentiment=mtype == "sentiment",
        adjusted=adjusted,
        tz=tz,
    )
    source = frame.attrs["source"]
    check_dates_in_data(frame, start_date, end_date)
    params: dict = {
        "model_type": mtype,
        "version": model_version,
        "gap_policy": gap_policy,
        "allow_shorts": allow_shorts,
    }
    if registry_path is not None:
        params["registry"] = str(registry_path)
    if long_threshold is not None:
        params["long_threshold"] = long_threshold
    params.update(
        guard_params(max_model_age, age_action, drift_action, drift_window, drift_threshold)
    )
    if oos_only:
        start_date = first_unseen_bar(cls, symbol, timeframe, params, start_date)
        check_dates_in_data(frame, start_date, end_date, ("--oos-only start", "--end-date"))
    result = run_backtest(
        frame,
        cls,
        symbol=symbol,
        timeframe=timeframe,
        cash=cash,
        commission=commission,
        progress=not no_progress,
        start=start_date,
        end=end_date,
        slippage_bps=slippage_bps,
        baselines=not no_baselines,
        **params,
    )
    out = out_dir or Path("out") / f"backtest_{strategy}_{symbol}"
    model_key = result.strategy.predictions[result.strategy.datas[0]].model_key
    text = format_summary(result.summary, f"{strategy} on {symbol} {timeframe}").split("\n")
    text[1:1] = [f"  {'Model':<22} {model_key}", f"  {'Data':<22} {source}"]
    click.echo("\n".join(text))
    guards = guard_report(result.strategy.decisions, result.strategy.guards)
    if guards:
        result.summary["guards"] = guards  # in summary.json too
    for line in format_guard_report(guards):
        click.echo(line)

    def spell(name: str, value: float) -> str:  # thresholds as this command spells them
        if name == "long_threshold":
            given = long_threshold is not None
            return f"--long-threshold {value:g}" + ("" if given else " (the default)")
        return f"{name} {value:g} (the strategy's default)"

    if result.predictions is not None:
        returns = result.predictions["predicted_return"]
        for warning in threshold_warnings(returns, cls, params, spell=spell):
            click.echo(f"warning: {warning}")
    paths = write_trades(result, out)
    chart = plot_backtest(
        result,
        frame,
        out / "chart.png",
        predictions=result.predictions["predicted_price"]
        if result.predictions is not None
        else None,
        title=f"{strategy} {symbol} {timeframe} - {model_key}",
    )
    click.echo(f"chart:  {chart}")
    click.echo(f"trades: {paths['trades_csv']} and {paths['trades_json']}")
