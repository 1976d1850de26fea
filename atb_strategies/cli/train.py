"""``atb train model SYMBOL``: train, gate, evaluate and register a new model version."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from atb_strategies.cli.options import (
    POSITIVE_INT,
    architecture_option,
    calibrate_option,
    check_target,
    load_config,
    recipe_option,
    registry_option,
    target_option,
    training_data_options,
)


@click.group()
def train() -> None:
    """Train models."""


@train.command("model")
@click.argument("symbol")
@training_data_options
@architecture_option
@recipe_option
@target_option
@calibrate_option
@click.option("--sequence-length", type=POSITIVE_INT, default=120, show_default=True)
@click.option("--horizon", type=POSITIVE_INT, default=1, show_default=True)
@click.option("--epochs", type=POSITIVE_INT, default=30, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--no-promote", is_flag=True, help="Register without moving latest.")
@click.option(
    "--force-promote",
    is_flag=True,
    help="Move latest even if the model fails the baseline gate (no edge over naive baselines).",
)
@click.option("--no-backtest", is_flag=True, help="Skip the quick test-period backtest.")
@registry_option
def model(
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
    architecture: str,
    recipe: str | None,
    target: str,
    calibrate: bool | None,
    sequence_length: int,
    horizon: int,
    epochs: int,
    seed: int,
    no_promote: bool,
    force_promote: bool,
    no_backtest: bool,
    registry_path: Path | None,
) -> None:
    """Train a SYMBOL model and register it as a new version (and latest, unless --no-promote)."""
    from atb_strategies.cli.options import check_dates, check_dates_in_data, resolved_timeframe
    from atb_strategies.data.sources import default_data_dir, load_candles
    from atb_strategies.training.trainer import TrainingConfig, train_model

    check_dates(start_date, end_date)
    check_target(target, architecture)

    registry = load_config(registry_path).model_registry_path
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
    )
    source = frame.attrs["source"]
    check_dates_in_data(frame, start_date, end_date)
    timeframe = resolved_timeframe(timeframe, data, frame)
    if model_type == "sentiment":
        sent = str(sentiment) if sentiment is not None else "synthetic demo index"
        source += f"; sentiment: {sent}"
    config = TrainingConfig(
        symbol=symbol,
        timeframe=timeframe,
        model_type=model_type,
        start_date=start_date,
        end_date=end_date,
        architecture=architecture,
        recipe=recipe,
        target=target,
        calibrate=calibrate,
        sequence_length=sequence_length,
        horizon=horizon,
        epochs=epochs,
        seed=seed,
        registry=Path(registry),
        promote=not no_promote,
        force_promote=force_promote,
        backtest=not no_backtest,
    )
    result = train_model(replace(config, data_source=source), frame)
    test = result.metrics["test"]
    click.echo(
        f"registered {symbol}/{model_type}@{result.version} at {result.path}"
        + (" (latest)" if result.promoted else "")
    )
    gate = result.metrics.get("gate", {"passed": True, "reasons": []})
    if not gate["passed"]:
        verdict = (
            "latest moved anyway (--force-promote)"
            if result.promoted
            else ("latest not moved" if not no_promote else "latest not moved (--no-promote)")
        )
        click.echo(
            f"baseline gate FAILED, {verdict}: {'; '.join(gate['reasons'])}"
            + ("" if result.promoted or no_promote else ". Pass --force-promote to move it."),
            err=True,
        )
    click.echo(
        json.dumps(
            {
                "test": test,
                "oos": result.metrics.get("oos"),
                "validation": result.metrics.get("validation"),
                "model_family": result.metrics.get("model_family"),
                "calibration": result.metrics.get("calibration"),
                "model_selection": result.metrics.get("model_selection"),
                "export_parity": result.metrics["export_parity_max_abs_diff"],
                "backtest": result.metrics.get("backtest"),
            },
            indent=2,
        )
    )


def _add_walk_forward() -> None:
    from atb_strategies.cli.walkforward import walk_forward

    train.add_command(walk_forward)


_add_walk_forward()
