"""Wire and run a live or paper session: the cerebro, the log file and the Ctrl-C handling.

Used by ``atb live`` and ``examples/paper_trade.py``. Paper sessions use live public candles and
``PaperBroker`` (simulated fills with the market's real fees, precision and limits); live
sessions use the store's ``CcxtBroker`` with its journal and kill switch. A first Ctrl-C during
:func:`run_until_stopped` asks for a clean stop (the current loop finishes, the broker applies
its ``on_stop`` policy, the journal is closed); a second one aborts at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import backtrader as bt

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.exchange.redaction import install_redaction
from atb_strategies.inference.certificate import verify_certificate
from atb_strategies.live.broker import KillSwitch
from atb_strategies.live.paper import PaperBroker
from atb_strategies.live.shadow_log import SHADOW_FILE, ShadowLog
from atb_strategies.live.status import LiveStatus
from atb_strategies.live.store import CcxtStore
from atb_strategies.registry.shared import shared_registry

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

logger = logging.getLogger(__name__)


def log_to_file(path: Path) -> logging.Handler:
    """Also send every log record of the process to ``path`` (parent folders are created).

    Parameters
    ----------
    path : Path
        The log file; appended to when it exists.

    Returns
    -------
    logging.Handler
        The file handler added to the root logger (remove it to stop logging there).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = install_redaction(logging.FileHandler(path))  # credentials never reach the file
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler


def build_live_cerebro(
    strategy: type[bt.Strategy],
    *,
    store: CcxtStore,
    symbol: str | Sequence[str],
    timeframe: str,
    paper: bool,
    cash: float,
    journal: Path | None,
    backfill_bars: int,
    max_bars: int | None,
    kill_switch: KillSwitch | None,
    on_stop: str,
    echo: Any = print,
    feed_options: dict[str, Any] | None = None,
    broker_options: dict[str, Any] | None = None,
    shadow_csv: Path | None = None,
    **strategy_params: Any,
) -> bt.Cerebro:
    """A cerebro wired for live or paper trading of ``symbol`` (one or several) on ``store``.

    Parameters
    ----------
    strategy : type of bt.Strategy
        The strategy class (``MlBasic``, ``MlSentiment`` or a subclass).
    store : CcxtStore
        The exchange connection; it supplies the feed and, for real orders, the broker.
    symbol : str or sequence of str
        The market (``"BTCUSDT"``), or several: a portfolio session, one feed (each with its
        own model window and bundle) per symbol, one broker, account, journal and kill switch.
    timeframe : str
        The candle size (``"1h"``).
    paper : bool
        True: ``PaperBroker`` with ``cash``. False: the store's ``CcxtBroker`` (real orders).
    cash : float
        Paper starting cash (ignored for real orders).
    journal : Path or None
        The live broker's SQLite journal. On paper it receives only the audit rows of model
        changes (hot reloads of ``latest``); None: no audit rows on paper.
    backfill_bars : int
        Closed candles loaded before going live (they warm the model up).
    max_bars : int or None
        Stop after this many live bars; None runs until stopped.
    kill_switch : KillSwitch or None
        Risk limits for real orders.
    on_stop : {"cancel", "keep"}
        What the live broker does with open orders when the session stops.
    echo : callable, default print
        Receives one ``LiveStatus`` line per live bar.
    feed_options, broker_options : dict, optional
        Extra keyword arguments for the feed (``poll_grace``, ``clock_check``...) and the broker.
        ``feed_options["sentiment"]`` (sentiment models) is a ``SentimentPoller`` for one symbol,
        or ``{symbol: poller}`` with one poller per symbol: a poller serves one feed (it
        watches that feed's candles and bars).
    shadow_csv : Path or None
        With shadows (``shadows=[...]`` in ``strategy_params``): where their rows are appended
        (``shadow_log.ShadowLog``, analyzer name ``shadow``); default ``shadow.csv`` beside the
        journal, else in the working directory.
    **strategy_params
        Parameters for ``strategy`` (``long_threshold``, ``registry``, ``version``...).

    Returns
    -------
    bt.Cerebro
        Ready for :func:`run_until_stopped`; its ``LiveStatus`` analyzer is named ``status``.
    """
    cerebro = bt.Cerebro(quicknotify=True, stdstats=False)
    names = [symbol] if isinstance(symbol, str) else list(symbol)
    for name in names:
        data = store.getdata(
            dataname=name,
            bar=timeframe,
            backfill_bars=backfill_bars,
            max_live_bars=max_bars,
            **_options_of(name, names, feed_options or {}),
        )
        cerebro.adddata(data, name=data._name)
    cerebro.addstore(store)
    if paper:
        broker = PaperBroker(store=store, **(broker_options or {}))
        broker.setcash(cash)
    else:
        broker = store.getbroker(
            journal=str(journal), kill_switch=kill_switch, on_stop=on_stop, **(broker_options or {})
        )
    cerebro.setbroker(broker)
    cerebro.addstrategy(strategy, **strategy_params)
    audit = journal if paper else None  # a live broker audits into its own journal
    cerebro.addanalyzer(LiveStatus, _name="status", echo=echo, audit=audit)
    if strategy_params.get("shadows"):
        default = (Path(journal).parent if journal is not None else Path()) / SHADOW_FILE
        cerebro.addanalyzer(ShadowLog, _name="shadow", path=shadow_csv or default)
    return cerebro


