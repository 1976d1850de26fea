"""The live dashboard over what a real session writes: ``bars.jsonl``, the journal, ``shadow.csv``.

A short paper session of ``MlBasic`` runs in-process against the loopback Binance server with
its clock in lockstep (every candle after the backfill is a live bar, at any machine speed),
with a shadow challenger. The dashboard is the real uvicorn server on 127.0.0.1 (port 0), read
with ``urllib``; the browser test drives Debian's headless Chromium through Selenium and the
system ``chromedriver`` (skipped, with the reason, when one is missing), appends a bar with the
session's own writer and waits (bounded) for the page to show it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from atb_strategies.cli.main import cli
from atb_strategies.dashboard.server import parse_bind, resolve_token, start_dashboard
from atb_strategies.dashboard.state import session_state
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.live.bars_log import BARS_FILE, BarsLog, read_bars
from atb_strategies.live.journal import Journal
from atb_strategies.live.runner import build_live_cerebro, run_until_stopped
from atb_strategies.live.store import CcxtStore
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import loopback_exchange

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "models"
HOUR = 3_600_000
NOW_ROW = 330
LIVE_BARS = 5
SHADOW = "2026-11-29_1h_v2"
FEED_OPTIONS = {"poll_grace": 0.0, "qcheck": 0.05, "clock_check": 0.05}
SCREENSHOTS = os.environ.get("ATB_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate_ohlcv(420, seed=3)


def _server(hourly: pd.DataFrame) -> Any:
    start = int(hourly.index[NOW_ROW].value // 1_000_000) + HOUR // 2
    balances = {"USDT": 10_000, "BTC": 0}
    return loopback_exchange(hourly, start_time_ms=start, lockstep=True, balances=balances)


@pytest.fixture(scope="module")
def session(hourly: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real paper session (always long: it trades) with a shadow; its folder and its lines."""
    folder = tmp_path_factory.mktemp("session")
    lines: list[str] = []
    with _server(hourly) as server:
        store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
        cerebro = build_live_cerebro(
            MlBasic,
            store=store,
            symbol="BTCUSDT",
            timeframe="1h",
            paper=True,
            cash=10_000.0,
            journal=folder / "journal.sqlite",
            backfill_bars=300,
            max_bars=LIVE_BARS,
            kill_switch=None,
            on_stop="cancel",
            echo=lines.append,
            feed_options=FEED_OPTIONS,
            registry=str(REGISTRY),
            long_threshold=-1.0,
            shadows=[SHADOW],
        )
        run_until_stopped(cerebro)
    status = [line for line in lines if " BTCUSDT close=" in line]
    return {"dir": folder, "status": status}


