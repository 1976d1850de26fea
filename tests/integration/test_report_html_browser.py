"""``report.html`` in a real browser: Debian's headless Chromium, driven by Selenium through the
system's ``chromedriver`` (no browser download), loads the page from disk with networking off,
and the bokeh plots must render (canvases, the title, no JavaScript error) and answer hover.

Skipped, with the reason, when Selenium, ``chromium`` or ``chromedriver`` is missing
(``apt-get install chromium chromium-driver``; Selenium is in the ``test`` extra).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atb_strategies.backtest.html_report import write_html_report
from atb_strategies.backtest.runner import run_backtest
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import BundleFactory, synthetic_candles

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)"),
    pytest.mark.skipif(
        DRIVER is None, reason="no chromedriver on PATH (apt-get install chromium-driver)"
    ),
]

#: Every element, also inside bokeh's shadow roots.
_WALK = """
function all(root, out) {
  for (const el of root.querySelectorAll('*')) {
    out.push(el);
    if (el.shadowRoot) all(el.shadowRoot, out);
  }
  return out;
}
"""
_IDLE = """
const done = arguments[arguments.length - 1];
const doc = Bokeh.documents[0];
if (doc.is_idle) { done(true); } else { doc.idle.connect(() => done(true)); }
"""
_TOOLTIP = (
    _WALK
    + """
const rows = {};
for (const el of all(document, [])) {
  if (el.classList && el.classList.contains('bk-tooltip-row-label')) {
    const value = el.nextElementSibling;
    rows[el.textContent.replace(/:\\s*$/, '')] = value ? value.textContent : '';
  }
}
return Object.keys(rows).length ? rows : null;
"""
)


@pytest.fixture
def report(make_bundle: BundleFactory, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    make_bundle()
    candles = synthetic_candles(900)
    result = run_backtest(
        candles,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=str(tmp_path / "models"),
        long_threshold=-1.0,
    )
    path = write_html_report(result, candles, tmp_path / "report.html", title="Browser check")
    return path, candles


@pytest.fixture
def browser(tmp_path: Path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1500,1700",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def test_report_html_renders_in_chromium_and_answers_hover(report, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    path, candles = report
    browser.get(path.as_uri())
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return !!(window.Bokeh && Bokeh.documents.length)")
    )
    assert browser.execute_async_script(_IDLE) is True  # every plot has rendered

    assert browser.title == "Browser check"
    canvases = browser.execute_script(
        _WALK + "return all(document, []).filter(e => e.tagName == 'CANVAS' && e.width > 500)"
        ".map(e => e.getBoundingClientRect().height);"
    )
    assert len(canvases) >= 6 and min(canvases) > 0  # price, prediction, returns, ..., states
    texts = browser.execute_script(
        _WALK + "return all(document, []).map(e => e.tagName == 'H2' ? e.textContent : '')"
        ".filter(Boolean);"
    )
    assert texts == ["Browser check"]

    price = browser.execute_script(
        _WALK + "return all(document, []).find(e => e.tagName == 'CANVAS' && "
        "e.getBoundingClientRect().height > 300);"
    )
    ActionChains(browser).move_to_element_with_offset(price, 150, 20).perform()
    rows = WebDriverWait(browser, 30).until(lambda d: d.execute_script(_TOOLTIP))
    assert {"bar (open)", "close", "predicted close", "decision", "orders"} <= set(rows)
    hovered = pd.Timestamp(rows["bar (open)"])
    assert candles.index[0] <= hovered <= candles.index[-1]
    close = float(candles.loc[hovered, "close"])
    assert float(rows["close"].replace(",", "")) == pytest.approx(close, abs=0.006)

    # zoom time to 100 bars: the price axis fits them (it used to stay on the whole period's)
    part = candles.iloc[400:500]
    t0, t1 = (int(t.value // 10**6) for t in part.index[[0, -1]])
    find = (
        "const price = Array.from(Bokeh.documents[0].all_models).find(m => m.title && "
        "m.title.text && m.title.text.startsWith('price and the model'));"
    )
    full = browser.execute_script(find + "return [price.y_range.start, price.y_range.end];")
    low, high = float(part["close"].min()), float(part["close"].max())
    assert full[1] - full[0] > 1.5 * (high - low)
    browser.execute_script(find + "price.x_range.setv({start: arguments[0], end: arguments[1]});",
                           t0, t1)  # fmt: skip

    def fitted(d) -> bool:  # type: ignore[no-untyped-def]
        lo, hi = d.execute_script(find + "return [price.y_range.start, price.y_range.end];")
        return lo <= low and hi >= high and hi - lo < 0.8 * (full[1] - full[0])

    WebDriverWait(browser, 30).until(fitted)  # bokeh runs the callback asynchronously

    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


# ---------------------------------------------------------------- walk-forward and sweep pages


def _load(browser, path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(path.as_uri())
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return !!(window.Bokeh && Bokeh.documents.length)")
    )
    assert browser.execute_async_script(_IDLE) is True  # every plot has rendered


def _canvas_heights(browser, min_width: int) -> list[float]:  # type: ignore[no-untyped-def]
    return browser.execute_script(
        _WALK + f"return all(document, []).filter(e => e.tagName == 'CANVAS' && e.width > "
        f"{min_width}).map(e => e.getBoundingClientRect().height);"
    )


def _table_rows(browser, name: str) -> int:  # type: ignore[no-untyped-def]
    """Rows of a named bokeh DataTable's data in the page."""
    return browser.execute_script(
        "return Bokeh.documents[0].get_model_by_name(arguments[0]).source.get_length();", name
    )


