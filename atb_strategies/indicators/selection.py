"""Which registry bundle serves a backtrader data feed: symbol and timeframe from the feed,
then the registry's selection, checked against the feed's bar size and columns."""

from __future__ import annotations

import os

import backtrader as bt

from atb_strategies.data.feeds import feed_timeframe, labelled_daily_but_intraday
from atb_strategies.exceptions import ModelNotFoundError
from atb_strategies.features.candles import timeframe_to_timedelta
from atb_strategies.inference.bundle import ModelBundle
from atb_strategies.registry.shared import shared_registry


def feed_identity(
    data: bt.AbstractDataBase, symbol: str | None, timeframe: str | None, owner: str
) -> tuple[str, str | None, str]:
    """``(symbol, the feed's timeframe, the model timeframe)``: symbol defaults to the feed's
    name, timeframe to the feed's own."""
    sym = symbol or getattr(data, "_name", "") or None
    if not sym:
        raise ModelNotFoundError(
            f"{owner} cannot tell which symbol the data feed is: pass symbol='BTCUSDT' or add "
            "the feed with cerebro.adddata(feed, name='BTCUSDT')."
        )
    feed_tf = feed_timeframe(data)
    tf = timeframe or feed_tf
    if tf is None:
        raise ModelNotFoundError(
            f"{owner}: the feed {sym!r} has no minute/day timeframe; pass timeframe='1h'."
        )
    return sym, feed_tf, tf


def select_for_feed(
    data: bt.AbstractDataBase,
    *,
    symbol: str | None,
    model_type: str,
    timeframe: str | None,
    version: str | None,
    registry: str | None,
    owner: str,
    extra: bt.AbstractDataBase | None = None,
) -> ModelBundle:
    """Select the bundle for ``data`` (symbol defaults to the feed's name, timeframe to its own)."""
    sym, feed_tf, tf = feed_identity(data, symbol, timeframe, owner)
    try:
        bundle = shared_registry(registry).select_bundle(sym, model_type, tf, version)
    except ModelNotFoundError as e:
        hint = ""
        if feed_tf == "1d" and timeframe is None and labelled_daily_but_intraday(data):
            hint = (
                " The feed says it is daily: bt.feeds.PandasData defaults to daily bars; create "
                "it with timeframe=bt.TimeFrame.Minutes, compression=60 for hourly candles (or use "
                "atb_strategies.data.make_feed)."
            )
        if symbol is None and _named_after_file(data):
            hint += (
                f" The feed has no name of its own: backtrader named it {sym!r} after its file. "
                f"Pass symbol='ORCL' (the model's symbol) to {owner} or add the feed with "
                "cerebro.adddata(feed, name='ORCL')."
            )
        raise ModelNotFoundError(f"{owner}: {e}{hint}") from e
    if feed_tf is not None and timeframe_to_timedelta(feed_tf) != timeframe_to_timedelta(
        bundle.timeframe
    ):
        raise ModelNotFoundError(
            f"{owner}: model {bundle.key} is a {bundle.timeframe} model but feed {sym!r} has "
            f"{feed_tf} bars. Resample the feed (cerebro.resampledata) to {bundle.timeframe}."
        )
    available = list(data.lines.getlinealiases())
    if extra is not None:
        available += list(extra.lines.getlinealiases())
    bundle.pipeline.check_columns(
        available,
        where=f"the feed {sym!r}",
        owner=owner,
        model=bundle.key,
        hint=(
            "Add a sentiment column to the feed (atb_strategies.data.make_feed on a frame with a "
            "'sentiment' column), pass a sentiment feed as the indicator's second data "
            "(make_sentiment_feed), or use model_type='basic'."
            if "sentiment" in bundle.pipeline.columns
            else ""
        ),
    )
    return bundle


def _named_after_file(data: bt.AbstractDataBase) -> bool:
    """Whether the feed's name is the one backtrader gives an unnamed CSV feed (its file's
    stem), not one the user chose."""
    dataname = getattr(getattr(data, "p", None), "dataname", None)
    if not isinstance(dataname, str | os.PathLike) or getattr(data.p, "name", None):
        return False
    return getattr(data, "_name", "") == os.path.splitext(os.path.basename(str(dataname)))[0]
