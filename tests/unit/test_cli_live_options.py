"""``atb live`` refuses option combinations that would do nothing, before connecting."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from atb_strategies.cli.main import cli


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--drift-window", "100"], "add --drift-action"),
        (["--drift-threshold", "0.3"], "add --drift-action"),
        (["--age-action", "flatten"], "add --max-model-age"),
        (["--shadow-csv", "s.csv"], "add --shadow VERSION"),
        (["--sentiment", "s.csv"], "reads no sentiment"),
        (["--max-sentiment-age", "12h"], "reads no sentiment"),
        (["--shadow", "latest"], "--shadow takes pinned versions"),
        (["--shadow", "v9"], "has no version 'v9'"),
    ],
)
def test_atb_live_with_an_option_that_would_do_nothing_exits_1_before_connecting(
    args, words, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a log file would land here if it got that far
    result = CliRunner().invoke(cli, ["live", "ml_basic", "--paper", *args])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_atb_live_ml_sentiment_without_a_source_says_which_flags():
    result = CliRunner().invoke(cli, ["live", "ml_sentiment", "--paper"])
    assert result.exit_code == 1
    assert "--fear-greed-url" in result.stderr and "--synthetic-sentiment" in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-model-age", "abc"], "--max-model-age must be a positive duration"),
        (["--drift-window", "1", "--drift-action", "warn"], "--drift-window"),
        (["--drift-action", "panic"], "--drift-action"),
    ],
)
def test_atb_backtest_with_a_bad_guard_value_exits_1_with_one_line(args, words, tmp_path):
    command = ["backtest", "ml_basic", "--synthetic", "--bars", "400", "--no-progress"]
    result = CliRunner().invoke(cli, [*command, "--out", str(tmp_path), *args])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_atb_live_report_with_a_bad_timeframe_or_garbage_exits_1_with_one_line(tmp_path):
    (tmp_path / "shadow.csv").write_text("this is not,a shadow file\n1,2\n")
    garbage = CliRunner().invoke(cli, ["live", "report", str(tmp_path)])
    assert garbage.exit_code == 1 and "is not a shadow.csv" in garbage.stderr
    assert len(garbage.stderr.strip().splitlines()) == 1
    bad_tf = CliRunner().invoke(cli, ["live", "report", str(tmp_path), "--timeframe", "7x"])
    assert bad_tf.exit_code == 1 and bad_tf.stderr.startswith("error: ")
    assert len(bad_tf.stderr.strip().splitlines()) == 1