def _rendered_rows(browser) -> int:  # type: ignore[no-untyped-def]
    """Table rows the browser drew (SlickGrid's row elements, also in shadow roots)."""
    return browser.execute_script(
        _WALK + "return all(document, []).filter(e => e.classList && "
        "e.classList.contains('slick-row')).length;"
    )


def _screenshot(browser, tmp_path: Path, name: str) -> Path:  # type: ignore[no-untyped-def]
    """Save a screenshot of the whole page in the test's tmp dir (and in ATB_SCREENSHOT_DIR
    when set, to look at)."""
    import os

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1500, min(height + 100, 6000))
    shot = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("ATB_SCREENSHOT_DIR"):
        keep = Path(os.environ["ATB_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / shot.name)
    return shot


def test_walk_forward_report_html_renders_folds_table_and_hover(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    from atb_strategies.evaluation.report import write_report
    from tests.integration.test_walk_forward_html import ridge_walk_forward

    result, summary, equity = ridge_walk_forward(tmp_path)
    paths = write_report(result, tmp_path / "wf", equity=equity, backtest=summary, title="WF")
    _load(browser, paths["html"])
    assert browser.title == "WF"
    heights = _canvas_heights(browser, 500)
    assert len(heights) >= 5 and min(heights) > 0  # price, returns, edge, equity, buy & hold
    labels = browser.execute_script(
        "return Array.from(Bokeh.documents[0].get_model_by_name('fold_labels').source.data.text);"
    )
    assert labels == [f"fold {f.number}" for f in result.folds]
    assert _table_rows(browser, "folds") == len(result.folds)
    assert _rendered_rows(browser) == len(result.folds)

    price = browser.execute_script(
        _WALK + "return all(document, []).find(e => e.tagName == 'CANVAS' && e.width > 500);"
    )
    ActionChains(browser).move_to_element_with_offset(price, 200, 40).perform()
    rows = WebDriverWait(browser, 30).until(lambda d: d.execute_script(_TOOLTIP))
    assert {"bar (open)", "fold", "predicted return", "actual return", "hit"} <= set(rows)
    hovered = pd.Timestamp(rows["bar (open)"])
    bar = result.predictions.loc[hovered]
    assert int(rows["fold"]) == int(bar["fold"])
    right = np.sign(bar["predicted"]) == np.sign(bar["actual"])
    assert rows["hit"].strip() == ("yes" if right else "no")

    # zoom time to the second fold: the price axis fits the bars in view
    fold = result.predictions[result.predictions["fold"] == result.folds[1].number]
    t0, t1 = (int(pd.Timestamp(t).value // 10**6) for t in fold.index[[0, -1]])
    find = (
        "const price = Array.from(Bokeh.documents[0].all_models).find(m => m.title && "
        "m.title.text && m.title.text.startsWith('realised and predicted close'));"
    )
    closes = fold["close"].to_numpy()[:, None] * np.exp(fold[["predicted", "actual"]].to_numpy())
    low, high = float(closes.min()), float(closes.max())
    full = browser.execute_script(find + "return [price.y_range.start, price.y_range.end];")
    assert full[1] - full[0] > 1.2 * (high - low)  # the whole period's axis is wider
    browser.execute_script(find + "price.x_range.setv({start: arguments[0], end: arguments[1]});",
                           t0, t1)  # fmt: skip

    def fitted(d) -> bool:  # type: ignore[no-untyped-def]
        lo, hi = d.execute_script(find + "return [price.y_range.start, price.y_range.end];")
        # every close in view inside the axis, and the axis that range plus a margin
        return lo <= low and hi >= high and hi - lo <= 1.2 * (high - low)

    WebDriverWait(browser, 30).until(fitted)  # bokeh runs the callback asynchronously

    _screenshot(browser, tmp_path, "walk-forward-report")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_sweep_report_html_renders_heatmaps_table_and_hover(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    from atb_strategies.sweep.html_report import write_sweep_html
    from tests.unit.test_sweep_html import GRID, _results

    frame = _results()
    path = write_sweep_html(frame, GRID, tmp_path / "sweep" / "report.html", title="Sweep")
    _load(browser, path)
    assert browser.title == "Sweep"
    heights = _canvas_heights(browser, 300)
    assert len(heights) >= 3 and min(heights) > 0  # a heatmap per pair of the 3 params
    assert _table_rows(browser, "cells") == len(frame)
    assert _rendered_rows(browser) == len(frame)  # tall enough: no row hidden
    heatmaps = browser.execute_script(
        "return Array.from(Bokeh.documents[0].all_models).filter(m => m.name == 'heatmap').length;"
    )
    assert heatmaps == 3

    square = browser.execute_script(
        _WALK + "return all(document, []).find(e => e.tagName == 'CANVAS' && e.width > 300);"
    )
    rect = square.rect
    # the middle of the plot area: a square of the first heatmap
    ActionChains(browser).move_to_element_with_offset(square, 0, -rect["height"] // 8).perform()
    rows = WebDriverWait(browser, 30).until(lambda d: d.execute_script(_TOOLTIP))
    rows = {k: v.strip() for k, v in rows.items()}
    assert {"cell", "params", "cells in square", "sharpe", "total return"} <= set(rows)
    shown = frame[frame["cell"] == rows["cell"]]
    assert len(shown) == 1 and rows["cells in square"] == "2"
    assert rows["sharpe"] == f"{shown['sharpe'].iloc[0]:.2f}"  # the hovered cell's own value

    _screenshot(browser, tmp_path, "sweep-report")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
