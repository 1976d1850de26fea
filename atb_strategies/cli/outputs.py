"""Where ``atb backtest``, ``atb sweep`` and ``atb train walk-forward`` write: runs never
overwrite each other.

Without ``--out`` every run gets its own folder, ``out/<command>_<...>/<UTC stamp>/`` (e.g.
``out/walkforward_BTCUSDT_basic/20250120T093000Z``), and ``out/<command>_<...>/latest`` is a
relative symlink to the newest run, switched atomically (a new link renamed over the old one)
when the run's folder is made. An explicit ``--out DIR`` that exists and is not empty is
refused, unless ``--force`` (which first deletes what that command writes there, e.g. a sweep's
``cells/``; other files are left) or, for a sweep, ``--resume`` (which continues the sweep
there). ``atb sweep --resume`` without ``--out`` continues the run ``latest`` points to.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import click

#: The folder ``--out`` defaults live under (relative to the working directory).
OUT_ROOT = Path("out")
#: The name of the symlink to the newest run of a command.
LATEST = "latest"
#: What each command writes into its folder; ``--force`` deletes these, and only these.
WRITES: dict[str, tuple[str, ...]] = {
    "backtest": (
        "chart.png",
        "trades.csv",
        "trades.json",
        "orders.csv",
        "summary.json",
        "report.html",
    ),
    "sweep": ("cells", "results.csv", "heatmap.png", "sweep.json"),
    "walk-forward": ("folds.csv", "oos_predictions.parquet", "summary.json", "chart.png"),
}


def force_option(command: str) -> object:
    """The ``--force`` option of ``command`` (one of ``WRITES``)."""
    return click.option(
        "--force",
        is_flag=True,
        help=f"Write into an existing, non-empty --out DIR: first delete the files {command} "
        f"writes there ({', '.join(WRITES[command])}); other files stay.",
    )


def stamp(now: datetime | None = None) -> str:
    """A run's folder name: its UTC start time, ``20250120T093000Z`` (sorts by time)."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def output_dir(
    out: Path | None,
    default: str,
    command: str,
    *,
    force: bool = False,
    resume: bool = False,
    root: Path = OUT_ROOT,
) -> Path:
    """The folder a run writes to, created (see the module docstring).

    Parameters
    ----------
    out : Path or None
        ``--out`` as given; None for a new stamped folder under ``root / default``.
    default : str
        The run family's folder name, e.g. ``backtest_ml_basic_BTCUSDT``.
    command : str
        A key of ``WRITES``, for ``--force`` and the messages.
    force, resume : bool
        ``--force``; ``--resume`` (sweeps): keep a non-empty ``out``, or without ``out`` reuse
        the run ``latest`` points to.

    Raises
    ------
    click.UsageError
        ``out`` exists and is not a folder, or is not empty without ``--force``/``--resume``;
        ``--force`` with ``--resume``.
    """
    check_out(out, command, force=force, resume=resume, root=root)
    if out is None:
        family = root / default
        if resume:
            last = family / LATEST
            if last.is_dir():
                return family / os.readlink(last)
        return _new_run(family)
    if out.is_dir() and any(out.iterdir()) and not resume:
        clear(out, WRITES[command])
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_out(
    out: Path | None,
    command: str,
    *,
    force: bool = False,
    resume: bool = False,
    root: Path = OUT_ROOT,
) -> None:
    """Refuse what ``output_dir`` would refuse, before any work and without writing."""
    if force and resume:
        raise click.UsageError(
            "--force deletes the finished cells that --resume would keep; pass one of them."
        )
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"{out} exists and is not a folder.", param_hint="--out")
    if out.is_dir() and any(out.iterdir()) and not (resume or force):
        hint = " or --resume to continue the sweep there" if command == "sweep" else ""
        raise click.BadParameter(
            f"{out} exists and is not empty; pass --force to replace what {command} wrote "
            f"there{hint}, or leave out --out for a new folder under {root}/.",
            param_hint="--out",
        )


def clear(folder: Path, names: Iterable[str]) -> None:
    """Delete ``names`` (files or folders) from ``folder``; nothing else."""
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _new_run(family: Path) -> Path:
    """Make ``family/<stamp>`` (``<stamp>-2``... when two runs start in the same second) and
    point ``family/latest`` at it."""
    family.mkdir(parents=True, exist_ok=True)
    base = stamp()
    for n in range(1, 1000):
        run = family / (base if n == 1 else f"{base}-{n}")
        try:
            run.mkdir()
        except FileExistsError:
            continue
        point_latest(family, run.name)
        return run
    raise click.ClickException(f"{family}: could not make a new run folder for {base}.")


def point_latest(family: Path, name: str) -> Path:
    """Switch ``family/latest`` to the relative target ``name`` atomically: a new symlink is
    made beside it and renamed over it, so readers see the old run or the new one."""
    link = family / LATEST
    tmp = family / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(name, target_is_directory=True)
    os.replace(tmp, link)
    return link


def training_registry(registry_path: Path | None) -> tuple[Path, str | None]:
    """Where ``atb train model`` and ``atb train walk-forward`` register new versions, and a
    note to print when the user named none.

    ``--registry``, ``$ATB_MODEL_REGISTRY_PATH`` or the config file's ``model_registry_path``
    win, as everywhere. Named by none of them, training never writes into the models shipped
    beside the package: it uses ``./models`` of the working directory (made on first
    registration), and refuses when that folder *is* the shipped one (run from a source
    checkout), naming ``--registry``.

    Raises
    ------
    click.BadParameter
        The working directory's ``./models`` is the shipped registry.
    """
    from atb_strategies.cli.options import load_config
    from atb_strategies.config import SHIPPED_MODELS

    configured = load_config(registry_path).model_registry_path
    if registry_path is not None or os.environ.get("ATB_MODEL_REGISTRY_PATH") or _in_config():
        return Path(configured), None
    local = Path("models")
    if local.resolve() == SHIPPED_MODELS.resolve():
        raise click.BadParameter(
            f"without --registry, training would write into the models shipped with "
            f"atb-strategies ({SHIPPED_MODELS}); pass --registry DIR for your models "
            "(--registry models to add to the shipped ones on purpose) or set "
            "ATB_MODEL_REGISTRY_PATH.",
            param_hint="--registry",
        )
    return local.resolve(), (
        f"registry: {local.resolve()} (./models here; choose another with --registry or "
        "ATB_MODEL_REGISTRY_PATH)"
    )


def _in_config() -> bool:
    """Whether the config file in use (``$ATB_CONFIG_FILE`` or ``./atb.toml``) names the
    registry."""
    import tomllib

    name = os.environ.get("ATB_CONFIG_FILE") or ("atb.toml" if Path("atb.toml").is_file() else "")
    if not name:
        return False
    try:
        table = tomllib.loads(Path(name).read_text(encoding="utf-8")).get("prediction", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False  # load_config has already said what is wrong with it
    return isinstance(table, dict) and "model_registry_path" in table
