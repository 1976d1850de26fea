"""``atb`` entry point: command groups and the error policy.

An ``AtbError`` prints its message and exits with status 1, without a traceback unless ``-v``
is given. Every command takes ``--registry PATH`` where a registry is involved.
"""

from __future__ import annotations

import logging
import sys

import click

from atb_strategies.cli.backtest import backtest
from atb_strategies.cli.data import data
from atb_strategies.cli.live import live
from atb_strategies.cli.models import models
from atb_strategies.cli.train import train
from atb_strategies.exceptions import AtbError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except AtbError as e:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"error: {type(e).__name__}: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("-v", "--verbose", is_flag=True, help="Log more and show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """atb-strategies: machine-learning strategies for backtrader."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


cli.add_command(models)
cli.add_command(train)
cli.add_command(backtest)
cli.add_command(data)
cli.add_command(live)


def main() -> None:
    """Console-script entry point."""
    cli(obj={})


if __name__ == "__main__":  # pragma: no cover
    main()
