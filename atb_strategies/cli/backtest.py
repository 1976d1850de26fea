"""``atb backtest STRATEGY``: run an ML strategy on a file or synthetic candles and report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from atb_strategies.cli.options import (
    adjusted_option,
    backtest_options,
    data_files,
    data_tz_option,
    guard_options,
    guard_params,
    is_named_data,
    money_options,
    registry_option,
    symbol_list,
)
from atb_strategies.cli.outputs import check_out, force_option, output_dir
from atb_strategies.config import GAP_POLICIES
from atb_strategies.strategies.registry import get_strategy, strategy_names


@click.command("backtest")
@click.argument("strategy", type=click.Choice(strategy_names()))
@click.option("--symbol", default="BTCUSDT", show_default=True, help="The market's model symbol.")
@click.option(
    "--symbols",
    default=None,
    help="Several markets in one account: A,B (with --data A=FILE ... or --synthetic).",
)
@click.option("--timeframe", default="1h", show_default=True, help="Candle size of the model.")
@click.option(
    "--data",
    multiple=True,
    help="Candles (CSV, parquet or feather); with several symbols SYMBOL=FILE, repeated.",
)
@click.option(
    "--synthetic", is_flag=True, help="Use the seeded synthetic market instead (seed+i per symbol)."
)
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
@click.option(
    "--allow-shorts", is_flag=True, help="Also sell short on predicted falls (default: long only)."
)
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
    help="Report directory [a new out/backtest_<strategy>_<symbol>/<UTC stamp>/; "
    "out/backtest_<strategy>_<symbol>/latest links to the newest]. An existing, non-empty "
    "DIR needs --force.",
)
@click.option(
    "--markers/--no-markers",
    default=None,
    help="Entry and exit markers on the chart (default: only when there are at most 60 trades).",
)
@force_option("backtest")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@guard_options
@registry_option
def backtest(
    strategy: str,
    symbol: str,
    symbols: str | None,
    timeframe: str,
    data: tuple[str, ...],
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
    markers: bool | None,
    force: bool,
    no_progress: bool,
    max_model_age: str | None,
    age_action: str,
    drift_action: str | None,
    drift_window: int,
    drift_threshold: float | None,
    registry_path: Path | None,
) -> None:
    """Backtest STRATEGY and write a summary, a chart PNG, an interactive report.html and the
    trades (CSV and JSON)."""
    from atb_strategies.backtest.report import format_summary, plot_backtest, write_trades
    from atb_strategies.backtest.runner import first_unseen_bar, run_backtest
    from atb_strategies.cli.options import check_dates, check_dates_in_data
    from atb_strategies.data.sources import load_candles
    from atb_strategies.strategies.guards import format_guard_report, guard_report
    from atb_strategies.sweep.thresholds import threshold_warnings

    check_dates(start_date, end_date)
    if out_dir is not None:  # refused before any work; made when the report is written
        check_out(out_dir, "backtest", force=force)
    if symbols or any(is_named_data(d) for d in data) or len(data) > 1:
        names = symbol_list(symbol, symbols, data)
        files = data_files(data, names)
        if len(names) > 1:
            _backtest_symbols(names, files, dict(locals()))
            return
        symbol, data = names[0], tuple(str(f) for f in files.values())
    data = _one_file(data)
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
    model_key = result.strategy.predictions[result.strategy.datas[0]].model_key
    text = format_summary(result.summary, f"{strategy} on {symbol} {timeframe}").split("\n")
    text[1:1] = [f"  {'Model':<22} {model_key}", f"  {'Data':<22} {source}"]
    click.echo("\n".join(text))
    guards = guard_report(result.strategy.decisions, result.strategy.guards)
    if guards:
        result.summary["guards"] = guards  # in summary.json too
    for line in format_guard_report(guards):
        click.echo(line)

    if result.predictions is not None:
        returns = result.predictions["predicted_return"]
        spell = _speller(long_threshold)
        for warning in threshold_warnings(returns, cls, params, spell=spell):
            click.echo(f"warning: {warning}")
    out = output_dir(out_dir, f"backtest_{strategy}_{symbol}", "backtest", force=force)
    paths = write_trades(result, out)
    title = f"{strategy} {symbol} {timeframe} - {model_key}"
    chart = plot_backtest(
        result,
        frame,
        out / "chart.png",
        predictions=result.predictions["predicted_price"]
        if result.predictions is not None
        else None,
        title=title,
        markers=markers,
    )
    click.echo(f"chart:  {chart}")
    _html_report(result, frame, out / "report.html", title=title, markers=markers)
    click.echo(f"trades: {paths['trades_csv']} and {paths['trades_json']}")


def _speller(long_threshold: float | None) -> Callable[[str, float], str]:
    """How this command spells a threshold in a warning (``--long-threshold`` when it is one)."""

    def spell(name: str, value: float) -> str:
        if name == "long_threshold":
            given = long_threshold is not None
            return f"--long-threshold {value:g}" + ("" if given else " (the default)")
        return f"{name} {value:g} (the strategy's default)"

    return spell


def _html_report(
    result: Any, candles: Any, path: Path, *, title: str, markers: bool | None
) -> None:
    """Write ``report.html`` (``backtest.html_report``) and say where, or why it was skipped."""
    try:
        from atb_strategies.backtest.html_report import write_html_report
    except ImportError as exc:  # bokeh is a dependency; an older install may lack it
        click.echo(f"report: {path.name} skipped ({exc}); pip install bokeh to get it")
        return
    page = write_html_report(result, candles, path, title=title, markers=markers)
    click.echo(f"report: {page} (interactive, works offline)")


def _one_file(data: tuple[str, ...]) -> Path | None:
    """The one ``--data FILE`` of a single-symbol backtest, checked as click checks a path."""
    if not data:
        return None
    ctx = click.get_current_context()
    param = next(p for p in ctx.command.params if p.name == "data")
    path = click.Path(path_type=Path, dir_okay=False, exists=True).convert(data[0], param, ctx)
    return Path(path)


def _backtest_symbols(names: list[str], files: dict[str, Path], o: dict[str, Any]) -> None:
    """``--symbols``: one account over every symbol (``backtest.portfolio``); the book's
    summary and a block per symbol, trades.csv with a symbol column, ``summary.json`` with
    ``symbols``, the book's chart and ``chart_<SYMBOL>.png`` per symbol."""
    from dataclasses import replace

    import pandas as pd

    from atb_strategies.backtest.portfolio import check_symbols, run_portfolio_backtest
    from atb_strategies.backtest.report import (
        format_summary,
        format_symbols,
        plot_backtest,
        write_trades,
    )
    from atb_strategies.backtest.runner import first_unseen_bar
    from atb_strategies.cli.options import check_dates_in_data
    from atb_strategies.data.sources import load_candles
    from atb_strategies.strategies.guards import format_guard_report, guard_report
    from atb_strategies.sweep.thresholds import threshold_warnings

    strategy, timeframe = o["strategy"], o["timeframe"]
    cls = get_strategy(strategy)
    mtype = o["model_type"] or cls.params.model_type
    params: dict[str, Any] = {
        "model_type": mtype,
        "version": o["model_version"],
        "gap_policy": o["gap_policy"],
        "allow_shorts": o["allow_shorts"],
    }
    if o["registry_path"] is not None:
        params["registry"] = str(o["registry_path"])
    if o["long_threshold"] is not None:
        params["long_threshold"] = o["long_threshold"]
    params.update(
        guard_params(
            o["max_model_age"],
            o["age_action"],
            o["drift_action"],
            o["drift_window"],
            o["drift_threshold"],
        )
    )
    what = "--symbols" if o["symbols"] else "--data"
    currency = check_symbols(names, cls, timeframe=timeframe, params=params, what=what)
    frames = {}
    for i, name in enumerate(names):
        frames[name] = load_candles(
            files.get(name),
            o["synthetic"],
            timeframe,
            o["bars"],
            o["seed"] + i,
            sentiment=o["sentiment"],
            synthetic_sentiment=o["synthetic_sentiment"],
            need_sentiment=mtype == "sentiment",
        )
    start_date, end_date = o["start_date"], o["end_date"]
    for frame in frames.values():
        check_dates_in_data(frame, start_date, end_date)
    if o["oos_only"]:  # the first bar that no symbol's model saw
        start_date = max(
            pd.Timestamp(first_unseen_bar(cls, n, timeframe, params, start_date)) for n in names
        ).isoformat()
        for frame in frames.values():
            check_dates_in_data(frame, start_date, end_date, ("--oos-only start", "--end-date"))
    result = run_portfolio_backtest(
        frames,
        cls,
        timeframe=timeframe,
        cash=o["cash"],
        commission=o["commission"],
        progress=not o["no_progress"],
        start=start_date,
        end=end_date,
        slippage_bps=o["slippage_bps"],
        **params,
    )
    title = f"{strategy} on {','.join(names)} {timeframe} (one account)"
    text = format_summary(result.summary, title).split("\n")
    sources = "; ".join(f"{n}: {f.attrs.get('source', 'dataframe')}" for n, f in frames.items())
    text[1:1] = [
        f"  {'Account currency':<22} {currency or 'unknown (the quote of the symbols)'}",
        f"  {'Data':<22} {sources}",
        f"  {'Buy & hold':<22} an equal-weight basket of the symbols",
    ]
    click.echo("\n".join(text))
    click.echo(format_symbols(result.summary))
    guards = guard_report(result.strategy.decisions, result.strategy.guards)
    if guards:
        result.summary["guards"] = guards
    for line in format_guard_report(guards):
        click.echo(line)

    returns = [
        r.predictions["predicted_return"]
        for r in result.symbols.values()
        if r.predictions is not None
    ]
    if returns:
        spell = _speller(o["long_threshold"])
        for warning in threshold_warnings(pd.concat(returns), cls, params, spell=spell):
            click.echo(f"warning: {warning}")
    out = output_dir(
        o["out_dir"], f"backtest_{strategy}_{'_'.join(names)}", "backtest", force=o["force"]
    )
    paths = write_trades(result, out)
    # the book's chart: the basket as its price, no order markers (their prices are a symbol's)
    book = replace(result, orders=[])
    chart = plot_backtest(book, result.basket, out / "chart.png", title=title, markers=o["markers"])
    click.echo(f"chart:  {chart}")
    _html_report(book, result.basket, out / "report.html", title=title, markers=o["markers"])
    for name, sub in result.symbols.items():
        key = sub.summary.get("model_key")
        sub_title = f"{strategy} {name} {timeframe} in the book of {','.join(names)} - {key}"
        path = plot_backtest(
            sub,
            frames[name],
            out / f"chart_{name}.png",
            predictions=sub.predictions["predicted_price"] if sub.predictions is not None else None,
            title=sub_title,
            markers=o["markers"],
        )
        click.echo(f"chart:  {path}")
        _html_report(
            sub, frames[name], out / f"report_{name}.html", title=sub_title, markers=o["markers"]
        )
    click.echo(f"trades: {paths['trades_csv']} and {paths['trades_json']}")
