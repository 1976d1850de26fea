"""A live journal fails closed: deleted, emptied, replaced or damaged journals are refused.

A kill-switch trip, the day's starting value and the order history live in the journal; a
journal that silently became a new one would trade again after a trip. The journal's marker
(``journal.sqlite.marker``) remembers it existed; ``new_journal=True`` / ``--new-journal``
starts a new one on purpose (the trip carries over); damaged records are one ``JournalError``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from atb_strategies.cli.main import cli
from atb_strategies.exceptions import JournalError
from atb_strategies.live.journal import Journal
from atb_strategies.live.journal_state import marker_path
from atb_strategies.live.risk import KillSwitch, RiskGuard
from tests.conftest import loopback_exchange
from tests.integration.test_live_cli import (
    HOUR,
    NOW_ROW,
    exchange_config,
    run_atb,
)

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "models"
DAY = "2026-12-07"


def tripped_journal(path: Path) -> Path:
    """A journal whose kill switch tripped, with a day's starting value and an order."""
    book = Journal(path)
    try:
        book.day_start_value(DAY, 10_000.0)
        book.record_sending("atbx1", 1, "BTC/USDT", "buy", "market", 0.01, None, {})
        book.record_kill_switch("drawdown 20 % beyond 15 %", value=8_000.0, peak=10_000.0)
    finally:
        book.close()
    return path


def open_trip(path: Path, **kwargs: Any) -> dict[str, Any] | None:
    book = Journal(path, **kwargs)
    try:
        return book.kill_switch()
    finally:
        book.close()


def set_meta(path: Path, key: str, raw: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, raw))
        db.commit()
    finally:
        db.close()


# ------------------------------------------------------------------ deleted or emptied


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_journal_deleted_or_emptied_after_a_trip_is_refused_and_left_as_is(tmp_path, how):
    path = tripped_journal(tmp_path / "journal.sqlite")
    if how == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"")  # : > journal.sqlite
    with pytest.raises(JournalError) as info:
        Journal(path)
    message = str(info.value)
    assert f"journal {path} was {how}" in message and str(marker_path(path)) in message
    assert "kill-switch trip at" in message and "drawdown 20 %" in message
    assert "new_journal=True" in message and "clear_kill_switch=True" in message
    assert "\n" not in message
    # nothing was created or changed in its place
    assert (not path.exists()) if how == "deleted" else path.stat().st_size == 0


def test_journal_deleted_without_a_trip_is_refused_too(tmp_path):
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    path.unlink()
    with pytest.raises(JournalError, match="was deleted") as info:
        Journal(path)
    assert "kill-switch trip" not in str(info.value)


def test_new_journal_after_deletion_starts_anew_and_keeps_the_trip_and_day_start(tmp_path):
    path = tripped_journal(tmp_path / "journal.sqlite")
    old = Journal(path)
    old_id = old.journal_id
    old.close()
    path.unlink()
    book = Journal(path, new_journal=True)
    try:
        assert book.journal_id != old_id
        assert book.orders() == []  # the history is gone: that was the user's decision
        trip = book.kill_switch()
        assert trip is not None and trip["reason"] == "drawdown 20 % beyond 15 %"
        assert book.day_start_value(DAY, 1.0) == 10_000.0  # not reset by the restart
    finally:
        book.close()
    assert open_trip(path) is not None  # a plain reopen is fine now, and still tripped


def test_new_journal_where_the_journal_exists_is_refused_and_changes_nothing(tmp_path):
    path = tripped_journal(tmp_path / "journal.sqlite")
    before = path.read_bytes()
    with pytest.raises(JournalError, match="exists, and new_journal=True only starts"):
        Journal(path, new_journal=True)
    assert path.read_bytes() == before
    assert open_trip(path) is not None


def test_new_journal_where_the_old_write_ahead_log_remains_is_refused(tmp_path):
    path = tmp_path / "journal.sqlite"
    wal = tmp_path / "journal.sqlite-wal"
    book = Journal(path)
    book.record_kill_switch("drawdown", value=1.0)
    shutil.copy(wal, tmp_path / "wal.copy")  # what a crashed session leaves behind
    book.close()
    path.unlink()
    shutil.copy(tmp_path / "wal.copy", wal)
    with pytest.raises(JournalError, match="its write-ahead log .* remains"):
        Journal(path, new_journal=True)
    assert not path.exists()


def test_journal_moved_on_purpose_to_a_new_path_is_a_new_journal(tmp_path):
    tripped_journal(tmp_path / "journal.sqlite")
    assert open_trip(tmp_path / "other.sqlite") is None  # --journal NEW: a new journal


