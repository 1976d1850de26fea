"""Feature transforms and pipeline: batch equals streaming, causality, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atb_strategies.bundle.format import FeatureSchema, FeatureSpec
from atb_strategies.exceptions import CandleDataError, FeatureSchemaError
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.features.transforms import SERIES_TRANSFORMS, WINDOW_TRANSFORMS
from tests.conftest import RICH_FEATURES, synthetic_candles


def _columns(frame: pd.DataFrame, pipe: FeaturePipeline) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(dtype=np.float64) for c in pipe.columns}


def _stream_windows(frame: pd.DataFrame, pipe: FeaturePipeline) -> dict[int, np.ndarray]:
    stream = pipe.stream()
    out = {}
    for i, row in enumerate(frame[pipe.columns].to_numpy()):
        stream.update(row)
        if stream.ready:
            out[i] = stream.window()
    return out


def test_rich_schema_covers_every_transform() -> None:
    used = {step["op"] for f in RICH_FEATURES for step in f.transforms}
    assert used >= set(SERIES_TRANSFORMS) - {"identity"}
    assert used >= set(WINDOW_TRANSFORMS)


@pytest.mark.parametrize("feature", RICH_FEATURES, ids=lambda f: f.name)
def test_pipeline_with_each_transform_streaming_equals_batch(feature: FeatureSpec) -> None:
    frame = synthetic_candles(400, seed=3)
    pipe = FeaturePipeline(FeatureSchema(24, (feature,)))
    batch = pipe.batch_windows(_columns(frame, pipe))
    streamed = _stream_windows(frame, pipe)
    assert list(streamed) == list(batch.end_index)
    diff = max(np.abs(streamed[e] - batch.windows[i]).max() for i, e in enumerate(batch.end_index))
    assert diff <= 1e-9


def test_pipeline_with_rich_schema_streaming_context_equals_batch() -> None:
    frame = synthetic_candles(300, seed=5)
    pipe = FeaturePipeline(FeatureSchema(32, RICH_FEATURES))
    batch = pipe.batch_windows(_columns(frame, pipe))
    stream = pipe.stream()
    rows = frame[pipe.columns].to_numpy()
    for i, row in enumerate(rows):
        stream.update(row)
        if stream.ready:
            j = i - int(batch.end_index[0])
            ctx = stream.context()
            assert ctx == batch.context_at(j)


def test_pipeline_with_truncated_history_never_changes_earlier_windows() -> None:
    frame = synthetic_candles(320, seed=11)
    pipe = FeaturePipeline(FeatureSchema(20, RICH_FEATURES))
    full = pipe.batch_windows(_columns(frame, pipe))
    for cut in (pipe.min_bars, 150, 251, 319):
        part = pipe.batch_windows(_columns(frame.iloc[: cut + 1], pipe))
        n = len(part.end_index)
        assert part.end_index[-1] == cut
        np.testing.assert_array_equal(part.windows, full.windows[:n])


def test_pipeline_with_changed_future_bar_keeps_past_windows() -> None:
    frame = synthetic_candles(260, seed=2)
    pipe = FeaturePipeline(FeatureSchema(20, RICH_FEATURES))
    base = pipe.batch_windows(_columns(frame, pipe))
    shocked = frame.copy()
    shocked.iloc[200:, :4] *= 3.0
    moved = pipe.batch_windows(_columns(shocked, pipe))
    before = base.end_index < 200
    np.testing.assert_array_equal(base.windows[before], moved.windows[before])
    assert not np.array_equal(base.windows[~before], moved.windows[~before])


def test_window_expanding_minmax_matches_reference_definition() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(100, 5, 50)
    pipe = FeaturePipeline(
        FeatureSchema(10, (FeatureSpec("c", ("close",), ({"op": "window_expanding_minmax"},)),))
    )
    win = pipe.batch_windows({"close": x}).windows[7][:, 0]
    raw = x[7:17]
    expected = [
        0.5
        if raw[: k + 1].max() == raw[: k + 1].min()
        else (raw[k] - raw[: k + 1].min()) / (raw[: k + 1].max() - raw[: k + 1].min())
        for k in range(10)
    ]
    np.testing.assert_allclose(win, expected, rtol=0, atol=1e-15)
    assert win[0] == 0.5


def test_rsi_with_known_series_matches_wilder_definition() -> None:
    x = np.array(
        [
            44.34,
            44.09,
            44.15,
            43.61,
            44.33,
            44.83,
            45.10,
            45.42,
            45.84,
            46.08,
            45.89,
            46.03,
            45.61,
            46.28,
            46.28,
            46.00,
            46.03,
            46.41,
            46.22,
            45.64,
        ]
    )
    rsi = SERIES_TRANSFORMS["rsi"](period=14).batch(x)
    assert np.isnan(rsi[:14]).all()
    # Wilder's worked example: first RSI 70.53, then 66.32 (rounded to 2 decimals).
    assert rsi[14] == pytest.approx(70.46, abs=0.1)
    d = np.diff(x)
    ag = np.mean(np.clip(d[:14], 0, None))
    al = np.mean(np.clip(-d[:14], 0, None))
    ag = (ag * 13 + max(d[14], 0)) / 14
    al = (al * 13 + max(-d[14], 0)) / 14
    assert rsi[15] == pytest.approx(100 - 100 / (1 + ag / al), rel=1e-12)


def test_ema_matches_backtrader_seeding_convention() -> None:
    x = np.arange(1.0, 31.0)
    ema = SERIES_TRANSFORMS["ema"](period=5).batch(x)
    assert np.isnan(ema[:4]).all()
    assert ema[4] == pytest.approx(3.0)
    assert ema[5] == pytest.approx(6 * (2 / 6) + 3.0 * (4 / 6))


def test_pipeline_with_nan_inside_window_raises_naming_bar() -> None:
    frame = synthetic_candles(200, seed=1)
    frame.iloc[150, frame.columns.get_loc("volume")] = 0.0  # log(0) = -inf
    spec = FeatureSpec("logvol", ("volume",), ({"op": "log"},))
    pipe = FeaturePipeline(FeatureSchema(10, (spec,)))
    with pytest.raises(CandleDataError, match=r"'logvol' is -inf at bar 150") as info:
        pipe.batch_windows(_columns(frame, pipe))
    assert info.value.row == 150
    stream = pipe.stream()
    with pytest.raises(CandleDataError, match="logvol"):
        for i, row in enumerate(frame[pipe.columns].to_numpy()):
            stream.update(row, label=frame.index[i])


def test_pipeline_with_missing_column_raises_feature_schema_error() -> None:
    spec = FeatureSpec("s", ("sentiment",), ())
    pipe = FeaturePipeline(FeatureSchema(5, (spec,)))
    with pytest.raises(FeatureSchemaError, match="sentiment"):
        pipe.batch_windows({"close": np.ones(10)})


def test_stream_with_too_few_bars_raises_and_reports_need() -> None:
    pipe = FeaturePipeline(FeatureSchema(10, RICH_FEATURES[:2]))
    stream = pipe.stream()
    stream.update([100.0, 1.0])
    assert not stream.ready
    with pytest.raises(CandleDataError, match="needs 11"):
        stream.window()


def test_batch_without_window_transforms_returns_strided_view() -> None:
    spec = FeatureSpec("lr", ("close",), ({"op": "log_return"},))
    pipe = FeaturePipeline(FeatureSchema(8, (spec,)))
    frame = synthetic_candles(50)
    batch = pipe.batch_windows(_columns(frame, pipe))
    assert not batch.windows.flags.owndata
    assert batch.windows.shape == (50 - 9 + 1, 8, 1)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"op": "nope"}], "unknown op"),
        ([{"op": "sma"}], "needs parameter 'period'"),
        ([{"op": "sma", "period": 0}], "must be >= 1"),
        ([{"op": "sma", "period": 2.5}], "must be an integer"),
        ([{"op": "window_minmax"}, {"op": "sma", "period": 3}], "must be the last step"),
        ([{"op": "ratio"}], "takes 2 source column"),
        ([{"op": "zscore", "mean": 0.0, "std": 0.0}], "must be > 0"),
        ([{"op": "ema", "period": 3, "alpha": 0.1}], "unknown parameter"),
    ],
)
def test_feature_spec_with_bad_transforms_raises(steps: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureSpec("f", ("close",), tuple(steps)).build()


def test_schema_warmup_is_longest_feature_chain() -> None:
    schema = FeatureSchema(10, RICH_FEATURES)
    # sma(7) -> 6 bars, rsi(14) -> 14, ema(20) -> 19, rolling_zscore(24) -> 23, pct(4) -> 4
    assert schema.warmup_bars == 23
    assert schema.min_bars == 33
