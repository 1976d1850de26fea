"""``atb models``: list, show and validate registry bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from atb_strategies.bundle.jsonio import read_json
from atb_strategies.bundle.loader import load_bundle_spec
from atb_strategies.cli.options import load_config, registry_option
from atb_strategies.exceptions import AtbError, RegistryError
from atb_strategies.inference.bundle import ModelBundle
from atb_strategies.registry import manage
from atb_strategies.registry.registry import ModelRegistry


def _registry(registry_path: Path | None) -> ModelRegistry:
    registry = ModelRegistry.from_config(load_config(registry_path))
    if not registry.root.is_dir():
        raise RegistryError(
            f"Registry {registry.root} does not exist or is not a directory. Check --registry, "
            "ATB_MODEL_REGISTRY_PATH or the config file."
        )
    return registry


def _shape(shape: tuple | None) -> str:
    if shape is None:
        return "?"
    return "x".join("batch" if s is None else str(s) for s in shape)


@click.group()
def models() -> None:
    """Inspect the model registry."""


@models.command("list")
@registry_option
def list_models(registry_path: Path | None) -> None:
    """List every bundle: symbol, type, timeframe, version, latest, created, input shape."""
    reg = _registry(registry_path)
    infos = reg.list_bundles()
    click.echo(f"registry: {reg.root}")
    if not infos:
        click.echo("no bundles found")
        return
    header = ("SYMBOL", "TYPE", "TIMEFRAME", "VERSION", "LATEST", "CREATED", "INPUT")
    rows = [
        (
            i.symbol,
            i.model_type,
            i.timeframe or "?",
            i.version,
            "*" if i.is_latest else "",
            (i.created_at or "?")[:19],
            _shape(i.input_shape) if i.error is None else "unreadable",
        )
        for i in infos
    ]
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@models.command("show")
@click.argument("symbol")
@click.argument("model_type")
@click.argument("version", required=False)
@registry_option
def show(symbol: str, model_type: str, version: str | None, registry_path: Path | None) -> None:
    """Show a bundle's metadata, feature schema and validation result (VERSION: latest)."""
    reg = _registry(registry_path)
    name = reg.resolve_version(symbol, model_type, version)
    path = reg.layout.version_dir(symbol, model_type, name)
    click.echo(f"bundle: {symbol}/{model_type}@{name}")
    click.echo(f"path:   {path}")
    try:
        spec = load_bundle_spec(path, verify_checksum=reg.verify_checksum)
        ModelBundle(spec, reg.runner_options).runner.check()
    except AtbError as e:
        click.echo(f"valid:  NO\n  {e}")
        sys.exit(1)
    m = spec.metadata
    click.echo(f"valid:  yes ({m.origin})")
    click.echo(f"metadata ({m.path}):")
    click.echo(json.dumps(m.to_dict(), indent=2, default=str))
    click.echo(f"feature schema ({spec.schema.path}):")
    click.echo(json.dumps(spec.schema.to_dict(), indent=2))
    metrics_path = path / "metrics.json"
    if metrics_path.is_file():
        click.echo(f"metrics ({metrics_path}):")
        click.echo(json.dumps(read_json(metrics_path), indent=2))
    else:
        click.echo("metrics: none recorded (no metrics.json)")


@models.command("validate")
@click.argument("registry", required=False, type=click.Path(path_type=Path, file_okay=False))
@registry_option
def validate(registry: Path | None, registry_path: Path | None) -> None:
    """Validate every bundle in REGISTRY; exit 1 if any is invalid."""
    reg = _registry(registry or registry_path)
    results = reg.validate_all()
    click.echo(f"registry: {reg.root}")
    bad = 0
    for info, error in results:
        latest = " (latest)" if info.is_latest else ""
        if error is None:
            click.echo(f"OK       {info.key}{latest}")
        else:
            bad += 1
            click.echo(f"INVALID  {info.key}{latest}\n         {error}")
    click.echo(f"{len(results)} bundle(s), {len(results) - bad} valid, {bad} invalid")
    if bad:
        sys.exit(1)


@models.command("promote")
@click.argument("symbol")
@click.argument("model_type")
@click.argument("version")
@registry_option
def promote_cmd(symbol: str, model_type: str, version: str, registry_path: Path | None) -> None:
    """Point latest of SYMBOL/MODEL_TYPE at VERSION (after validating it)."""
    reg = _registry(registry_path)
    reg.select_bundle(symbol, model_type, version=version)  # refuse an unservable version
    previous = manage.promote(reg.layout, symbol, model_type, version)
    click.echo(f"{symbol}/{model_type}: latest {previous or '(none)'} -> {version}")


@models.command("rollback")
@click.argument("symbol")
@click.argument("model_type")
@registry_option
def rollback_cmd(symbol: str, model_type: str, registry_path: Path | None) -> None:
    """Point latest of SYMBOL/MODEL_TYPE back at the version it named before."""
    reg = _registry(registry_path)
    current = reg.layout.read_latest(symbol, model_type)
    target = manage.rollback(reg.layout, symbol, model_type)
    click.echo(f"{symbol}/{model_type}: latest {current} -> {target}")


@models.command("prune")
@click.argument("symbol")
@click.argument("model_type")
@click.option("--keep", type=int, required=True, help="Newest versions to keep (latest is kept).")
@registry_option
def prune_cmd(symbol: str, model_type: str, keep: int, registry_path: Path | None) -> None:
    """Delete all but the newest KEEP versions; never the one latest names."""
    reg = _registry(registry_path)
    removed = manage.prune(reg.layout, symbol, model_type, keep)
    click.echo(
        f"removed {len(removed)} version(s)" + (": " + ", ".join(removed) if removed else "")
    )


def _metric(metrics: dict, *path: str) -> str:
    value: object = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@models.command("compare")
@click.argument("symbol")
@click.argument("model_type")
@registry_option
def compare_cmd(symbol: str, model_type: str, registry_path: Path | None) -> None:
    """Table of test metrics (metrics.json) across the versions of SYMBOL/MODEL_TYPE."""
    reg = _registry(registry_path)
    latest = reg.layout.read_latest(symbol, model_type)
    header = (
        "VERSION",
        "LATEST",
        "TEST PERIOD",
        "RMSE",
        "RMSE(last)",
        "MAE",
        "DIR.ACC",
        "DIR.ACC(drift)",
        "BT RETURN",
        "B&H RETURN",
        "TRADES",
    )
    rows = []
    for version in reg.layout.versions(symbol, model_type):
        path = reg.layout.version_dir(symbol, model_type, version) / "metrics.json"
        try:
            m = read_json(path)
        except AtbError:
            m = {}
        period = m.get("test_period") or ["-", "-"]
        rows.append(
            (
                version,
                "*" if version == latest else "",
                f"{str(period[0])[:10]}..{str(period[1])[:10]}",
                _metric(m, "test", "model", "rmse"),
                _metric(m, "test", "baseline_last_close", "rmse"),
                _metric(m, "test", "model", "mae"),
                _metric(m, "test", "model", "directional_accuracy"),
                _metric(m, "test", "baseline_drift", "directional_accuracy"),
                _metric(m, "backtest", "total_return"),
                _metric(m, "backtest", "buy_and_hold_return"),
                _metric(m, "backtest", "trades"),
            )
        )
    if not rows:
        click.echo(f"no versions for {symbol}/{model_type}")
        return
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