def test_journal_restored_from_a_copy_older_than_the_trip_is_still_tripped(tmp_path):
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    shutil.copy(path, tmp_path / "backup.sqlite")
    book = Journal(path)
    book.record_kill_switch("daily loss 6 % beyond 5 %", value=9_400.0)
    book.close()
    shutil.copy(tmp_path / "backup.sqlite", path)  # the backup predates the trip
    trip = open_trip(path)
    assert trip is not None and trip["reason"] == "daily loss 6 % beyond 5 %"
    book = Journal(path)
    book.clear_kill_switch()  # clears both copies
    book.close()
    assert open_trip(path) is None


def test_journal_replaced_by_another_journal_is_refused(tmp_path):
    path = tripped_journal(tmp_path / "journal.sqlite")
    Journal(tmp_path / "elsewhere.sqlite").close()
    shutil.copy(tmp_path / "elsewhere.sqlite", path)
    with pytest.raises(JournalError, match="is not the journal its marker"):
        Journal(path)


def test_journal_whose_marker_was_deleted_opens_and_writes_it_again(tmp_path):
    path = tripped_journal(tmp_path / "journal.sqlite")
    marker_path(path).unlink()
    assert open_trip(path) is not None
    assert marker_path(path).exists()
    path.unlink()  # and the rewritten marker protects it again
    with pytest.raises(JournalError, match="was deleted"):
        Journal(path)


@pytest.mark.parametrize("content", ["{bad", '{"format": 1}', "[]"])
def test_journal_with_damaged_marker_is_refused_naming_the_marker(tmp_path, content):
    path = tripped_journal(tmp_path / "journal.sqlite")
    marker_path(path).write_text(content)
    with pytest.raises(JournalError) as info:
        Journal(path)
    assert f"the journal marker {marker_path(path)} is damaged" in str(info.value)


def test_journal_written_before_markers_existed_gets_one(tmp_path):
    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('kill_switch', ?)", ('{"time": "t", "reason": "r"}',))
    db.commit()
    db.close()
    assert open_trip(path) == {"time": "t", "reason": "r"}
    assert marker_path(path).exists()


# ------------------------------------------------------------------ damaged journals


@pytest.mark.parametrize("raw", ["{bad", '"tripped"', "{}", "false", "null", '{"time": 1}'])
def test_journal_with_damaged_kill_switch_record_is_refused(tmp_path, raw):
    path = tripped_journal(tmp_path / "journal.sqlite")
    set_meta(path, "kill_switch", raw)
    with pytest.raises(JournalError) as info:
        Journal(path)
    message = str(info.value)
    assert message.startswith(f"journal {path}: its kill_switch record is ")
    assert "restore it from a backup" in message and "\n" not in message


@pytest.mark.parametrize("raw", ['"abc"', "-5", "0", "true", "null", "{bad"])
def test_journal_with_damaged_day_start_record_is_refused(tmp_path, raw):
    path = tripped_journal(tmp_path / "journal.sqlite")
    set_meta(path, f"day_start:{DAY}", raw)
    with pytest.raises(JournalError, match=f"its day_start:{DAY} record is "):
        Journal(path)


@pytest.mark.parametrize(
    "content", [b"\x00\xffgarbage" * 600, b"this is not a journal\n"], ids=["bytes", "text"]
)
def test_journal_that_is_not_sqlite_is_refused_and_left_as_is(tmp_path, content):
    path = tmp_path / "journal.sqlite"
    path.write_bytes(content)
    with pytest.raises(JournalError, match="is not a readable SQLite journal"):
        Journal(path)
    assert path.read_bytes() == content


def test_journal_with_a_foreign_orders_table_is_refused(tmp_path):
    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="table orders lacks column"):
        Journal(path)
    db = sqlite3.connect(path)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()
    assert tables == {"orders"}  # left as it was


def test_risk_guard_on_a_new_journal_in_place_of_a_tripped_one_starts_killed(tmp_path):
    path = tripped_journal(tmp_path / "journal.sqlite")
    path.unlink()
    book = Journal(path, new_journal=True)
    try:
        guard = RiskGuard(KillSwitch(), journal=book)
        assert guard.killed
        assert "earlier session" in (guard.refusal(0.01, 100.0, reduces=False) or "")
    finally:
        book.close()


# ------------------------------------------------------------------ atb live


