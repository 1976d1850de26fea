"""The per-bar streaming shortcuts (issue 20 item 3) give exactly what the code they replaced
gave: the bar's close time without numpy, each window written straight into a float32 batch,
the batch's price context reduced at once, the rows read with ``tolist()``, and an error label
computed only when an error is raised."""

from __future__ import annotations

import numpy as np
import pytest

from atb_strategies.bundle.format import FeatureSchema
from atb_strategies.exceptions import CandleDataError
from atb_strategies.features.pipeline import FeaturePipeline, PriceContext
from atb_strategies.indicators.batching import PredictionRow, gather, rows_of
from atb_strategies.indicators.prediction import _EPOCH_DAYS, _ns_of, _to_ns
from atb_strategies.inference.runner import PredictionBatch
from tests.conftest import RICH_FEATURES, synthetic_candles


def test_ns_of_one_bar_equals_to_ns_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    hours = _EPOCH_DAYS + np.arange(0, 24 * 365 * 60, 7, dtype=np.float64) / 24.0  # 1970-2030
    jitter = _EPOCH_DAYS + rng.uniform(0, 60 * 365, 20_000)  # any time, sub-millisecond parts
    # exact half milliseconds: the rounding mode decides them (both round half to even)
    halves = _EPOCH_DAYS + (np.arange(1, 4001, dtype=np.float64) + 0.5) / 86_400_000.0
    days = np.concatenate([hours, jitter, halves])
    expected = _to_ns(days)
    got = np.array([_ns_of(float(d)) for d in days], dtype=np.int64)
    np.testing.assert_array_equal(got, expected)
    assert all(type(_ns_of(float(d))) is int for d in days[:10])


def _streams(n_streams: int, bars: int, seq: int = 12) -> list:
    """Streams of one rich pipeline (window transforms, recursive ones), fed different
    markets and lengths."""
    pipe = FeaturePipeline(FeatureSchema(seq, RICH_FEATURES))
    streams = []
    for k in range(n_streams):
        frame = synthetic_candles(bars + 7 * k, seed=20 + k)
        stream = pipe.stream()
        for row in frame[pipe.columns].to_numpy():
            stream.update(row)
        streams.append(stream)
    return streams


def test_window_into_equals_window_cast_bit_for_bit_at_every_bar() -> None:
    pipe = FeaturePipeline(FeatureSchema(16, RICH_FEATURES))
    assert any(f.window is not None for f in pipe._features)  # grouped window transforms run
    frame = synthetic_candles(pipe.min_bars + 60, seed=9)
    stream = pipe.stream()
    checked = 0
    for row in frame[pipe.columns].to_numpy():
        stream.update(row)
        if not stream.ready:
            with pytest.raises(CandleDataError, match="bar\\(s\\) seen"):
                stream.window_into(np.empty(stream.window_shape, dtype=np.float32))
            continue
        window = stream.window()
        assert window.shape == stream.window_shape and window.dtype == np.float64
        out32 = np.full(stream.window_shape, np.nan, dtype=np.float32)
        stream.window_into(out32)
        np.testing.assert_array_equal(out32, window.astype(np.float32))
        out64 = np.full(stream.window_shape, np.nan)
        stream.window_into(out64)
        np.testing.assert_array_equal(out64, window)
        checked += 1
    assert checked == 61


def test_closes_are_the_newest_windows_closes_read_only() -> None:
    pipe = FeaturePipeline(FeatureSchema(10, RICH_FEATURES[:3]))
    frame = synthetic_candles(pipe.min_bars + 30, seed=4)
    batch = pipe.batch_windows({c: frame[c].to_numpy(np.float64) for c in pipe.columns})
    stream = pipe.stream()
    close = frame["close"].to_numpy(np.float64)
    for i, row in enumerate(frame[pipe.columns].to_numpy()):
        stream.update(row)
        if not stream.ready:
            continue
        closes = stream.closes()
        np.testing.assert_array_equal(closes, close[i - 9 : i + 1])
        assert not closes.flags.writeable
        assert stream.context() == batch.context_at(i - int(batch.end_index[0]))


def test_gather_equals_stacked_windows_and_one_context_per_stream() -> None:
    streams = _streams(5, 120)
    windows, context = gather(streams)
    expected = np.stack([s.window() for s in streams]).astype(np.float32)
    assert windows.dtype == np.float32
    np.testing.assert_array_equal(windows, expected)
    contexts = [s.context() for s in streams]
    assert isinstance(context, PriceContext)
    for name in ("reference_close", "window_close_min", "window_close_max"):
        got = getattr(context, name)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, [getattr(c, name) for c in contexts])
    # the closes differ between markets: a mix-up of rows would show
    assert len(set(context.reference_close.tolist())) == 5


def test_gather_of_one_stream_equals_its_window() -> None:
    (stream,) = _streams(1, 90)
    windows, context = gather([stream])
    np.testing.assert_array_equal(windows[0], stream.window().astype(np.float32))
    assert context.reference_close.tolist() == [stream.context().reference_close]


def test_rows_of_equals_the_elementwise_conversions() -> None:
    reasons = np.array([None, "implausible_output", None], dtype=object)
    batch = PredictionBatch(
        price=np.array([101.25, np.nan, 99.5]),
        confidence=np.array([0.25, np.nan, 0.75], dtype=np.float32),
        direction=np.array([1, 0, -1], dtype=np.int64),
        raw=np.zeros(3),
        predicted_return=np.array([0.0125, np.nan, -0.005]),
        model_key="X/basic@v1",
        inference_time=0.0,
        no_prediction=reasons,
    )
    rows = rows_of(batch)
    for i, row in enumerate(rows):
        expected = PredictionRow(
            float(batch.price[i]),
            float(batch.predicted_return[i]),
            float(batch.confidence[i]),
            int(batch.direction[i]),
            reasons[i],
        )
        np.testing.assert_array_equal(np.array(row[:4], dtype=float), np.array(expected[:4]))
        assert row.no_prediction == expected.no_prediction
        assert type(row.price) is float and type(row.direction) is int
    assert rows[1].no_prediction == "implausible_output"
    accepted = PredictionBatch(**{**batch.__dict__, "no_prediction": None})
    assert [r.no_prediction for r in rows_of(accepted)] == [None] * 3


def test_update_computes_a_callable_label_only_for_the_error() -> None:
    pipe = FeaturePipeline(FeatureSchema(4, RICH_FEATURES[1:3]))  # log return, range
    stream = pipe.stream()
    calls: list[int] = []

    def label() -> str:
        calls.append(1)
        return "the bar closing at 2024-01-02 05:00"

    frame = synthetic_candles(pipe.min_bars + 5, seed=2)
    for row in frame[pipe.columns].to_numpy():
        stream.update(row, label=label)
    assert stream.ready and calls == []  # never called on good bars
    bad = frame[pipe.columns].to_numpy()[-1].copy()
    bad[pipe.columns.index("close")] = 0.0  # log(0 / close): -inf
    with pytest.raises(CandleDataError, match="at bar the bar closing at 2024-01-02 05:00") as e:
        stream.update(bad, label=label)
    assert calls == [1]
    assert e.value.row == "the bar closing at 2024-01-02 05:00"
    # without a label the error still names the bar by its index
    plain = pipe.stream()
    for row in frame[pipe.columns].to_numpy()[:7]:
        plain.update(row)
    with pytest.raises(CandleDataError, match="at bar 7 "):
        plain.update(bad)
