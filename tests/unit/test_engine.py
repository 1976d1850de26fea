"""Prediction engine: defaults from config, candle validation (and its numpy path), single ==
series, causality, and following ``latest`` cheaply."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atb_strategies.config import PredictionConfig
from atb_strategies.exceptions import CandleDataError, ModelNotFoundError, RegistryError
from atb_strategies.features import candles as candles_module
from atb_strategies.features.candles import candle_arrays, validate_candles
from atb_strategies.inference import engine as inference_engine
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.registry import layout as layout_module
from atb_strategies.registry.layout import RegistryLayout
from tests.conftest import RICH_FEATURES, BundleFactory, linear_onnx, synthetic_candles


@pytest.fixture
def engine(make_bundle: BundleFactory, tmp_path) -> PredictionEngine:
    # small weights: raw volumes among the features would otherwise predict log returns of
    # +-100, which are no prediction (inference.decode)
    model = linear_onnx(24, len(RICH_FEATURES), scale=1e-4)
    make_bundle(features=RICH_FEATURES, sequence_length=24, model_bytes=model)
    return PredictionEngine(PredictionConfig(model_registry_path=tmp_path / "models"))


def test_predict_uses_config_defaults_and_returns_price(engine, candles) -> None:
    pred = engine.predict(candles)
    assert pred.model_key == "BTCUSDT/basic@2026-01-01_1h_v1"
    assert pred.reference_close == candles["close"].iloc[-1]
    assert pred.price == pytest.approx(pred.reference_close * np.exp(pred.raw), rel=1e-9)
    assert 0.0 <= pred.confidence <= 1.0
    assert pred.direction == int(np.sign(pred.predicted_return))


def test_predict_equals_last_row_of_predict_series(engine, candles) -> None:
    series = engine.predict_series(candles)
    for cut in (len(candles) - 1, 400, 200):
        pred = engine.predict(candles.iloc[: cut + 1])
        row = series.loc[candles.index[cut]]
        assert pred.raw == pytest.approx(row["raw"], abs=1e-7)
        assert pred.price == pytest.approx(row["price"], rel=1e-7)


def test_predict_series_rows_never_change_when_future_is_truncated(engine, candles) -> None:
    full = engine.predict_series(candles)
    part = engine.predict_series(candles.iloc[:350])
    pd.testing.assert_frame_equal(full.loc[part.index], part)


def test_predict_with_timestamp_column_instead_of_index(engine, candles) -> None:
    as_column = candles.reset_index()
    assert engine.predict(as_column).raw == engine.predict(candles).raw


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda f: f.__setitem__("close", f["close"].where(f.index != f.index[-3])),
            r"column 'close' is nan at row \d+ \(2024-01-25 21:00:00\)",
        ),
        (
            lambda f: f.__setitem__("low", f["low"].where(f.index != f.index[-2], -1.0)),
            "must be > 0",
        ),
        (
            lambda f: f.__setitem__("high", f["high"].where(f.index != f.index[-2], 1.0)),
            "high 1.0 < low",
        ),
    ],
)
def test_predict_with_bad_candle_names_row(engine, candles, mutate, message) -> None:
    frame = candles.copy()
    mutate(frame)
    with pytest.raises(CandleDataError, match=message):
        engine.predict(frame)


def test_predict_with_duplicate_and_unsorted_stamps_raises(engine, candles) -> None:
    dup = pd.concat([candles, candles.iloc[[-1]]])
    with pytest.raises(CandleDataError, match="duplicate timestamp"):
        engine.predict(dup)
    n = len(candles)
    swapped = candles.iloc[[*range(n - 2), n - 1, n - 2]]
    with pytest.raises(CandleDataError, match="not sorted"):
        engine.predict(swapped)


def test_predict_with_too_few_rows_says_how_many(engine, candles) -> None:
    with pytest.raises(CandleDataError, match=r"needs at least 47 \(23 warm-up \+ 24 window\)"):
        engine.predict(candles.iloc[:46])


def test_predict_with_candles_of_other_timeframe_raises(engine) -> None:
    four_hourly = synthetic_candles(300, freq="4h")
    with pytest.raises(CandleDataError, match="gap before"):
        engine.predict(four_hourly)
    half_hourly = synthetic_candles(300, freq="30min")
    with pytest.raises(CandleDataError, match="not a multiple of the model's timeframe 1h"):
        engine.predict(half_hourly)


def test_predict_with_gap_inside_window_raises_unless_allowed(engine, candles, tmp_path) -> None:
    gapped = candles.drop(candles.index[-5])
    with pytest.raises(CandleDataError, match=r"gap before .* \(1 missing 1h bar"):
        engine.predict(gapped)
    lenient = PredictionEngine(engine.config, engine.registry, gap_policy="allow")
    assert lenient.predict(gapped).price is not None
    # a gap older than the rows a prediction uses does not matter for fixed look-back features
    old_gap = candles.drop(candles.index[5])
    assert engine.predict(old_gap).price is not None


def test_predict_with_unknown_model_lists_what_exists(engine, candles) -> None:
    with pytest.raises(ModelNotFoundError, match="Types present for BTCUSDT: basic"):
        engine.predict(candles, model_type="sentiment")


# ---------------------------------------------------------------- fast candle validation

COLUMNS = ["close", "volume", "high", "low", "open"]
ROWS = 120


def _set(frame: pd.DataFrame, column: str, pos: int, value) -> pd.DataFrame:
    frame = frame.copy()
    frame.iloc[pos, frame.columns.get_loc(column)] = value
    return frame


def _restamp(frame: pd.DataFrame, change) -> pd.DataFrame:
    frame = frame.copy()
    stamps = list(frame.index)
    change(stamps)
    frame.index = pd.DatetimeIndex(stamps, name=frame.index.name)
    return frame


def _swap_high_low(frame: pd.DataFrame, pos: int) -> pd.DataFrame:
    hi, lo = frame["high"].iloc[pos], frame["low"].iloc[pos]
    return _set(_set(frame, "high", pos, lo), "low", pos, hi)


def _with_text(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"open": object})
    frame.iloc[-4, frame.columns.get_loc("open")] = "n/a"
    return frame


#: name -> (frame from the synthetic candles, whether the numpy path must serve it itself)
CASES = {
    "clean": (lambda f: f, True),
    "int_volume": (lambda f: f.assign(volume=f["volume"].round().astype("int64")), True),
    "all_int": (lambda f: f.round().astype("int64"), True),
    "tz_aware": (lambda f: f.tz_localize("UTC").tz_convert("Europe/Berlin"), True),
    "unit_s": (lambda f: f.set_axis(f.index.as_unit("s")), True),
    "unit_ms": (lambda f: f.set_axis(f.index.as_unit("ms")), True),
    "unit_us": (lambda f: f.set_axis(f.index.as_unit("us")), True),
    "text_column_besides": (lambda f: f.assign(symbol="BTCUSDT"), True),
    "nan_outside_rows": (lambda f: _set(f, "close", 3, np.nan), True),
    "nan_in_unused_column": (lambda f: f.assign(extra=np.nan), True),
    "zero_volume": (lambda f: _set(f, "volume", -2, 0.0), True),
    "negative_zero_volume": (lambda f: _set(f, "volume", -2, -0.0), True),
    "flat_bar": (
        lambda f: _set(
            _set(_set(f, "high", -6, f["low"].iloc[-6]), "open", -6, f["low"].iloc[-6]),
            "close",
            -6,
            f["low"].iloc[-6],
        ),
        True,
    ),
    "nan_close": (lambda f: _set(f, "close", -3, np.nan), False),
    "inf_volume": (lambda f: _set(f, "volume", -8, np.inf), False),
    "negative_volume": (lambda f: _set(f, "volume", -9, -0.001), False),
    "tiny_negative_volume": (lambda f: _set(f, "volume", -9, -5e-324), False),
    "zero_low": (lambda f: _set(f, "low", -4, 0.0), False),
    "negative_open": (lambda f: _set(f, "open", -5, -1.0), False),
    "high_below_low": (lambda f: _swap_high_low(f, -11), False),
    "open_above_high": (lambda f: _set(f, "open", -12, f["high"].iloc[-12] * 1.01), False),
    "close_below_low": (lambda f: _set(f, "close", -13, f["low"].iloc[-13] * 0.99), False),
    "text_in_column": (_with_text, False),
    "nullable_with_na": (
        lambda f: _set(f.astype({"close": "Float64"}), "close", -3, pd.NA),
        False,
    ),
    "duplicate_stamp": (lambda f: _restamp(f, lambda s: s.__setitem__(-10, s[-11])), False),
    "unsorted": (
        lambda f: _restamp(f, lambda s: s.__setitem__(slice(-20, -18), [s[-19], s[-20]])),
        False,
    ),
    "missing_stamp": (lambda f: _restamp(f, lambda s: s.__setitem__(-7, pd.NaT)), False),
    "gap": (lambda f: f.drop(f.index[-30]), False),
    "off_grid": (
        lambda f: _restamp(f, lambda s: s.__setitem__(-15, s[-15] + pd.Timedelta("30min"))),
        False,
    ),
    "timestamp_column": (lambda f: f.reset_index(), False),
}


def _outcome(fn) -> tuple:
    try:
        return ("ok", fn())
    except CandleDataError as e:
        return ("error", str(e), e.row)


def _reference(frame: pd.DataFrame, rows: int | None, **kw) -> dict[str, np.ndarray]:
    used = frame if rows is None else frame.iloc[-rows:]
    out = validate_candles(used, **kw)
    return {c: out[c].to_numpy(dtype=np.float64) for c in kw["columns"]}


def _assert_same(got: tuple, want: tuple) -> None:
    assert got[0] == want[0], (got, want)
    if got[0] == "error":
        assert got[1:] == want[1:]
        return
    assert list(got[1]) == list(want[1])
    for c, values in want[1].items():
        assert got[1][c].dtype == np.float64
        np.testing.assert_array_equal(got[1][c], values, err_msg=c)


@pytest.mark.parametrize("policy", ["raise", "warn", "skip", "allow"])
@pytest.mark.parametrize("case", list(CASES))
def test_candle_arrays_with_frame_equals_validate_candles_on_rows_used(
    case, policy, monkeypatch, caplog
) -> None:
    make, served_fast = CASES[case]
    frame = make(synthetic_candles(400))
    kw = {"columns": COLUMNS, "timeframe": "1h", "gap_policy": policy, "what": "candles for m"}
    with caplog.at_level("WARNING"):
        want = _outcome(lambda: _reference(frame, ROWS, **kw))
    want_logs, calls = caplog.messages[:], []
    caplog.clear()
    real = candles_module.validate_candles
    monkeypatch.setattr(
        candles_module, "validate_candles", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    with caplog.at_level("WARNING"):
        got = _outcome(lambda: candle_arrays(frame, rows=ROWS, spacing_rows=ROWS, **kw))
    _assert_same(got, want)
    assert caplog.messages == want_logs
    if served_fast:
        assert calls == []  # no pandas validation: numpy on the rows used only
    elif case != "gap" or policy in ("raise", "warn"):
        assert calls == [1]  # errors, warnings and unusual frames come from validate_candles


@pytest.mark.parametrize("rows", [None, 50])
def test_candle_arrays_with_spacing_rows_checks_spacing_only_there(rows) -> None:
    frame = synthetic_candles(300).drop(synthetic_candles(300).index[100])
    kw = {"columns": ["close"], "timeframe": "1h", "gap_policy": "raise"}
    _assert_same(
        _outcome(lambda: candle_arrays(frame, rows=rows, spacing_rows=60, **kw)),
        _outcome(lambda: _reference(frame, rows, spacing_rows=60, **kw)),
    )
    assert _outcome(lambda: candle_arrays(frame, rows=rows, **kw))[0] == (
        "error" if rows is None else "ok"
    )


def test_candle_arrays_with_inconsistent_ohlc_outside_model_columns_raises_like_validate() -> None:
    frame = _swap_high_low(synthetic_candles(200), -3)
    kw = {"columns": ["close"], "timeframe": "1h"}
    got = _outcome(lambda: candle_arrays(frame, rows=ROWS, **kw))
    assert got[0] == "error" and "high" in got[1]
    _assert_same(got, _outcome(lambda: _reference(frame, ROWS, **kw)))


def test_predict_with_long_clean_frame_uses_numpy_validation_only(
    engine, make_bundle, tmp_path, monkeypatch
) -> None:
    make_bundle(root=tmp_path / "fixed", sequence_length=24)  # fixed look-back features
    fixed = PredictionEngine(PredictionConfig(model_registry_path=tmp_path / "fixed"))
    candles = synthetic_candles(5000)
    before = {e: e.predict(candles) for e in (engine, fixed)}
    for module in (candles_module, inference_engine):
        monkeypatch.setattr(
            module, "validate_candles", lambda *a, **k: pytest.fail("pandas validation")
        )
    for e, pred in before.items():
        after = e.predict(candles)
        assert (after.raw, after.price) == (pred.raw, pred.price)
    monkeypatch.undo()
    # a NaN long before the newest window matters only to a model with recursive features
    old_nan = _set(candles, "close", 10, np.nan)
    assert fixed.select().pipeline.history_bars == 25  # 1 warm-up bar + 24
    assert fixed.predict(old_nan).raw == before[fixed].raw
    assert engine.select().pipeline.history_bars is None  # EMA, RSI: all history counts
    with pytest.raises(CandleDataError, match=r"'close' is nan at row 10 "):
        engine.predict(old_nan)


def test_predict_with_bad_candle_names_the_same_row_as_before(engine) -> None:
    frame = _set(synthetic_candles(), "close", -3, np.nan)
    pipe = engine.select().pipeline
    with pytest.raises(CandleDataError) as expected:
        validate_candles(
            frame,  # recursive features: every row is used
            columns=pipe.columns,
            timeframe="1h",
            what="candles for BTCUSDT/basic@2026-01-01_1h_v1",
        )
    with pytest.raises(CandleDataError) as info:
        engine.predict(frame)
    assert str(info.value) == str(expected.value)
    assert info.value.row == frame.index[-3]


# ---------------------------------------------------------------- the latest pointer


@pytest.fixture
def settled(monkeypatch) -> None:
    """Pointers written by the test count as settled at once (not only RACY_SECONDS later)."""
    monkeypatch.setattr(layout_module, "RACY_SECONDS", 0.0)


def _age(path: Path, seconds: float = 60.0) -> None:
    """Set the mtime of ``path`` (not of what it links to) ``seconds`` into the past."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def _count_reads(monkeypatch, layout: RegistryLayout) -> list[tuple[str, str]]:
    """Record every time ``layout`` reads a ``latest`` pointer from disk."""
    reads: list[tuple[str, str]] = []
    real = RegistryLayout._read_latest

    def spy(self, symbol, model_type, *args):
        if self is layout:
            reads.append((symbol, model_type))
        return real(self, symbol, model_type, *args)

    monkeypatch.setattr(RegistryLayout, "_read_latest", spy)
    return reads