def _options_of(name: str, names: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """The feed options of symbol ``name``: its own poller out of a ``sentiment`` mapping."""
    sentiment = options.get("sentiment")
    if sentiment is None:
        return options
    if isinstance(sentiment, Mapping):
        if name not in sentiment:
            raise ConfigurationError(
                f"feed_options['sentiment'] has no poller for {name}: give one per symbol "
                f"({', '.join(names)})."
            )
        return {**options, "sentiment": sentiment[name]}
    if len(names) > 1:
        raise ConfigurationError(
            f"feed_options['sentiment'] is one poller for {len(names)} symbols: a poller serves "
            "one feed; give {symbol: SentimentPoller(source)} with one per symbol."
        )
    return options


def run_until_stopped(cerebro: bt.Cerebro) -> list:
    """``cerebro.run()`` where Ctrl-C asks for a clean stop and a second Ctrl-C aborts.

    The previous SIGINT handler is restored when the run ends, however it ends.

    Parameters
    ----------
    cerebro : bt.Cerebro
        Typically from :func:`build_live_cerebro`.

    Returns
    -------
    list
        What ``cerebro.run()`` returns (the strategy instances).
    """
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        logger.warning("Ctrl-C: stopping after the current loop (press again to abort)")
        cerebro.atb_interrupted = True  # read by stop_reason
        cerebro.runstop()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        return cerebro.run()
    finally:
        signal.signal(signal.SIGINT, previous)


#: Exit status of ``atb live`` per way a session ends (``stop_reason``).
EXIT_CODES = {"max_bars": 0, "feed_ended": 0, "kill_switch": 3, "exchange": 4, "ctrl_c": 130}


def stop_reason(cerebro: bt.Cerebro, max_bars: int | None = None) -> tuple[str, str]:
    """Why a live session ended: ``(code, words)``; ``code`` is a key of ``EXIT_CODES``.

    The kill switch (with its reason) wins over Ctrl-C, Ctrl-C over the exchange becoming
    unavailable, and those over reaching ``max_bars`` or the feed ending.
    """
    risk = getattr(cerebro.broker, "risk", None)
    if risk is not None and risk.killed:
        return "kill_switch", f"kill switch: {risk.reason or 'engaged'}"
    if getattr(cerebro, "atb_interrupted", False):
        return "ctrl_c", "Ctrl-C"
    unavailable = next(
        (
            getattr(s, "unavailable", None)
            for s in cerebro.stores
            if getattr(s, "unavailable", None)
        ),
        None,
    )
    if unavailable:
        return "exchange", f"exchange unavailable ({unavailable})"
    if max_bars is not None:
        return "max_bars", f"{max_bars} live bar(s) done (max bars)"
    return "feed_ended", "the live feed ended"


def check_certificate(
    strategy: type[bt.Strategy], symbol: str, timeframe: str, params: dict[str, Any]
) -> str:
    """Before a live or paper session: re-run the served bundle's parity certificate here.

    Returns a one-line note (what was checked, or that the bundle has no certificate).

    Raises
    ------
    BundleError
        The certificate does not reproduce on this machine: the session must not start.
    """

    def param(name: str) -> Any:
        return params[name] if name in params else getattr(strategy.params, name, None)

    if param("version") == "asof":
        return "parity certificate: not checked for version='asof'"
    bundle = shared_registry(param("registry")).select_bundle(
        param("symbol") or symbol,
        param("model_type"),
        param("timeframe") or timeframe,
        param("version"),
    )
    check = verify_certificate(bundle)
    if not check.present:
        logger.warning("%s has no parity certificate: its outputs are not checked here", bundle.key)
        return f"parity certificate: none in {bundle.key} (not checked)"
    return (
        f"parity certificate: {bundle.key} reproduces on this machine "
        f"({check.windows} windows, max difference {check.max_abs_diff:.2g})"
    )
