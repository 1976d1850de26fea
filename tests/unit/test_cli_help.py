"""Every option of every ``atb`` command says what it does (issue 22 item 5)."""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

from atb_strategies.cli.main import cli
from atb_strategies.strategies.registry import get_strategy


def _commands(command: click.Command, path: str = "atb") -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                yield from _commands(sub, f"{path} {name}")


def test_the_walk_reaches_every_command_family() -> None:
    paths = {path for path, _ in _commands(cli)}
    for expected in ("atb backtest", "atb sweep", "atb train model", "atb train walk-forward"):
        assert expected in paths
    assert any(p.startswith("atb live ") for p in paths)
    assert any(p.startswith("atb models ") for p in paths)


def test_every_option_of_every_command_has_help_text() -> None:
    missing = [
        f"{path} {param.opts[0]}"
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert missing == [], "options without help=: " + ", ".join(missing)


def test_grid_help_lists_the_strategy_parameters() -> None:
    result = CliRunner().invoke(cli, ["sweep", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in ("long_threshold", "stop_loss", "sequence_length"):
        assert name in get_strategy("ml_basic").params._getkeys()
        assert name in text