def test_predict_following_latest_rereads_pointer_only_when_it_changes(
    engine, make_bundle, candles, monkeypatch, settled
) -> None:
    reads = _count_reads(monkeypatch, engine.registry.layout)
    for _ in range(3):
        assert engine.predict(candles).model_key == "BTCUSDT/basic@2026-01-01_1h_v1"
    assert len(reads) == 1  # then a stat of the pointer per call

    make_bundle(features=RICH_FEATURES, sequence_length=24, version="2026-01-02_1h_v2", seed=5)
    assert engine.predict(candles).model_key == "BTCUSDT/basic@2026-01-02_1h_v2"  # promoted
    assert len(reads) == 2


def test_predict_following_latest_sees_pointer_rewritten_in_place_with_old_mtime(
    engine, make_bundle, tmp_path, candles, monkeypatch, settled
) -> None:
    make_bundle(
        features=RICH_FEATURES, sequence_length=24, version="2026-01-01_1h_v2", promote=False
    )
    tdir = tmp_path / "models" / "BTCUSDT" / "basic"
    pointer = tdir / "latest"
    pointer.unlink()
    pointer.write_text("2026-01-01_1h_v1\n")  # a plain-file pointer
    _age(pointer)
    assert engine.predict(candles).model_key.endswith("_v1")
    reads = _count_reads(monkeypatch, engine.registry.layout)
    assert engine.predict(candles).model_key.endswith("_v1")
    assert reads == []  # remembered
    before = pointer.stat()
    time.sleep(0.05)  # let the file system's clock tick (what RACY_SECONDS=0 skips waiting for)
    with open(pointer, "r+") as fh:  # same inode, same size, mtime put back: only ctime moves
        fh.write("2026-01-01_1h_v2\n")
    os.utime(pointer, ns=(before.st_mtime_ns, before.st_mtime_ns))
    after = pointer.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert after.st_ctime_ns != before.st_ctime_ns
    assert engine.predict(candles).model_key.endswith("_v2")
    assert len(reads) == 1


def test_predict_following_latest_with_target_removed_raises_instead_of_stale_name(
    engine, tmp_path, candles, monkeypatch, settled
) -> None:
    tdir = tmp_path / "models" / "BTCUSDT" / "basic"
    engine.predict(candles)
    layout = engine.registry.layout
    reads = _count_reads(monkeypatch, engine.registry.layout)
    assert layout.read_latest("BTCUSDT", "basic") == "2026-01-01_1h_v1"
    assert reads == []  # remembered
    shutil.rmtree(tdir / "2026-01-01_1h_v1")
    with pytest.raises(RegistryError, match="does not exist"):
        layout.read_latest("BTCUSDT", "basic")


def test_read_latest_with_recently_changed_pointer_reads_it_every_time(engine, monkeypatch) -> None:
    # a pointer changed within RACY_SECONDS could be rewritten in place with every stat field
    # unchanged (one tick of the file system's clock), so it is never remembered
    monkeypatch.setattr(layout_module, "RACY_SECONDS", 3600.0)
    layout = engine.registry.layout
    reads = _count_reads(monkeypatch, layout)
    for _ in range(3):
        assert layout.read_latest("BTCUSDT", "basic") == "2026-01-01_1h_v1"
    assert len(reads) == 3
