"""``atb live STRATEGY``: run an ML strategy on live candles, on paper or with real orders.

Paper (``--paper``) needs no API keys: live public candles, backtrader's simulated broker with
the market's real fees, precision and limits. Real orders need ``--live
--i-understand-the-risks`` and keys (``ATB_<EXCHANGE>_API_KEY``/``_API_SECRET`` or
``ATB_EXCHANGE_CONFIG``). Ctrl-C stops cleanly: the current loop finishes, open orders are
cancelled (``--on-stop cancel``, the default) or left for the next start (``keep``), and the
journal is closed. A second Ctrl-C aborts at once.

``atb live`` is a group: one command per strategy (``atb live ml_basic``, ``atb live
ml_sentiment``), with the same options, and ``atb live report DIR`` to compare the shadow
challengers of a session again (``--shadow VERSION``). Without ``--model-version`` the session
follows ``latest`` and reloads it between bars when it moves (``atb models promote``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import click

from atb_strategies.cli.options import (
    CASH,
    LIMIT,
    POSITIVE_INT,
    guard_option_list,
    guard_params,
    registry_option,
)
from atb_strategies.exceptions import ConfigurationError, ModelNotFoundError
from atb_strategies.live.portfolio import describe
from atb_strategies.strategies.registry import get_strategy, strategy_names

_OPTIONS = [
    click.option("--symbol", default="BTCUSDT", show_default=True, help="The market traded."),
    click.option(
        "--symbols",
        default=None,
        metavar="A,B,...",
        help="A portfolio: several symbols in one session and account (replaces --symbol).",
    ),
    click.option(
        "--symbols-file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="The portfolio's symbols, one a line.",
    ),
    click.option("--timeframe", default="1h", show_default=True, help="Candle size."),
    click.option(
        "--exchange",
        "exchange_id",
        default="binance",
        show_default=True,
        help="A ccxt id, or loopback: the offline demo exchange (no keys, no network).",
    ),
    click.option(
        "--demo-data",
        "demo_data",
        multiple=True,
        metavar="SYMBOL=FILE",
        help="--exchange loopback: serve these candles for SYMBOL (default: synthetic ones).",
    ),
    click.option(
        "--demo-clock",
        type=click.Choice(["fast", "lockstep"]),
        default="fast",
        show_default=True,
        help="--exchange loopback: one candle per second, or one per wait of the feed.",
    ),
    click.option("--paper", is_flag=True, help="Simulated fills on live candles (no keys)."),
    click.option(
        "--live", "real", is_flag=True, help="Real orders (needs --i-understand-the-risks)."
    ),
    click.option(
        "--i-understand-the-risks", "risks", is_flag=True, help="Confirms --live (real money)."
    ),
    click.option("--sandbox", is_flag=True, help="Use the exchange's test network."),
    click.option(
        "--cash", type=CASH, default=10_000.0, show_default=True, help="Paper starting cash."
    ),
    click.option(
        "--model-version", default=None, help="Pin a registry version [follow latest, reloaded]."
    ),
    click.option(
        "--long-threshold",
        type=float,
        default=None,
        help="Predicted return above which to buy [the strategy's default, 0.002].",
    ),
    click.option(
        "--position-size",
        type=click.FloatRange(0, 1, min_open=True),
        default=None,
        help="Fraction of the portfolio value per trade at confidence 1 [0.1].",
    ),
    click.option(
        "--backfill-bars",
        type=POSITIVE_INT,
        default=500,
        show_default=True,
        help="Closed candles loaded before going live (they warm the model up).",
    ),
    click.option("--max-bars", type=POSITIVE_INT, default=None, help="Stop after N live bars."),
    click.option(
        "--poll-grace",
        type=click.FloatRange(min=0),
        default=1.0,
        show_default=True,
        help="Seconds after a candle's close before asking for it.",
    ),
    click.option(
        "--clock-check",
        type=click.FloatRange(min=0, min_open=True),
        default=30.0,
        show_default=True,
        help="While waiting, re-read the exchange clock at most this often (seconds).",
    ),
    click.option(
        "--journal",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path("out/live/journal.sqlite"),
        show_default=True,
        help="SQLite journal of orders and fills (paper: model switches only).",
    ),
    click.option(
        "--log-file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path("out/live/atb-live.log"),
        show_default=True,
        help="Appended: the log records and every line shown on the terminal.",
    ),
    click.option(
        "--max-daily-loss",
        type=LIMIT,
        default="0.05",
        show_default=True,
        help="Fraction of the day's first value (UTC); off to disable.",
    ),
    click.option(
        "--max-drawdown",
        type=LIMIT,
        default="0.15",
        show_default=True,
        help="Fraction of the peak value; off to disable.",
    ),
    click.option(
        "--new-journal",
        is_flag=True,
        help="Start a new journal where the last one was deleted or emptied (once, on purpose; "
        "a recorded kill-switch trip carries over).",
    ),
    click.option(
        "--clear-kill-switch",
        is_flag=True,
        help="Clear a kill-switch trip recorded in the journal by an earlier session, then trade.",
    ),
    click.option(
        "--max-order-notional",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Refuse a new order worth more than this (quote currency) [no cap].",
    ),
    click.option(
        "--max-gross-exposure",
        type=LIMIT,
        default="off",
        show_default=True,
        help="Refuse entries beyond this fraction of the value in all positions together.",
    ),
    click.option(
        "--max-symbol-share",
        type=LIMIT,
        default="off",
        show_default=True,
        help="Refuse entries beyond this fraction of the value in one symbol.",
    ),
    click.option(
        "--max-orders-per-minute",
        type=POSITIVE_INT,
        default=10,
        show_default=True,
        help="Refuse new orders past this rate (exits are exempt).",
    ),
    click.option("--no-flatten", is_flag=True, help="Kill switch cancels but does not flatten."),
    click.option(
        "--on-stop",
        type=click.Choice(["cancel", "keep"]),
        default="cancel",
        show_default=True,
        help="Open orders when stopping.",
    ),
    click.option(
        "--shadow",
        "shadows",
        multiple=True,
        metavar="VERSION",
        help="A challenger (VERSION or TYPE@VERSION, repeatable): virtual book, no orders.",
    ),
    click.option(
        "--shadow-csv",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Where shadow rows go (default: shadow.csv beside --journal).",
    ),
    *guard_option_list,
    click.option(
        "--fear-greed-url",
        default=None,
        metavar="URL",
        help="Sentiment models: poll the Fear & Greed index at this root each bar.",
    ),
    click.option(
        "--sentiment",
        "sentiment_csv",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Sentiment models: a CSV (timestamp, value) re-read when it changes.",
    ),
    click.option(
        "--synthetic-sentiment",
        is_flag=True,
        help="Sentiment models: the synthetic demo index (not real sentiment).",
    ),
    click.option(
        "--max-sentiment-age",
        default=None,
        metavar="DURATION",
        help="No new entries on an older sentiment value [default for ml_sentiment: 36h].",
    ),
    click.option(
        "--dashboard",
        "dashboard_bind",
        default=None,
        metavar="HOST:PORT",
        help="Serve a read-only dashboard of the session there (e.g. 127.0.0.1:8765).",
    ),
    click.option(
        "--dashboard-token",
        default=None,
        help="Required by the dashboard on every request; generated for a non-loopback host.",
    ),
    registry_option,
]


def _live_options(f: Any) -> Any:
    """The options of every ``atb live STRATEGY`` command."""
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


def run_live(
    strategy: str,
    symbol: str,
    symbols: str | None,
    symbols_file: Path | None,
    timeframe: str,
    exchange_id: str,
    demo_data: tuple[str, ...],
    demo_clock: str,
    paper: bool,
    real: bool,
    risks: bool,
    sandbox: bool,
    cash: float,
    model_version: str | None,
    long_threshold: float | None,
    position_size: float | None,
    backfill_bars: int,
    max_bars: int | None,
    poll_grace: float,
    clock_check: float,
    journal: Path,
    log_file: Path,
    max_daily_loss: float | None,
    max_drawdown: float | None,
    new_journal: bool,
    clear_kill_switch: bool,
    max_order_notional: float | None,
    max_gross_exposure: float | None,
    max_symbol_share: float | None,
    max_orders_per_minute: int,
    no_flatten: bool,
    on_stop: str,
    shadows: tuple[str, ...],
    shadow_csv: Path | None,
    max_model_age: str | None,
    age_action: str,
    drift_action: str | None,
    drift_window: int,
    drift_threshold: float | None,
    fear_greed_url: str | None,
    sentiment_csv: Path | None,
    synthetic_sentiment: bool,
    max_sentiment_age: str | None,
    dashboard_bind: str | None,
    dashboard_token: str | None,
    registry_path: Path | None,
) -> None:
    """Run ``strategy`` on live candles: --paper, or --live --i-understand-the-risks."""
    from atb_strategies.live.journal import check_journal, refuse_if_killed

    if paper == real:
        raise ConfigurationError("Choose exactly one of --paper or --live.")
    if real and not risks:
        raise ConfigurationError(
            "Real orders need --live --i-understand-the-risks. Try --paper first."
        )
    # a damaged, deleted or emptied journal (or a recorded trip) is refused first, in well under
    # a second (before the heavy imports and anything that connects)
    if paper:  # the journal gets the model audit rows
        check_journal(journal, new_journal=new_journal)
    else:
        refuse_if_killed(journal, clear_kill_switch, new_journal=new_journal)
    demo = exchange_id == "loopback"
    if not demo and demo_data:
        raise ConfigurationError("--demo-data is for --exchange loopback (the demo exchange).")
    if demo and sandbox:
        raise ConfigurationError("--exchange loopback is a demo already: drop --sandbox.")
    demo_files: dict[str, Path] = {}
    if demo:
        from atb_strategies.testing.demo import parse_demo_data

        demo_files = parse_demo_data(demo_data)
    names = _session_symbols(symbol, symbols, symbols_file, timeframe, exchange_id, demo)
    from atb_strategies.live.broker import KillSwitch
    from atb_strategies.live.runner import (
        EXIT_CODES,
        build_live_cerebro,
        check_certificate,
        log_to_file,
        run_until_stopped,
        stop_reason,
    )
    from atb_strategies.live.shadow_log import (
        compare_books,
        format_comparison,
        plot_books,
        read_shadow_csv,
    )
    from atb_strategies.live.store import CcxtStore

    params: dict[str, Any] = {"version": model_version}
    if registry_path is not None:
        params["registry"] = str(registry_path)
    if long_threshold is not None:
        params["long_threshold"] = long_threshold
    if position_size is not None:
        params["position_size"] = position_size
    if shadows:
        from atb_strategies.registry.shared import shared_registry
        from atb_strategies.strategies.shadow import parse_shadows

        params["shadows"] = list(shadows)
        # every challenger is selected (and validated) before anything connects
        for spec in parse_shadows(params["shadows"], get_strategy(strategy).params.model_type):
            for name in names:
                try:
                    shared_registry(registry_path).select_bundle(
                        name, spec.model_type, timeframe, spec.version
                    )
                except ModelNotFoundError as e:  # each symbol needs its own challenger
                    every = " (every symbol of --symbols needs it)" if len(names) > 1 else ""
                    raise ModelNotFoundError(f"--shadow {spec.version}{every}: {e}") from None
    params.update(
        guard_params(max_model_age, age_action, drift_action, drift_window, drift_threshold)
    )
    if max_sentiment_age is not None:
        params["max_sentiment_age"] = max_sentiment_age
    feed_options: dict[str, Any] = {"poll_grace": poll_grace, "clock_check": clock_check}
    if shadow_csv is not None and not shadows:
        raise ConfigurationError("--shadow-csv is where --shadow rows go: add --shadow VERSION.")
    sources = [x for x in (fear_greed_url, sentiment_csv, synthetic_sentiment or None) if x]
    reads_sentiment = get_strategy(strategy).params.model_type == "sentiment"
    if not reads_sentiment and (sources or max_sentiment_age is not None):
        raise ConfigurationError(
            f"{strategy}'s model reads no sentiment: --fear-greed-url, --sentiment, "
            "--synthetic-sentiment and --max-sentiment-age are for ml_sentiment."
        )
    if drift_action is not None and drift_window > backfill_bars:
        click.echo(
            f"note: --drift-window {drift_window} is longer than --backfill-bars "
            f"{backfill_bars}: drift is known after {drift_window - backfill_bars} live bar(s)"
        )
    if reads_sentiment and not sources:
        raise ConfigurationError(
            f"{strategy} reads market sentiment: give its live source, --fear-greed-url "
            "https://api.alternative.me (the public Fear & Greed index), --sentiment CSV or "
            "--synthetic-sentiment (a demo)."
        )
    if sources:
        from atb_strategies.sentiment import build_sentiment_poller

        # a poller per symbol: each watches its own feed's candles and bars (the synthetic
        # index is made from them); a market-wide source is asked once per symbol and bar
        feed_options["sentiment"] = {
            name: build_sentiment_poller(
                csv=sentiment_csv, fear_greed_url=fear_greed_url, synthetic=synthetic_sentiment
            )
            for name in names
        }
    if dashboard_bind is None and dashboard_token is not None:
        raise ConfigurationError("--dashboard-token is for --dashboard HOST:PORT: add it.")
    if dashboard_bind is not None:
        from atb_strategies.dashboard.server import parse_bind, require_extra

        require_extra("--dashboard")
        parse_bind(dashboard_bind, "--dashboard")
    # the model must reproduce its parity certificate here before anything connects
    certificate = "\n".join(
        check_certificate(get_strategy(strategy), name, timeframe, params) for name in names
    )
    echo = _echo_to_log(log_to_file(log_file))  # the log file gets every terminal line
    with contextlib.ExitStack() as stack:
        if demo:
            from atb_strategies.testing.demo import demo_client, demo_exchange

            server = demo_exchange(
                names,
                timeframe,
                backfill_bars=backfill_bars,
                clock=demo_clock,
                data=demo_files,
                cash=cash,
            )
            stack.callback(server.stop)
            # the demo's fake keys for real orders; keys in the environment are never read
            store = CcxtStore(exchange=demo_client(server, with_keys=real))
            feed_options.update(poll_grace=0.0, qcheck=0.05, clock_check=0.05)
            echo(
                f"demo exchange (loopback) at {server.url}: {', '.join(server.symbols)}, "
                f"market clock {server.clock.now():%Y-%m-%d %H:%M} UTC ({demo_clock}); "
                "synthetic or given candles, fake keys, no network"
            )
        else:
            store = CcxtStore(exchange=exchange_id, sandbox=sandbox)
        kill = KillSwitch(
            max_daily_loss,
            max_drawdown,
            max_order_notional,
            max_orders_per_minute,
            flatten=not no_flatten,
            max_gross_exposure=max_gross_exposure,
            max_symbol_share=max_symbol_share,
        )
        mode = "PAPER" if paper else "LIVE (real orders)"
        echo(
            f"{mode}: {strategy} {describe(names)} {timeframe} on {exchange_id}"
            + (" sandbox" if sandbox else "")
        )
        echo(f"log: {log_file}")
        echo(certificate)
        if not paper:
            echo(f"journal: {journal}")
        else:
            echo(f"model audit: {journal} (model switches; no orders on paper)")
        cerebro = build_live_cerebro(
            get_strategy(strategy),
            store=store,
            symbol=names if len(names) > 1 else names[0],
            timeframe=timeframe,
            paper=paper,
            cash=cash,
            journal=journal,
            backfill_bars=backfill_bars,
            max_bars=max_bars,
            kill_switch=None if paper else kill,
            broker_options=None if paper else {"clear_kill_switch": clear_kill_switch},
            on_stop=on_stop,
            feed_options=feed_options,
            echo=echo,
            shadow_csv=shadow_csv,
            **params,
        )
        from atb_strategies.live.summary import SessionRecorder, write_session_report

        cerebro.addanalyzer(SessionRecorder, _name="session")
        if dashboard_bind is not None:  # reads the files the session writes beside the journal
            from atb_strategies.dashboard.server import start_dashboard

            board = start_dashboard(journal, dashboard_bind, dashboard_token, flag="--dashboard")
            stack.callback(board.stop)  # however the session ends, the port is given back
            echo(f"dashboard: {board.url}")
        strat = run_until_stopped(cerebro)[0]
        # the session's summary and charts first: the stop reason stays the last line
        report = write_session_report(
            strat.analyzers.session,
            strat,
            journal.parent,
            f"{strategy} {' '.join(names)} {timeframe} ({'paper' if paper else 'live'})",
        )
        echo(f"summary: {report[0]}")
        for chart_path in report[1:]:
            echo(f"chart:   {chart_path}")
        code, why = stop_reason(cerebro, max_bars)
        echo(
            f"stopped ({why}): value {cerebro.broker.getvalue():.2f}, closed trades "
            f"{len(strat.trade_records)}"
        )
        if strat.shadow is not None and strat.shadow.rows:
            log = cerebro.runstrats[0][0].analyzers.shadow
            rows = read_shadow_csv(log.path, session=log.session)  # this session's books
            chart = plot_books(
                rows, log.path.with_suffix(".png"), f"{strategy} {' '.join(names)} {timeframe}"
            )
            echo(f"shadow books ({log.path}; again with `atb live report {log.path.parent}`):")
            echo(format_comparison(compare_books(rows, timeframe)))
            if chart is not None:
                echo(f"chart: {chart}")
        if EXIT_CODES[code]:
            sys.exit(EXIT_CODES[code])


def _session_symbols(
    symbol: str,
    symbols: str | None,
    symbols_file: Path | None,
    timeframe: str,
    exchange_id: str,
    demo: bool,
) -> list[str]:
    """The session's symbols (``--symbol`` or the portfolio), checked before connecting: no
    duplicates, one quote currency, no more than the exchange's rate limit serves."""
    from atb_strategies.live.portfolio import session_symbols

    if symbols is None and symbols_file is None:
        return session_symbols(symbol, None, None)
    import ccxt

    venue = "binance" if demo else exchange_id
    if venue not in ccxt.exchanges:
        raise ConfigurationError(
            f"--exchange {exchange_id!r} is not a ccxt exchange id (e.g. binance, kraken) "
            "or loopback."
        )
    client = getattr(ccxt, venue)()
    try:
        seconds = client.parse_timeframe(timeframe)
    except Exception:  # ccxt raises a bare error for an unknown unit
        raise ConfigurationError(
            f"--timeframe {timeframe!r} is not a candle size (1m, 15m, 1h, 4h, 1d...)."
        ) from None
    return session_symbols(
        symbol, symbols, symbols_file, timeframe_s=seconds, rate_limit_ms=client.rateLimit
    )


