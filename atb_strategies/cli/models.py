"""``atb models``: list, show, validate and manage the versions of the model registry.

Numbers people read use one convention across commands: accuracies and returns in percent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from atb_strategies.bundle.safeio import plain
from atb_strategies.cli.options import load_config, registry_option
from atb_strategies.exceptions import AtbError, ConfigurationError, RegistryError

if TYPE_CHECKING:  # pragma: no cover
    from atb_strategies.registry.registry import ModelRegistry


def _registry(registry_path: Path | None) -> ModelRegistry:
    from atb_strategies.registry.registry import ModelRegistry

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
            plain(i.version),
            "*" if i.is_latest else "",
            (i.created_at or "?")[:19],
            _shape(i.input_shape) if i.error is None else "unreadable",
        )
        for i in infos
    ]
    _table(header, rows)
    for i in infos:
        if i.error is not None:
            click.echo(f"unreadable {plain(i.key)}: {i.error}")
    from atb_strategies.registry import manage

    for symbol in reg.layout.symbols():
        for model_type in reg.layout.model_types(symbol):
            if not reg.layout.versions(symbol, model_type):
                continue
            _, problem = manage.latest_status(reg.layout, symbol, model_type)
            if problem is not None:
                click.echo(f"no latest for {symbol}/{model_type}: {problem}")


def _table(header: tuple, rows: list[tuple]) -> None:
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@models.command("show")
@click.argument("symbol")
@click.argument("model_type")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Everything: metadata, schema, metrics.")
@registry_option
def show(
    symbol: str, model_type: str, version: str | None, as_json: bool, registry_path: Path | None
) -> None:
    """Summarise a bundle: identity, input, output, features, headline metrics (VERSION: latest).

    With --json: one JSON document with the whole metadata, feature schema and metrics.
    """
    from atb_strategies.bundle.jsonio import read_json
    from atb_strategies.bundle.loader import load_bundle_spec
    from atb_strategies.inference.bundle import ModelBundle

    reg = _registry(registry_path)
    name = reg.resolve_version(symbol, model_type, version)
    path = reg.layout.version_dir(symbol, model_type, name)
    try:
        spec = load_bundle_spec(path, verify_checksum=reg.verify_checksum)
        ModelBundle(spec, reg.runner_options).runner.check()
    except AtbError as e:
        click.echo(f"bundle: {symbol}/{model_type}@{name}\npath:   {path}\nvalid:  NO\n  {e}")
        sys.exit(1)
    metrics_path = path / "metrics.json"
    metrics, metrics_error = None, None
    if os.path.lexists(metrics_path):
        try:
            metrics = read_json(metrics_path, path)
        except AtbError as e:
            metrics_error = str(e)
    m, schema = spec.metadata, spec.schema
    if as_json:
        document = {
            "bundle": spec.key,
            "path": str(path),
            "metadata": m.to_dict(),
            "feature_schema": schema.to_dict(),
            "metrics": metrics,
        }
        if metrics_error is not None:
            document["metrics_error"] = metrics_error
        click.echo(json.dumps(document, indent=2, default=str))
        return
    out = m.output
    click.echo(f"bundle: {spec.key}")
    click.echo(f"path:   {path}")
    click.echo(f"valid:  yes ({m.origin})")
    click.echo(f"created {m.created_at or '?'}  framework {m.framework or '?'}")
    click.echo(
        f"input   {m.input.name}: {m.input.dtype} [batch, {m.input.sequence_length}, "
        f"{m.input.n_features}]  ({schema.warmup_bars} warm-up bars)"
    )
    click.echo(f"output  {out.target}, {out.horizon} bar(s) ahead")
    names = schema.feature_names
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    click.echo(f"features {shown}")
    for line in _headline(metrics) if metrics_error is None else [f"metrics {metrics_error}"]:
        click.echo(line)
    click.echo("(--json for the whole metadata, feature schema and metrics)")


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _period(metrics: dict) -> list:
    period = metrics.get("test_period")
    return period if isinstance(period, list) and len(period) == 2 else ["-", "-"]


def _pct(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, int | float) else "-"


def _headline(metrics: dict | None) -> list[str]:
    if metrics is None:
        return ["metrics none recorded (no metrics.json)"]
    test = _dict(metrics.get("test"))
    model = _dict(test.get("model"))
    last = _dict(test.get("baseline_last_close"))
    period = _period(metrics)
    lines = [
        f"test    {str(period[0])[:10]}..{str(period[1])[:10]}, {test.get('samples', '?')} "
        f"samples: RMSE {_metric(metrics, 'test', 'model', 'rmse')} vs "
        f"{_metric(metrics, 'test', 'baseline_last_close', 'rmse')} for last close; direction "
        f"{_pct(model.get('directional_accuracy'))} vs {_pct(test.get('share_of_up_moves'))} "
        "always up"
    ]
    if last.get("rmse") is None:
        lines[0] = lines[0].replace(" vs - for last close", "")
    bt = metrics.get("backtest")
    if isinstance(bt, dict):
        lines.append(
            f"backtest {_pct(bt.get('total_return'))} vs buy-and-hold "
            f"{_pct(bt.get('buy_and_hold_return'))}, {bt.get('trades', '?')} trades"
        )
    return lines


@models.command("validate")
@click.argument("registry", required=False, type=click.Path(path_type=Path, file_okay=False))
@registry_option
def validate(registry: Path | None, registry_path: Path | None) -> None:
    """Validate every bundle in REGISTRY (files, model, parity certificate on this machine) and
    every latest pointer; exit 1 if any is invalid."""
    from atb_strategies.inference.certificate import CERTIFICATE_FILE

    reg = _registry(registry or registry_path)
    results = reg.validate_all()
    click.echo(f"registry: {reg.root}")
    bad = 0
    uncertified: list[str] = []
    for info, error in results:
        latest = " (latest)" if info.is_latest else ""
        if error is None:
            click.echo(f"OK       {info.key}{latest}")
            if not (info.path / CERTIFICATE_FILE).is_file():
                uncertified.append(info.key)
        else:
            bad += 1
            click.echo(f"INVALID  {plain(info.key)}{latest}\n         {error}")
    from atb_strategies.registry import manage

    if uncertified:
        click.echo(
            f"note: {len(uncertified)} valid bundle(s) carry no parity certificate (outputs not "
            "re-checked on this machine)"
        )
    pointers = manage.latest_problems(reg.layout)
    for symbol, model_type, problem in pointers:
        click.echo(f"BROKEN   {symbol}/{model_type}/latest\n         {problem}")
    click.echo(
        f"{len(results)} bundle(s), {len(results) - bad} valid, {bad} invalid"
        + (f"; {len(pointers)} broken latest pointer(s)" if pointers else "")
    )
    if bad or pointers:
        sys.exit(1)


@models.command("promote")
@click.argument("symbol")
@click.argument("model_type")
@click.argument("version")
@click.option(
    "--allow-timeframe-change",
    is_flag=True,
    help="Move latest to a version of another timeframe than the current latest's.",
)
@registry_option
def promote_cmd(
    symbol: str,
    model_type: str,
    version: str,
    allow_timeframe_change: bool,
    registry_path: Path | None,
) -> None:
    """Point latest of SYMBOL/MODEL_TYPE at VERSION (after validating it); repairs a dangling or
    escaping pointer. Running sessions that follow latest switch to it at their next bar."""
    from atb_strategies.registry import manage

    reg = _registry(registry_path)
    new = reg.select_bundle(symbol, model_type, version=version)  # refuse an unservable version
    try:
        current = reg.select_bundle(symbol, model_type)
    except AtbError:
        current = None  # no usable latest: nothing runs on it
    if current is not None and current.timeframe != new.timeframe and not allow_timeframe_change:
        raise ConfigurationError(
            f"{version} is a {new.timeframe} model and latest ({current.version}) a "
            f"{current.timeframe} one: sessions following latest on {current.timeframe} candles "
            "would refuse it and new ones would not start. Pass --allow-timeframe-change to "
            "move latest anyway."
        )
    previous = manage.promote(reg.layout, symbol, model_type, version)
    click.echo(f"{symbol}/{model_type}: latest {previous or '(none)'} -> {version}")
    gate = _gate(reg.layout.version_dir(symbol, model_type, version))
    if gate is not None and not gate.get("passed", True):
        reasons = gate.get("reasons")
        reasons = [plain(str(r)) for r in reasons] if isinstance(reasons, list) else []
        click.echo(
            f"warning: {version} failed the baseline gate at training: {'; '.join(reasons)}",
            err=True,
        )


def _gate(path: Path) -> dict | None:
    from atb_strategies.bundle.jsonio import read_json

    metrics = path / "metrics.json"
    if not os.path.lexists(metrics):
        return None
    try:
        gate = read_json(metrics, path).get("gate")
    except AtbError:
        return None
    return gate if isinstance(gate, dict) else None


@models.command("rollback")
@click.argument("symbol")
@click.argument("model_type")
@registry_option
def rollback_cmd(symbol: str, model_type: str, registry_path: Path | None) -> None:
    """Point latest of SYMBOL/MODEL_TYPE back at the version it named before."""
    from atb_strategies.registry import manage

    reg = _registry(registry_path)
    current = reg.layout.read_latest(symbol, model_type)
    target = manage.rollback(reg.layout, symbol, model_type)
    click.echo(f"{symbol}/{model_type}: latest {current} -> {target}")


@models.command("prune")
@click.argument("symbol")
@click.argument("model_type")
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    required=True,
    help="Newest versions to keep (latest is kept).",
)
@registry_option
def prune_cmd(symbol: str, model_type: str, keep: int, registry_path: Path | None) -> None:
    """Delete all but the newest KEEP versions; never the one latest names."""
    from atb_strategies.registry import manage

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


def _metric_pct(metrics: dict, *path: str) -> str:
    value: object = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return f"{100 * value:.2f}" if isinstance(value, int | float) else "-"


@models.command("compare")
@click.argument("symbol")
@click.argument("model_type")
@registry_option
def compare_cmd(symbol: str, model_type: str, registry_path: Path | None) -> None:
    """Table of test metrics (metrics.json) across the versions of SYMBOL/MODEL_TYPE; accuracies
    and returns in percent, as ``atb backtest`` prints them."""
    from atb_strategies.bundle.jsonio import read_json

    reg = _registry(registry_path)
    latest = reg.layout.read_latest(symbol, model_type)
    header = (
        "VERSION",
        "LATEST",
        "TEST PERIOD",
        "RMSE",
        "RMSE(last)",
        "MAE",
        "DIR.ACC %",
        "DIR.ACC(drift) %",
        "BT RETURN %",
        "B&H RETURN %",
        "TRADES",
    )
    rows = []
    for version in reg.layout.versions(symbol, model_type):
        folder = reg.layout.version_dir(symbol, model_type, version)
        try:
            m = read_json(folder / "metrics.json", folder)
        except AtbError:
            m = {}
        period = _period(m)
        rows.append(
            (
                version,
                "*" if version == latest else "",
                f"{str(period[0])[:10]}..{str(period[1])[:10]}",
                _metric(m, "test", "model", "rmse"),
                _metric(m, "test", "baseline_last_close", "rmse"),
                _metric(m, "test", "model", "mae"),
                _metric_pct(m, "test", "model", "directional_accuracy"),
                _metric_pct(m, "test", "baseline_drift", "directional_accuracy"),
                _metric_pct(m, "backtest", "total_return"),
                _metric_pct(m, "backtest", "buy_and_hold_return"),
                _metric(m, "backtest", "trades"),
            )
        )
    if not rows:
        click.echo(f"no versions for {symbol}/{model_type}")
        return
    _table(header, rows)
