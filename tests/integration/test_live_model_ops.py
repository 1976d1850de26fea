"""Operating models in a running live session, against the loopback exchange.

Real ``ccxt.binance`` against ``BinanceServer`` on 127.0.0.1, the real live broker with its
journal, the shipped bundles copied into a temporary registry. The market clock runs four hours
per second once the feed is live; ``latest`` is moved with ``atb models promote``'s library call
from the status-line callback, i.e. while the session runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.live.journal import Journal
from atb_strategies.live.runner import build_live_cerebro, run_until_stopped
from atb_strategies.live.store import CcxtStore
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.manage import promote
from atb_strategies.registry.shared import clear_shared_registries
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.testing.binance_server import BinanceServer
from tests.conftest import loopback_exchange

REPO = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
NOW_ROW = 330
V1, V2 = "2026-11-26_1h_v1", "2026-11-29_1h_v2"
FEED_OPTIONS = {"poll_grace": 0.0, "qcheck": 0.05, "clock_check": 0.05}

pytestmark = pytest.mark.slow  # runs live sessions


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate_ohlcv(420, seed=3)


@pytest.fixture
def server(hourly: pd.DataFrame) -> Iterator[BinanceServer]:
    start = int(hourly.index[NOW_ROW].value // 1_000_000) + HOUR // 2
    balances = {"USDT": 10_000, "BTC": 0}
    with loopback_exchange(hourly, start_time_ms=start, lockstep=True, balances=balances) as srv:
        yield srv


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "models"
    shutil.copytree(REPO / "models", root, symlinks=True)
    promote(RegistryLayout(root), "BTCUSDT", "basic", V1)
    clear_shared_registries()
    yield root
    clear_shared_registries()


def live_session(
    server: BinanceServer,
    registry: Path,
    journal: Path,
    on_line: Any,
    max_bars: int,
    **params: Any,
) -> tuple[Any, list[str]]:
    """A real-orders session of ``max_bars`` live bars; ``on_line(lines)`` runs per echo."""
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        on_line(lines)

    store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
    cerebro = build_live_cerebro(
        MlBasic,
        store=store,
        symbol="BTCUSDT",
        timeframe="1h",
        paper=False,
        cash=10_000.0,
        journal=journal,
        backfill_bars=300,
        max_bars=max_bars,
        kill_switch=None,
        on_stop="cancel",
        echo=echo,
        feed_options=FEED_OPTIONS,
        registry=str(registry),
        **params,
    )

    return run_until_stopped(cerebro)[0], lines


def status_keys_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " close=" in line]


def status_keys(lines: list[str]) -> list[str]:
    return [line.rsplit("model=", 1)[1] for line in lines if " close=" in line]


# every bar: enter long whatever the model says; tight legs close the position within a bar or
# two, so new entries (new orders) keep coming after the switch
TRADE_EVERY_BAR = {"long_threshold": -1.0, "stop_loss": 0.0005, "take_profit": 0.0005}


def test_a_promotion_mid_session_switches_the_model_at_the_next_bar_boundary(
    server, registry, tmp_path
):
    journal = tmp_path / "journal.sqlite"

    def promote_after_three(lines: list[str]) -> None:
        if len(status_keys(lines)) == 3 and not any("switched" in x for x in lines):
            promote(RegistryLayout(registry), "BTCUSDT", "basic", V2)

    strat, lines = live_session(
        server, registry, journal, promote_after_three, max_bars=8, **TRADE_EVERY_BAR
    )
    keys = status_keys(lines)
    assert keys[:3] == [f"BTCUSDT/basic@{V1}"] * 3
    assert keys[3:] == [f"BTCUSDT/basic@{V2}"] * (len(keys) - 3)
    (announce,) = [x for x in lines if "model switched" in x]
    assert f"BTCUSDT/basic@{V1} -> BTCUSDT/basic@{V2}" in announce
    assert lines.index(announce) < next(i for i, x in enumerate(lines) if V2 in x and "close=" in x)
    # the audit row
    book = Journal(journal)
    try:
        (row,) = book.model_events()
        orders = book.orders()
    finally:
        book.close()
    assert (row["kind"], row["mode"], row["from_key"], row["to_key"]) == (
        "switch",
        "live",
        f"BTCUSDT/basic@{V1}",
        f"BTCUSDT/basic@{V2}",
    )
    # orders decided after the switch carry the new key, those before the old one
    switch_bar = pd.Timestamp(row["bar"])
    decided = [(pd.Timestamp(json.loads(o["info"])["bar"]), o) for o in orders]
    after = [json.loads(o["info"])["model_key"] for t, o in decided if t >= switch_bar]
    before = [json.loads(o["info"])["model_key"] for t, o in decided if t < switch_bar]
    assert before and set(before) == {f"BTCUSDT/basic@{V1}"}
    assert after and set(after) == {f"BTCUSDT/basic@{V2}"}
    assert strat.decisions[-1]["model_key"] == f"BTCUSDT/basic@{V2}"


def test_a_corrupt_promoted_bundle_is_refused_and_the_old_one_keeps_trading(
    server, registry, tmp_path
):
    journal = tmp_path / "journal.sqlite"
    bad = registry / "BTCUSDT" / "basic" / V2 / "model.onnx"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated by a failed copy

    def promote_after_two(lines: list[str]) -> None:
        if len(status_keys(lines)) == 2:
            promote(RegistryLayout(registry), "BTCUSDT", "basic", V2)

    _, lines = live_session(
        server, registry, journal, promote_after_two, max_bars=6, **TRADE_EVERY_BAR
    )
    assert set(status_keys(lines)) == {f"BTCUSDT/basic@{V1}"}
    assert len(status_keys(lines)) == 6  # it kept trading every bar
    (refusal,) = [x for x in lines if "refused" in x]
    assert f"model BTCUSDT/basic@{V2} refused, BTCUSDT/basic@{V1} keeps serving" in refusal
    book = Journal(journal)
    try:
        (row,) = book.model_events()
        orders = book.orders()
    finally:
        book.close()
    assert row["kind"] == "refused" and "sha256" in row["reason"]
    refused_at = pd.Timestamp(row["bar"])
    assert any(pd.Timestamp(json.loads(o["info"])["bar"]) >= refused_at for o in orders)
    assert {json.loads(o["info"])["model_key"] for o in orders} == {f"BTCUSDT/basic@{V1}"}


def test_shadows_send_no_order_while_their_virtual_books_update(
    server, registry, make_bundle, tmp_path
):
    challenger = "2026-12-01_1h_v3"  # another model: other predictions, other trades
    make_bundle(root=registry, version=challenger, seed=4, promote=False)
    journal = tmp_path / "journal.sqlite"
    strat, _ = live_session(
        server,
        registry,
        journal,
        lambda lines: None,
        max_bars=8,
        shadows=[challenger, f"basic@{V2}"],
        **TRADE_EVERY_BAR,
    )
    csv_path = tmp_path / "shadow.csv"  # beside the journal
    rows = pd.read_csv(csv_path)
    assert len(rows) == 8 * 3  # a row per live bar and model
    assert list(rows.groupby("role")["model_key"].nunique().items()) == [
        ("champion", 1),
        ("shadow", 2),
    ]
    mine = rows[rows.model_key == f"BTCUSDT/basic@{challenger}"]
    assert (mine["action"].str.startswith("enter")).any() and mine["position"].abs().max() > 0
    assert mine["equity"].nunique() > 1  # the virtual book moved
    # only the trading model's orders reached the exchange, each once
    book = Journal(journal)
    try:
        orders = book.orders()
    finally:
        book.close()
    assert orders and {json.loads(o["info"])["model_key"] for o in orders} == {
        f"BTCUSDT/basic@{V1}"
    }
    placed = [r for r in server.requests if r.path == "/api/v3/order" and r.method == "POST"]
    assert len(placed) == len(orders)
    assert len(strat.shadow.rows) == len(rows)


def test_atb_live_report_compares_the_books_of_the_last_session(server, registry, tmp_path):
    from click.testing import CliRunner

    from atb_strategies.cli.main import cli

    journal = tmp_path / "journal.sqlite"
    live_session(
        server, registry, journal, lambda lines: None, max_bars=4, shadows=[V2], **TRADE_EVERY_BAR
    )
    result = CliRunner().invoke(cli, ["live", "report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("session ")
    assert lines[1].split()[:3] == ["role", "model", "bars"]
    champion, shadow = lines[2].split(), lines[3].split()
    assert champion[:3] == ["champion", f"BTCUSDT/basic@{V1}", "4"]
    assert shadow[:3] == ["shadow", f"BTCUSDT/basic@{V2}", "4"]
    assert shadow[-1] == "100.0"  # v2 is v1 retrained identically: it always agrees
    missing = CliRunner().invoke(cli, ["live", "report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: ConfigurationError:") and "--shadow" in missing.stderr


def _drifted_bundle(make_bundle, registry: Path, hourly: pd.DataFrame) -> str:
    """A bundle whose drift reference was fitted on a market with ranges five times narrower
    than the loopback exchange's: every live window of 'range' looks drifted."""
    from atb_strategies.features.drift import METADATA_KEY, fit_reference
    from atb_strategies.features.pipeline import FeaturePipeline
    from atb_strategies.features.schema import FeatureSchema
    from tests.conftest import RICH_FEATURES

    version = "2026-12-02_1h_v4"
    directory = make_bundle(
        root=registry, version=version, features=RICH_FEATURES[1:3], seed=5, promote=False
    )
    schema = FeatureSchema.from_dict(json.loads((directory / "feature_schema.json").read_text()))
    calm = hourly.copy()
    mid = (calm["high"] + calm["low"]) / 2
    calm["high"] = np.maximum(mid + (calm["high"] - mid) / 5, calm[["open", "close"]].max(axis=1))
    calm["low"] = np.minimum(mid - (mid - calm["low"]) / 5, calm[["open", "close"]].min(axis=1))
    series = FeaturePipeline(schema).series({c: calm[c].to_numpy() for c in calm.columns})
    meta = json.loads((directory / "metadata.json").read_text())
    meta[METADATA_KEY] = fit_reference(series, schema.feature_names).to_dict()
    (directory / "metadata.json").write_text(json.dumps(meta))
    return version