def invoke(journal: Path, *flags: str) -> Any:
    args = ["live", "ml_basic", "--live", "--i-understand-the-risks", "--journal", str(journal)]
    args += ["--registry", str(REGISTRY), "--log-file", str(journal.parent / "live.log")]
    return CliRunner().invoke(cli, [*args, *flags])


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda p: p.unlink(), "was deleted"),
        (lambda p: p.write_bytes(b""), "was emptied"),
        (lambda p: set_meta(p, "kill_switch", "null"), "its kill_switch record is null"),
        (lambda p: set_meta(p, "kill_switch", "{bad"), "its kill_switch record is not JSON"),
        (lambda p: set_meta(p, f"day_start:{DAY}", '"abc"'), 'record is "abc"'),
        (lambda p: p.write_bytes(b"garbage" * 100), "is not a readable SQLite journal"),
    ],
    ids=["deleted", "emptied", "null-trip", "bad-json", "day-start", "garbage"],
)
def test_atb_live_with_an_untrustworthy_journal_exits_1_with_one_line(tmp_path, damage, words):
    journal = tripped_journal(tmp_path / "journal.sqlite")
    damage(journal)
    result = invoke(journal, "--clear-kill-switch")  # clearing the trip does not fix this
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: JournalError: journal ")
    assert str(journal) in lines[0] and words in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "live.log").exists()  # refused before the session began


def test_atb_live_says_the_cli_flags_to_start_anew_and_to_clear(tmp_path):
    journal = tripped_journal(tmp_path / "journal.sqlite")
    journal.unlink()
    result = invoke(journal)
    assert result.exit_code == 1
    assert "--new-journal" in result.stderr and "--clear-kill-switch" in result.stderr
    assert "new_journal=True" not in result.stderr
    again = invoke(journal, "--new-journal")  # a new journal; the trip still refuses
    assert again.exit_code == 3, again.output
    assert "kill switch tripped at" in again.stderr
    assert journal.exists()
    twice = invoke(journal, "--new-journal")  # a one-off: it refuses an existing journal
    assert twice.exit_code == 1 and "exists, and --new-journal only starts" in twice.stderr


@pytest.mark.slow
def test_atb_live_trip_then_emptied_journal_never_trades_again_until_cleared(hourly, tmp_path):
    """The issue's sequence with real sessions: trip (exit 3), `: > journal`, restart."""
    crashed = hourly.copy()
    crashed.iloc[NOW_ROW + 2 :, :4] *= 0.7
    crashed.iloc[NOW_ROW + 4 :, :4] *= 0.7  # held through a second fall (see test_live_cli)
    start = int(crashed.index[NOW_ROW].value // 1_000_000) + HOUR // 2
    journal = tmp_path / "journal.sqlite"
    args = ["--live", "--i-understand-the-risks", "--max-bars", "6", "--backfill-bars", "300"]
    args += ["--long-threshold", "-1", "--journal", str(journal), "--max-daily-loss", "off"]
    args += ["--max-drawdown", "0.0001", "--registry", str(REGISTRY)]  # any loss trips
    args += ["--log-file", str(tmp_path / "live.log")]
    balances = {"USDT": 10_000, "BTC": 0}
    with loopback_exchange(crashed, start_time_ms=start, lockstep=True, balances=balances) as srv:
        config = exchange_config(srv, tmp_path / "exchange.json")
        done = run_atb(*args, cwd=tmp_path, config=config)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-2000:]

    journal.write_bytes(b"")  # : > journal.sqlite
    with loopback_exchange(hourly, start_time_ms=start, lockstep=True, balances=balances) as srv:
        config = exchange_config(srv, tmp_path / "exchange.json")
        emptied = run_atb(*args, cwd=tmp_path, config=config)
        journal.unlink()
        deleted = run_atb(*args, cwd=tmp_path, config=config)
        anew = run_atb(*args, "--new-journal", cwd=tmp_path, config=config)
        assert srv.requests == []  # every restart refused before connecting
    for refused, how in ((emptied, "emptied"), (deleted, "deleted")):
        assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
        assert refused.stderr.strip().count("\n") == 0
        assert f"was {how}" in refused.stderr and "kill-switch trip at" in refused.stderr
    assert anew.returncode == 3 and "kill switch tripped at" in anew.stderr


@pytest.fixture(scope="module")
def hourly() -> Any:
    from atb_strategies.data.synthetic import generate_ohlcv

    return generate_ohlcv(420, seed=3)


def test_atb_live_refuses_a_deleted_journal_before_loading_the_heavy_libraries(tmp_path):
    """The refusal is quick: checked before backtrader, ccxt, pandas or onnxruntime load."""
    journal = tripped_journal(tmp_path / "journal.sqlite")
    journal.unlink()
    code = (
        "import contextlib, io, json, sys\n"
        "from atb_strategies.cli.main import cli\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        "    try:\n"
        f"        cli.main(['live', 'ml_basic', '--live', '--i-understand-the-risks', "
        f"'--journal', {str(journal)!r}])\n"
        "    except SystemExit as e:\n"
        "        code = e.code\n"
        "heavy = ('pandas', 'ccxt', 'backtrader', 'onnxruntime')\n"
        "print(json.dumps([code, err.getvalue(), [m for m in heavy if m in sys.modules]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    exit_code, stderr, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    assert exit_code == 1 and "was deleted" in stderr
    assert heavy == []