@pytest.fixture(scope="module")
def live_dir(hourly: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-orders session (the loopback exchange fills them): its fills are in the journal."""
    folder = tmp_path_factory.mktemp("live")
    with _server(hourly) as server:
        store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
        cerebro = build_live_cerebro(
            MlBasic,
            store=store,
            symbol="BTCUSDT",
            timeframe="1h",
            paper=False,
            cash=10_000.0,
            journal=folder / "journal.sqlite",
            backfill_bars=300,
            max_bars=LIVE_BARS,
            kill_switch=None,
            on_stop="cancel",
            echo=lambda line: None,
            feed_options=FEED_OPTIONS,
            registry=str(REGISTRY),
            long_threshold=-1.0,
        )
        run_until_stopped(cerebro)
    return folder


@pytest.fixture
def copy(session: dict[str, Any], tmp_path: Path) -> Path:
    """A copy of the session folder that a test may change."""
    return Path(shutil.copytree(session["dir"], tmp_path / "session"))


@pytest.fixture
def board(copy: Path) -> Iterator[Any]:
    dashboard = start_dashboard(copy, "127.0.0.1:0", None, flag="--bind", poll=0.2)
    yield dashboard
    dashboard.stop()


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _status_field(line: str, name: str) -> str:
    return next(part.split("=", 1)[1] for part in line.split() if part.startswith(name + "="))


# ------------------------------------------------------------------ bars.jsonl


def test_bars_log_has_one_record_per_status_line_with_the_same_values(session):
    rows = read_bars(session["dir"] / BARS_FILE)
    assert len(rows) == len(session["status"]) == LIVE_BARS
    for row, line in zip(rows, session["status"], strict=True):
        assert line.startswith(pd.Timestamp(row["time"]).strftime("%Y-%m-%d %H:%M"))
        assert f"{row['close']:.2f}" == _status_field(line, "close")
        assert f"{row['prediction']:.2f}" == _status_field(line, "pred")
        assert row["signal"] == _status_field(line, "signal")
        assert row["action"] == _status_field(line, "action")
        assert f"{row['position']:.6g}" == _status_field(line, "pos")
        assert f"{row['value']:.2f}" == _status_field(line, "value")
        assert row["model"] == _status_field(line, "model")


def test_bars_log_fills_add_up_to_the_positions(session):
    rows = read_bars(session["dir"] / BARS_FILE)
    assert any(row["fills"] for row in rows)  # always long: the session trades
    held = 0.0
    for row in rows:  # a fill reported with a bar is in that bar's position
        held += sum(f["amount"] * (1 if f["side"] == "buy" else -1) for f in row["fills"])
        assert held == pytest.approx(row["position"], abs=1e-12)
        assert {f["side"] for f in row["fills"]} <= {"buy", "sell"}
        assert all(f["price"] > 0 for f in row["fills"])


def test_bars_log_skips_an_unfinished_last_line_and_refuses_a_damaged_one(copy):
    path = copy / BARS_FILE
    rows = read_bars(path)
    with path.open("a") as f:
        f.write('{"time": "2024-01-1')  # a session killed while writing
    assert read_bars(path) == rows
    BarsLog(path).close()  # the next session cuts it before appending
    assert path.read_text().endswith("}\n")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    with pytest.raises(Exception, match=r"bars\.jsonl: line 2 is not a bar record"):
        read_bars(path)


# ------------------------------------------------------------------ the API


def test_api_state_shows_the_session(session, board):
    code, body = get(board.url + "api/state")
    assert code == 200, body
    state = json.loads(body)
    rows = read_bars(session["dir"] / BARS_FILE)
    assert state["bars"] == LIVE_BARS and state["last_time"] == rows[-1]["time"]
    btc = state["symbols"]["BTCUSDT"]
    assert [b["close"] for b in btc["bars"]] == [r["close"] for r in rows]
    assert [b["prediction"] for b in btc["bars"]] == [r["prediction"] for r in rows]
    assert btc["last"]["position"] == rows[-1]["position"]
    assert btc["last"]["model"] == _status_field(session["status"][-1], "model")
    assert btc["last"]["model_age_hours"] is not None
    assert len(btc["fills"]) == sum(len(r["fills"]) for r in rows) > 0
    assert [e["value"] for e in state["equity"]] == [r["value"] for r in rows]
    assert state["kill_switch"] is None
    books = {s["model_key"]: s for s in state["shadows"]}
    assert set(books) == {btc["last"]["model"], f"BTCUSDT/basic@{SHADOW}"}
    assert books[btc["last"]["model"]]["equity"] == pytest.approx(rows[-1]["value"], abs=0.01)
    assert "api_key" not in body.lower() and "secret" not in body.lower()


def test_state_of_a_real_orders_session_takes_the_fills_from_the_journal(live_dir):
    journal = Journal(live_dir / "journal.sqlite")
    fills = journal.fills()
    journal.close()
    assert fills  # the session traded
    state = session_state(live_dir / "journal.sqlite")  # the journal names the session too
    btc = state["symbols"]["BTCUSDT"]
    assert sorted(f["trade_id"] for f in btc["fills"]) == sorted(f["trade_id"] for f in fills)
    times = [b["time"] for b in btc["bars"]]
    for fill in btc["fills"]:  # each on the first bar stamped at or after it
        assert times[fill["slot"]] >= fill["time"]
        assert fill["slot"] == 0 or times[fill["slot"] - 1] < fill["time"]
    rows = read_bars(live_dir / BARS_FILE)
    assert all(not r["fills"] for r in rows)  # a live broker's fills are not in bars.jsonl
    assert btc["last"]["position"] == rows[-1]["position"]


def test_api_state_shows_a_recorded_kill_switch_trip(copy, board):
    journal = Journal(copy / "journal.sqlite")
    journal.record_kill_switch("max drawdown 15% breached", value=8400.0)
    journal.close()
    state = json.loads(get(board.url + "api/state")[1])
    assert state["kill_switch"]["reason"] == "max drawdown 15% breached"


def test_page_is_self_contained(board):
    code, page = get(board.url)
    assert code == 200
    assert "<svg" in page and "api/state" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page  # no CDN


def test_the_dashboard_is_read_only(board):
    assert get(board.url + "api/state", method="POST")[0] == 405
    assert get(board.url, method="DELETE")[0] == 405


def test_a_token_is_required_on_every_request_when_set(copy):
    dashboard = start_dashboard(copy, "127.0.0.1:0", "s3cret-token", flag="--bind", poll=1)
    try:
        assert dashboard.url.endswith("/?token=s3cret-token")
        root = dashboard.url.split("?")[0]
        for path in ("", "api/state"):
            assert get(root + path)[0] == 401
            assert get(root + path + "?token=wrong")[0] == 401
            assert get(root + path + "?token=s3cret-token")[0] == 200
            assert get(root + path, {"X-Atb-Token": "s3cret-token"})[0] == 200
            assert get(root + path, {"Authorization": "Bearer s3cret-token"})[0] == 200
    finally:
        dashboard.stop()


def test_bound_beyond_loopback_the_generated_token_is_required(copy):
    dashboard = start_dashboard(copy, "0.0.0.0:0", None, flag="--dashboard", poll=1)
    try:
        root, _, query = dashboard.url.partition("?")
        token = query.removeprefix("token=")
        assert root.startswith("http://0.0.0.0:") and len(token) >= 24
        local = root.replace("0.0.0.0", "127.0.0.1")
        assert get(local + "api/state")[0] == 401
        assert get(local + "api/state?token=" + token)[0] == 200
    finally:
        dashboard.stop()


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:8765", ("127.0.0.1", 8765)),
        ("9000", ("127.0.0.1", 9000)),
        ("[::1]:80", ("::1", 80)),
        ("example.org:0", ("example.org", 0)),
    ],
)
def test_parse_bind(bind, expected):
    assert parse_bind(bind, "--bind") == expected


@pytest.mark.parametrize("bind", ["127.0.0.1:", "host:http", "127.0.0.1:70000", ""])
def test_parse_bind_refuses_what_is_no_host_port(bind):
    with pytest.raises(ConfigurationError, match=r"--dashboard .* is not HOST:PORT"):
        parse_bind(bind, "--dashboard")


def test_a_non_loopback_host_always_gets_a_token():
    assert resolve_token("127.0.0.1", None) is None
    assert resolve_token("localhost", None) is None
    assert resolve_token("::1", None) is None
    first, second = resolve_token("0.0.0.0", None), resolve_token("192.168.1.20", None)
    assert first and second and first != second and len(first) >= 24
    assert resolve_token("10.0.0.5", "given") == "given"


def test_a_damaged_journal_is_one_line_in_the_api(copy, board):
    (copy / "journal.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (copy / f"journal.sqlite{suffix}").unlink(missing_ok=True)
    code, body = get(board.url + "api/state")
    assert code == 500
    assert "journal.sqlite" in body and "\n" not in body.strip()


# ------------------------------------------------------------------ the CLI


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["dashboard", "{tmp}/missing"], "missing does not exist"),
        (["dashboard", "{tmp}"], "holds no live session"),
        (["dashboard", "{session}", "--bind", "nohost:port"], "--bind 'nohost:port' is not"),
        (["dashboard", "{damaged}"], "line 1 is not a bar record"),
    ],
)
def test_atb_dashboard_bad_input_is_one_line(args, expected, copy, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / BARS_FILE).write_text("nonsense\n{}\n")
    where = {"tmp": tmp_path / "empty", "session": copy, "damaged": damaged}
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, [a.format(**where) for a in args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


def test_a_taken_address_is_one_line(copy):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["dashboard", str(copy), "--bind", f"127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: ConfigurationError: --bind 127.0.0.1:{port}: the dashboard cannot listen there "
        "(Address already in use); choose another HOST:PORT."
    ]


def test_atb_dashboard_serves_until_ctrl_c(session):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["dashboard", str(session["dir"]), "--bind", "127.0.0.1:0"]
    with subprocess.Popen(
        [sys.executable, "-m", "atb_strategies.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            first = proc.stdout.readline()  # the process says where it listens, then serves
            assert first.startswith("dashboard: http://127.0.0.1:"), proc.stderr.read()
            url = first.split()[1]
            code, body = get(url + "api/state")
            assert code == 200 and json.loads(body)["bars"] == LIVE_BARS
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "dashboard stopped"


def test_without_the_extra_the_commands_name_it(copy):
    code = (
        "import sys\nsys.modules['uvicorn'] = None\n"
        "from atb_strategies.cli.main import main\nmain()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in (["dashboard", str(copy)], ["live", "ml_basic", "--paper", "--dashboard", ":1"]):
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=copy,
            timeout=600,
        )
        assert done.returncode == 1
        flag = "atb dashboard" if args[0] == "dashboard" else "--dashboard"
        assert done.stderr.strip().splitlines() == [
            f"error: ConfigurationError: {flag} needs uvicorn: "
            "pip install 'atb-strategies[dashboard]'."
        ]


def test_dashboard_token_needs_dashboard(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["live", "ml_basic", "--paper", "--dashboard-token", "x", "--journal", str(tmp_path / "j")],
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: ConfigurationError: --dashboard-token is for --dashboard HOST:PORT: add it."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_atb_live_dashboard_serves_the_session_it_runs(hourly, tmp_path):
    port = _free_port()
    with _server(hourly) as server:
        config = tmp_path / "exchange.json"
        config.write_text(
            json.dumps({"binance": server.ccxt_config(rate_limit_ms=1, with_keys=False)})
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "ATB_EXCHANGE_CONFIG": str(config),
            "MPLBACKEND": "Agg",
        }
        done = subprocess.run(
            [
                *(sys.executable, "-m", "atb_strategies.cli.main", "live", "ml_basic", "--paper"),
                *("--poll-grace", "0", "--clock-check", "0.05", "--max-bars", "2"),
                *("--backfill-bars", "300", "--registry", str(REGISTRY)),
                *("--journal", str(tmp_path / "s" / "journal.sqlite")),
                *("--log-file", str(tmp_path / "live.log")),
                *("--dashboard", f"127.0.0.1:{port}"),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"dashboard: http://127.0.0.1:{port}/\n" in done.stdout
    assert len(read_bars(tmp_path / "s" / BARS_FILE)) == 2
    assert session_state(tmp_path / "s")["bars"] == 2


# ------------------------------------------------------------------ in a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    if DRIVER is None:
        pytest.skip("no chromedriver on PATH (apt-get install chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1000,1300")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _points(wait: Any, css: str, n: int) -> bool:
    """Wait until the SVG polyline ``css`` has ``n`` points (charts are redrawn on change)."""

    def count(driver: Any) -> bool:
        return len(driver.find_element("css selector", css).get_attribute("points").split()) == n

    return bool(wait.until(count))


@pytest.mark.slow
def test_the_page_shows_the_session_and_updates_when_a_bar_arrives(
    session, copy, board, browser, tmp_path
):
    from selenium.webdriver.support.ui import WebDriverWait

    rows = read_bars(copy / BARS_FILE)
    from selenium.common.exceptions import StaleElementReferenceException

    # a bound against a hang, not a pace; an element redrawn while read is read again
    wait = WebDriverWait(browser, 60, ignored_exceptions=[StaleElementReferenceException])
    browser.get(board.url)
    wait.until(lambda d: d.find_element("id", "bar-count").text == str(LIVE_BARS))
    symbol = browser.find_element("css selector", 'section.symbol[data-symbol="BTCUSDT"]')
    assert _points(wait, "section.symbol .close-line", LIVE_BARS)
    assert _points(wait, "section.symbol .prediction-line", LIVE_BARS)
    fills = sum(len(r["fills"]) for r in rows)
    assert len(symbol.find_elements("css selector", ".fill-mark")) == fills > 0
    last = rows[-1]
    assert symbol.find_element("css selector", ".position").text == f"{last['position']:.6f}"
    assert symbol.find_element("css selector", ".close").text == f"{last['close']:.2f}"
    assert symbol.find_element("css selector", ".model").text == last["model"]
    assert symbol.find_element("css selector", ".guards").text == "none firing"
    assert browser.find_element("id", "equity-value").text == f"{last['value']:.2f}"
    assert _points(wait, "#equity-chart .equity-line", LIVE_BARS)
    assert browser.find_element("id", "kill-switch").text == "no trip recorded"
    assert SHADOW in browser.find_element("id", "shadows").text
    before = browser.find_element("id", "last-bar").text
    _screenshot(browser, tmp_path / "dashboard.png")

    # the session writes its next bar: the page follows (no reload)
    new = {**last, "time": (pd.Timestamp(last["time"]) + pd.Timedelta(hours=1)).isoformat()}
    new |= {"close": last["close"] * 1.01, "position": 0.25, "value": last["value"] + 50.0}
    new |= {"fills": [], "guards": ["drift"]}
    writer = BarsLog(copy / BARS_FILE)
    writer.write(new)
    writer.close()
    wait.until(lambda d: d.find_element("id", "bar-count").text == str(LIVE_BARS + 1))
    assert browser.find_element("id", "last-bar").text != before
    assert symbol.find_element("css selector", ".position").text == "0.250000"
    assert symbol.find_element("css selector", ".close").text == f"{new['close']:.2f}"
    assert symbol.find_element("css selector", ".guards").text == "drift"
    assert _points(wait, "section.symbol .close-line", LIVE_BARS + 1)
    assert browser.find_element("id", "equity-value").text == f"{new['value']:.2f}"

    # a kill-switch trip recorded in the journal turns the badge
    journal = Journal(copy / "journal.sqlite")
    journal.record_kill_switch("daily loss 5% breached", value=9400.0)
    journal.close()
    wait.until(lambda d: d.find_element("id", "kill-switch").text.startswith("TRIPPED"))
    assert "daily loss 5% breached" in browser.find_element("id", "kill-switch").text
    _screenshot(browser, tmp_path / "dashboard-updated.png")
    logs = browser.get_log("browser") if hasattr(browser, "get_log") else []
    assert not [e for e in logs if e.get("level") == "SEVERE"], logs


def _screenshot(browser: Any, path: Path) -> None:
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOTS) / path.name)
