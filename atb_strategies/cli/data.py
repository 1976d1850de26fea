"""``atb data download``: fetch candles through ccxt into the parquet cache."""

from __future__ import annotations

from pathlib import Path

import click

from atb_strategies.cli.options import DATE, data_dir_option


@click.group()
def data() -> None:
    """Market data."""


@data.command("download")
@click.argument("symbol")
@click.option("--timeframe", default="1h", show_default=True, help="Candle size.")
@click.option("--start-date", type=DATE, required=True, help="First candle (UTC date or time).")
@click.option(
    "--end-date", type=DATE, default=None, help="Last candle; a date includes its whole day."
)
@click.option(
    "--exchange", "exchange_id", default="binance", show_default=True, help="ccxt exchange id."
)
@data_dir_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def download(
    symbol: str,
    timeframe: str,
    start_date: str,
    end_date: str | None,
    exchange_id: str,
    data_dir: Path | None,
    no_progress: bool,
) -> None:
    """Download SYMBOL candles (closed ones only) into the cache; re-runs fetch what is missing.

    Exchange settings (URLs, keys) come from $ATB_EXCHANGE_CONFIG (a JSON file) and
    $ATB_<EXCHANGE>_API_KEY / _API_SECRET; public candles need no key.
    """
    from atb_strategies.data.loaders import inspect_candles
    from atb_strategies.data.sources import default_data_dir, download_candles

    frame = download_candles(
        symbol,
        timeframe,
        start_date,
        end_date,
        exchange_id,
        data_dir or default_data_dir(),
        progress=not no_progress,
    )
    for line in inspect_candles(frame, timeframe).lines():
        click.echo(line)
    click.echo(f"cache: {frame.attrs['source']}")
