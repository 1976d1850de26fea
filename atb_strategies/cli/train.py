"""``atb train model SYMBOL``: train, gate, evaluate and register a new model version."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from atb_strategies.cli.options import (
    POSITIVE_INT,
    adjusted_option,
    architecture_option,
    calendar_option,
    calibrate_option,
    check_target,
    data_tz_option,
    recipe_option,
    registry_option,
    sequence_length_option,
    target_option,
    training_data_options,
)
from atb_strategies.cli.outputs import training_registry


@click.group()
def train() -> None:
    """Train models."""


@train.command("model")
@click.argument("symbol")
@training_data_options
@calendar_option
@adjusted_option
@data_tz_option
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
    help="Most training passes (mlp, gru; early stopping may end sooner).",
)
@click.option("--seed", default=0, show_default=True, help="Training (and synthetic data) seed.")
@click.option("--no-promote", is_flag=True, help="Register without moving latest.")
@click.option(
    "--force-promote",
    is_flag=True,
    help="Move latest even if the model fails the baseline gate (no edge over naive baselines).",
)
@click.option("--no-backtest", is_flag=True, help="Skip the quick test-period backtest.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the metrics as one JSON document on stdout (the other lines go to stderr).",
)
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
    calendar: str,
    adjusted: bool,
    tz: str | None,
    architecture: str,
    recipe: str | None,
    target: str,
    calibrate: bool | None,
    sequence_length: int | None,
    horizon: int,
    epochs: int,
    seed: int,
    no_promote: bool,
    force_promote: bool,
    no_backtest: bool,
    as_json: bool,
    registry_path: Path | None,
) -> None:
    """Train a SYMBOL model and register it as a new version (and latest, unless --no-promote)."""
    from atb_strategies.cli.options import check_dates, check_dates_in_data, resolved_timeframe
    from atb_strategies.data.sources import default_data_dir, load_candles
    from atb_strategies.features.calendar import get_calendar
    from atb_strategies.training.trainer import TrainingConfig, train_model

    check_dates(start_date, end_date)
    check_target(target, architecture, calibrate)

    get_calendar(calendar)  # an unknown name or a missing extra fails before any work
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
        adjusted=adjusted,
        tz=tz,
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
        calendar=calendar,
    )
    result = train_model(replace(config, data_source=source), frame)
    registered = f"registered {symbol}/{model_type}@{result.version} at {result.path}" + (
        " (latest)" if result.promoted else ""
    )
    verdict = _verdict(result, no_promote)
    if as_json:
        click.echo(registered, err=True)
        click.echo(json.dumps(_metrics(result, verdict), indent=2))
        click.echo(verdict, err=True)
        return
    click.echo(registered)
    summary = _test_summary(result.metrics)
    if summary:
        click.echo(summary)
    click.echo(verdict)


def _test_summary(metrics: dict[str, Any]) -> str | None:
    """One line of the test part's figures (``--json`` has them all), or None."""
    test = metrics.get("test") or {}
    model, last = test.get("model") or {}, test.get("baseline_last_close") or {}
    parts = []
    if model.get("directional_accuracy") is not None and test.get("share_of_up_moves"):
        up = test["share_of_up_moves"]
        parts.append(
            f"direction {100 * model['directional_accuracy']:.1f} % vs majority "
            f"{100 * max(up, 1 - up):.1f} %"
        )
    if model.get("rmse") is not None and last.get("rmse") is not None:
        parts.append(f"RMSE {model['rmse']:.4g} vs last close {last['rmse']:.4g}")
    bt = metrics.get("backtest") or {}
    if bt.get("total_return") is not None and bt.get("buy_and_hold_return") is not None:
        parts.append(
            f"quick backtest {100 * bt['total_return']:+.2f} % vs buy-and-hold "
            f"{100 * bt['buy_and_hold_return']:+.2f} %"
        )
    return f"test part ({test.get('samples', '?')} samples): " + "; ".join(parts) if parts else None


def _verdict(result: Any, no_promote: bool) -> str:
    """The one-line verdict ``atb train model`` ends with: the baseline gate and latest."""
    gate = result.metrics.get("gate", {"passed": True, "reasons": []})
    if gate["passed"]:
        where = (
            f"latest -> {result.version}"
            if result.promoted
            else "latest not moved" + (" (--no-promote)" if no_promote else "")
        )
        return f"verdict: passed the baseline gate, {where}"
    moved = (
        "latest moved anyway (--force-promote)"
        if result.promoted
        else ("latest not moved" if not no_promote else "latest not moved (--no-promote)")
    )
    return f"verdict: baseline gate FAILED, {moved}: {'; '.join(gate['reasons'])}" + (
        "" if result.promoted or no_promote else ". Pass --force-promote to move it."
    )


def _metrics(result: Any, verdict: str) -> dict[str, Any]:
    """What ``--json`` prints: the version, where it is, the verdict and the metrics."""
    m = result.metrics
    return {
        "version": result.version,
        "path": str(result.path),
        "promoted": result.promoted,
        "verdict": verdict.removeprefix("verdict: "),
        "test": m["test"],
        "oos": m.get("oos"),
        "validation": m.get("validation"),
        "model_family": m.get("model_family"),
        "calibration": m.get("calibration"),
        "model_selection": m.get("model_selection"),
        "export_parity": m["export_parity_max_abs_diff"],
        "backtest": m.get("backtest"),
    }


def _add_walk_forward() -> None:
    from atb_strategies.cli.walkforward import walk_forward

    train.add_command(walk_forward)


_add_walk_forward()
