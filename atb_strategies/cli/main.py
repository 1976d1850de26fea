"""``atb`` entry point: command groups and the error policy.

Every failure ends with exit status 1 and ONE line on stderr, ``error: ...``, in the CLI's own
spelling: the library names Python parameters (``gap_policy='warn'``), and ``_in_cli_terms``
rewrites those that are options of ``atb`` into their flags (``--gap-policy warn``). Bad option
values (click's usage errors) get the same single line instead of click's usage block. An
unexpected exception prints its type and message and says to run with ``-v``; only ``-v``
shows tracebacks. Ctrl-C exits 130. Open progress bars are closed first, so the error starts
its own line. Every log handler the CLI installs masks credentials (``exchange.redaction``), and
so do the tracebacks it prints (``-v``) or a thread prints (``install_excepthooks``).
"""

from __future__ import annotations

import logging
import re
import sys

import click

from atb_strategies.cli.backtest import backtest
from atb_strategies.cli.dashboard import dashboard
from atb_strategies.cli.data import data
from atb_strategies.cli.live import live
from atb_strategies.cli.models import models
from atb_strategies.cli.sweep import sweep
from atb_strategies.cli.train import train
from atb_strategies.exceptions import AtbError
from atb_strategies.exchange.redaction import install_excepthooks, install_redaction, redact

_PARAM = re.compile(r"\b([a-z][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|True\b|[A-Za-z0-9_.:/-]+)")
_PARAMETER_OF = re.compile(r"The '([a-z][a-z0-9_]*)' parameter of [\w.]+")


def _flags(command: click.Command, found: dict[str, tuple[str, bool]] | None = None) -> dict:
    """Python parameter name -> (long flag, is a flag) over every ``atb`` command."""
    found = {} if found is None else found
    for param in command.params:
        if isinstance(param, click.Option):
            longs = [o for o in param.opts if o.startswith("--")]
            if longs and param.name:
                found.setdefault(param.name, (longs[0], param.is_flag))
    for sub in getattr(command, "commands", {}).values():
        _flags(sub, found)
    return found


def _in_cli_terms(message: str) -> str:
    """``gap_policy='warn'`` -> ``--gap-policy warn``; ``synthetic=True`` -> ``--synthetic``;
    ``The 'cash' parameter of X`` -> ``--cash``; names that are no ``atb`` option stay."""
    flags = _flags(cli)
    flags.setdefault("start_date", ("--start-date", False))
    flags.setdefault("end_date", ("--end-date", False))
    flags.setdefault("version", ("--model-version", False))

    def param(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if name not in flags:
            return m.group(0)
        flag, is_flag = flags[name]
        if is_flag:
            return flag if value == "True" else m.group(0)
        return f"{flag} {value.strip(chr(39) + chr(34))}"

    message = _PARAM.sub(param, message)
    return _PARAMETER_OF.sub(
        lambda m: flags[m.group(1)][0] if m.group(1) in flags else m.group(0), message
    )


def _close_progress_bars() -> None:
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", [])):
            bar.close()


def _fail(message: str, code: int = 1) -> None:
    _close_progress_bars()
    line = " ".join(redact(message).split())  # one line, whatever the message holds
    click.echo(f"error: {line}", err=True)
    sys.exit(code)


class _AtbGroup(click.Group):
    """The ``atb`` group: runs a command under the error policy of the module docstring."""

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        head = args[: args.index("--")] if "--" in args else args
        verbose = bool({"-v", "--verbose"} & set(head))
        install_excepthooks()  # a traceback printed with -v (or by a thread) is masked too
        try:
            return super().main(args, prog_name or "atb", standalone_mode=False, **extra)
        except click.exceptions.Exit as e:  # --help, --version
            sys.exit(e.exit_code)
        except click.ClickException as e:
            hint = ""
            if isinstance(e, click.UsageError) and e.ctx is not None:
                hint = f" (see '{e.ctx.command_path} --help')"
            _fail(e.format_message() + hint)
        except (click.exceptions.Abort, KeyboardInterrupt):
            _fail("interrupted", 130)
        except AtbError as e:
            if verbose:
                raise
            _fail(f"{type(e).__name__}: {_in_cli_terms(str(e))}", getattr(e, "exit_code", 1))
        except Exception as e:
            if verbose:
                raise
            _fail(
                f"unexpected {type(e).__name__}: {e}. This is a bug in atb_strategies or a case "
                "it does not handle; run again with 'atb -v ...' for the traceback."
            )


@click.group(cls=_AtbGroup)
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
    for handler in logging.getLogger().handlers:
        install_redaction(handler)


cli.add_command(models)
cli.add_command(train)
cli.add_command(backtest)
cli.add_command(sweep)
cli.add_command(data)
cli.add_command(live)
cli.add_command(dashboard)


def main() -> None:
    """Console-script entry point."""
    cli.main(obj={})


if __name__ == "__main__":  # pragma: no cover
    main()