def _echo_to_log(handler: logging.Handler) -> Any:
    """An ``echo`` that prints a line and also writes it to ``handler`` (the ``--log-file``),
    through a logger of its own, so the terminal does not show it twice."""
    terminal = logging.getLogger("atb_strategies.terminal")
    terminal.setLevel(logging.INFO)
    terminal.propagate = False
    for old in list(terminal.handlers):  # an earlier session of this process
        terminal.removeHandler(old)
    terminal.addHandler(handler)

    def echo(message: Any = "") -> None:
        click.echo(message)
        for line in str(message).splitlines():
            terminal.info(line)

    return echo


class _LiveGroup(click.Group):
    """``atb live``: a command per strategy, plus ``report``; an unknown name lists them."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if not name.startswith("-") and self.get_command(ctx, name) is None:
            raise click.UsageError(
                f"No strategy {name!r}. Choose from: {', '.join(strategy_names())} "
                "(or `atb live report DIR`).",
                ctx,
            )
        return super().resolve_command(ctx, args)


@click.group("live", cls=_LiveGroup)
def live() -> None:
    """Run a strategy on live candles (--paper, or --live --i-understand-the-risks), or report
    a session's shadow challengers."""


def _strategy_command(name: str) -> click.Command:
    def command(**options: Any) -> None:
        run_live(name, **options)

    command.__doc__ = f"Run {name} on live candles: --paper, or --live --i-understand-the-risks."
    return click.command(name)(_live_options(command))


for _name in strategy_names():
    live.add_command(_strategy_command(_name))


@live.command("report")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--timeframe", default="1h", show_default=True, help="Bar size (annualises Sharpe).")
@click.option("--session", default=None, help="Session id (default: the last one in the file).")
def report(directory: Path, timeframe: str, session: str | None) -> None:
    """Compare the champion's and the shadow challengers' virtual books of a session
    (DIRECTORY holds shadow.csv, or give the file); also writes shadow.png beside it."""
    from atb_strategies.live.shadow_log import (
        SHADOW_FILE,
        compare_books,
        format_comparison,
        plot_books,
        read_shadow_csv,
    )

    rows = read_shadow_csv(directory, session)
    csv = directory / SHADOW_FILE if directory.is_dir() else directory
    click.echo(
        f"session {rows['session'].iloc[0]}: {rows['time'].iloc[0]} .. {rows['time'].iloc[-1]}"
    )
    click.echo(format_comparison(compare_books(rows, timeframe)))
    symbols = " ".join(dict.fromkeys(rows["symbol"]))
    chart = plot_books(rows, csv.with_suffix(".png"), f"{symbols} {timeframe}")
    if chart is not None:
        click.echo(f"chart: {chart}")