@pytest.mark.parametrize("action", ["warn", "no_entries", "flatten"])
def test_a_drifted_feed_triggers_each_drift_action(hourly, registry, make_bundle, tmp_path, action):
    version = _drifted_bundle(make_bundle, registry, hourly)
    start = int(hourly.index[NOW_ROW].value // 1_000_000) + HOUR // 2
    balances = {"USDT": 10_000, "BTC": 0.05}  # a position to flatten (adopted at start)
    with loopback_exchange(hourly, start_time_ms=start, lockstep=True, balances=balances) as srv:
        strat, lines = live_session(
            srv,
            registry,
            tmp_path / "journal.sqlite",
            lambda lines: None,
            max_bars=4,
            version=version,
            drift_action=action,
            drift_window=48,
            drift_threshold=0.25,
            long_threshold=-1.0,  # every bar is an entry signal when flat
            exit_threshold=10.0,  # never an exit on the prediction
            protect_adopted=False,
        )
        orders = srv.orders()
    decisions = pd.DataFrame(strat.decisions)
    assert len(decisions) == 4
    assert decisions["reason"].str.startswith("inputs drifted: PSI of 'range'").all()
    # announced once (a line and a GUARD store notification), the score on every status line
    assert len([x for x in lines if x.startswith("BTCUSDT guard: inputs drifted")]) == 1
    scores = [float(x.split(" drift=")[1].split()[0]) for x in status_keys_lines(lines)]
    assert len(scores) == 4 and min(scores) > 1
    sells = [o for o in orders if o["side"] == "SELL"]
    buys = [o for o in orders if o["side"] == "BUY"]
    if action == "warn":  # trades as if unguarded: holds the adopted position, never flat
        assert decisions["action"].isin(["hold", "wait"]).all() and not sells
    elif action == "no_entries":
        assert not buys and not sells and (decisions["action"] == "hold").all()
    else:  # flatten: sells the adopted 0.05 BTC at the first drifted bar, then enters nothing
        assert decisions["action"].iloc[0] == "exit"
        assert len(sells) == 1 and float(sells[0]["executedQty"]) == pytest.approx(0.05)
        assert not buys
        # selling the adopted holding closes a trade (not a phantom short one)
        (trade,) = strat.trade_records
        assert trade["size"] == pytest.approx(0.05) and trade["model_key"].endswith(version)


@pytest.mark.parametrize("stale", [False, True])
def test_atb_live_ml_sentiment_polls_a_csv_and_a_stale_value_blocks_entries(
    server, hourly, tmp_path, stale
):
    import os
    import subprocess
    import sys

    from tests.integration.test_live_cli import SUBPROCESS_TIMEOUT, exchange_config

    # a daily index published at 00:00; the stale one stops two days before the live bars
    last = hourly.index[NOW_ROW] - pd.Timedelta(days=2 if stale else 0)
    days = pd.date_range(hourly.index[0].normalize(), last, freq="D")
    csv = tmp_path / "sentiment.csv"
    pd.DataFrame({"timestamp": days, "value": 40 + np.arange(len(days)) % 20}).to_csv(
        csv, index=False
    )
    config = exchange_config(server, tmp_path / "exchange.json", with_keys=False)
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("atb")),
            "live",
            "ml_sentiment",
            "--paper",
            "--sentiment",
            str(csv),
            "--long-threshold",
            "-1",
            "--max-bars",
            "3",
            "--backfill-bars",
            "300",
            "--poll-grace",
            "0",
            "--clock-check",
            "0.05",
            "--registry",
            str(REPO / "models"),
            "--log-file",
            str(tmp_path / "live.log"),
        ],
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "ATB_EXCHANGE_CONFIG": str(config),
        },
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    status = [x for x in done.stdout.splitlines() if " close=" in x]
    assert len(status) == 3
    ages = [float(x.split(" age=")[1].split("h")[0]) for x in status]
    assert all(" sent=" in x for x in status)
    if stale:
        assert min(ages) > 36
        guard = [x for x in done.stdout.splitlines() if x.startswith("BTCUSDT guard:")]
        assert len(guard) == 1 and "older than max_sentiment_age 36h" in guard[0]
        assert all(" action=hold " in x for x in status)
    else:
        assert max(ages) < 24
        assert " action=enter_long " in status[0]
