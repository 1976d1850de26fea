"""``atb live --log-file`` receives everything the terminal shows (issue 22 item 5): the
header, one status line per live bar and the final ``stopped (...)`` line a supervisor reads."""

from __future__ import annotations

import pytest

from tests.integration.test_live_cli import (  # noqa: F401 (fixtures)
    REGISTRY,
    exchange_config,
    hourly,
    run_atb,
    server,
    status_lines,
)

pytestmark = pytest.mark.slow  # runs a live session


def test_atb_live_log_file_has_every_terminal_line_once(server, tmp_path) -> None:  # noqa: F811
    config = exchange_config(server, tmp_path / "exchange.json", with_keys=False)
    log_file = tmp_path / "live.log"
    args = ["--paper", "--max-bars", "3", "--backfill-bars", "300", "--registry", str(REGISTRY)]

    done = run_atb(*args, "--log-file", str(log_file), cwd=tmp_path, config=config)

    assert done.returncode == 0, done.stderr[-3000:]
    shown = done.stdout.strip().splitlines()
    assert len(status_lines(done.stdout)) == 3
    assert shown[-1].startswith("stopped (3 live bar(s) done (max bars))")
    logged = [line.split(": ", 1)[-1] for line in log_file.read_text().splitlines()]
    terminal = [line for line in logged if line in shown]
    assert terminal == shown  # every line, in order
    assert "stopped (" not in done.stderr  # not shown twice (once by the log's own handler)
    assert sum("backfilled 300 closed bar(s)" in line for line in logged) == 1  # the log's own
