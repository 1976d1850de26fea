"""ONNX runner: input checks, decoding, batch == single, copy and pickle."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle

import numpy as np
import pytest

from atb_strategies.bundle.format import OutputSpec
from atb_strategies.exceptions import BundleError, InferenceError
from atb_strategies.features.pipeline import PriceContext
from atb_strategies.inference.decode import decode
from atb_strategies.registry.registry import ModelRegistry
from tests.conftest import BundleFactory, linear_onnx


def _runner(make_bundle: BundleFactory, tmp_path, **kw):
    make_bundle(**kw)
    return ModelRegistry(tmp_path / "models").select_bundle("BTCUSDT", "basic").runner


def test_predict_with_float64_features_raises_with_fix(make_bundle, tmp_path) -> None:
    runner = _runner(make_bundle, tmp_path)
    with pytest.raises(InferenceError, match=r"dtype float64.*astype\(np.float32\)"):
        runner.predict(np.zeros((16, 3)))


@pytest.mark.parametrize("shape", [(16,), (15, 3), (16, 4), (1, 16, 3)])
def test_predict_with_wrong_shape_raises(make_bundle, tmp_path, shape) -> None:
    runner = _runner(make_bundle, tmp_path)
    with pytest.raises(InferenceError, match=r"expected \(16, 3\)"):
        runner.predict(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_predict_with_nonfinite_raises_naming_index(make_bundle, tmp_path, bad) -> None:
    runner = _runner(make_bundle, tmp_path)
    x = np.zeros((16, 3), dtype=np.float32)
    x[7, 2] = bad
    with pytest.raises(InferenceError, match=r"index \(7, 2\)"):
        runner.predict(x)
    with pytest.raises(InferenceError, match=r"index \(1, 7, 2\)"):
        runner.predict_batch(np.stack([np.zeros_like(x), x]))


def test_predict_batch_equals_single_predictions(make_bundle, tmp_path) -> None:
    runner = _runner(make_bundle, tmp_path)
    rng = np.random.default_rng(1)
    windows = rng.random((37, 16, 3)).astype(np.float32)
    closes = rng.uniform(90, 110, 37)
    ctx = PriceContext(closes, closes * 0.9, closes * 1.1)
    batch = runner.predict_batch(windows, ctx, chunk_size=8)
    for i in range(37):
        one = runner.predict(windows[i], PriceContext(closes[i], closes[i] * 0.9, closes[i] * 1.1))
        assert one.raw == pytest.approx(float(batch.raw[i]), abs=1e-6)
        assert one.price == pytest.approx(float(batch.price[i]), rel=1e-6)
        assert one.direction == batch.direction[i]


def test_predict_without_context_for_window_target_gives_raw_only(make_bundle, tmp_path) -> None:
    runner = _runner(make_bundle, tmp_path, target="close_window_minmax")
    pred = runner.predict(np.random.default_rng(0).random((16, 3)).astype(np.float32))
    assert isinstance(pred.raw, float)
    assert pred.price is None and pred.predicted_return is None
    assert pred.direction == 0 and pred.confidence == 0.0
    assert pred.reference_close is None
    assert pred.model_key == pred.model_name == "BTCUSDT/basic@2026-01-01_1h_v1"


@pytest.mark.parametrize(
    ("target", "to_return"),
    [("log_return", np.expm1), ("simple_return", lambda r: r)],
)
def test_predict_without_context_for_return_target_gives_return_direction_confidence(
    make_bundle, tmp_path, target, to_return
) -> None:
    runner = _runner(make_bundle, tmp_path, target=target)
    rng = np.random.default_rng(4)
    seen = set()
    for _ in range(20):
        pred = runner.predict(rng.random((16, 3)).astype(np.float32))
        expected = float(to_return(np.float64(pred.raw)))
        assert pred.price is None  # a price needs the decision bar's close
        assert pred.predicted_return == expected
        assert pred.direction == int(np.sign(expected))
        assert pred.confidence == min(1.0, abs(expected) / 0.01)
        seen.add(pred.direction)
    assert seen == {-1, 1}  # both signs were exercised


@pytest.mark.parametrize("target", ["log_return", "simple_return"])
def test_predict_for_return_target_gives_same_return_with_and_without_context(
    make_bundle, tmp_path, target
) -> None:
    runner = _runner(make_bundle, tmp_path, target=target)
    windows = np.random.default_rng(5).random((12, 16, 3)).astype(np.float32)
    closes = np.linspace(90.0, 110.0, 12)
    bare = runner.predict_batch(windows)
    full = runner.predict_batch(windows, PriceContext(closes, closes * 0.9, closes * 1.1))
    assert np.isnan(bare.price).all()
    np.testing.assert_array_equal(bare.predicted_return, full.predicted_return)
    np.testing.assert_array_equal(bare.direction, full.direction)
    np.testing.assert_array_equal(bare.confidence, full.confidence)
    np.testing.assert_allclose(full.price, closes * (1 + full.predicted_return), rtol=1e-12)
    for i in (0, 11):
        one = runner.predict(windows[i])
        assert one.predicted_return == bare.predicted_return[i]
        assert (one.direction, one.confidence) == (bare.direction[i], bare.confidence[i])


def _spy_batches(runner, monkeypatch) -> list[int]:
    """Record the batch size of every ``session.run`` the runner makes."""
    sizes: list[int] = []
    run_raw = runner.run_raw

    def spy(x: np.ndarray) -> np.ndarray:
        sizes.append(x.shape[0])
        return run_raw(x)

    monkeypatch.setattr(runner, "run_raw", spy)
    return sizes


@pytest.mark.parametrize(("n", "chunk", "expected"), [(1, 4096, [2]), (9, 4, [4, 4, 2])])
def test_predict_batch_with_batch_parity_never_runs_a_batch_of_one(
    make_bundle, tmp_path, monkeypatch, n, chunk, expected
) -> None:
    runner = _runner(make_bundle, tmp_path)
    windows = np.random.default_rng(6).random((n, 16, 3)).astype(np.float32)
    sizes = _spy_batches(runner, monkeypatch)
    batch = runner.predict_batch(windows, chunk_size=chunk)
    assert sizes == expected
    assert batch.raw.shape == (n,)
    assert batch.raw[-1] == runner.predict(windows[-1]).raw  # both take the batched kernels
    assert sizes[-1] == 2

    sizes.clear()
    runner.batch_parity = False
    runner.predict_batch(windows, chunk_size=chunk)
    runner.predict(windows[-1])
    assert sizes == [*expected[:-1], expected[-1] // 2, 1]


def test_runner_survives_pickle_and_copy_without_pickling_session(make_bundle, tmp_path) -> None:
    runner = _runner(make_bundle, tmp_path)
    x = np.random.default_rng(0).random((16, 3)).astype(np.float32)
    before = runner.predict(x).raw
    assert runner._session is not None
    data = pickle.dumps(runner)
    assert b"InferenceSession" not in data
    for clone in (pickle.loads(data), copy.copy(runner), copy.deepcopy(runner)):
        assert clone._session is None
        assert clone.predict(x).raw == before
    assert runner._session is not None


def _swap_model(directory, data: bytes) -> None:
    """Replace model.onnx behind the writer's back, keeping the checksum consistent."""
    (directory / "model.onnx").write_bytes(data)
    meta = json.loads((directory / "metadata.json").read_text())
    meta["model_sha256"] = hashlib.sha256(data).hexdigest()
    (directory / "metadata.json").write_text(json.dumps(meta))


def test_runner_with_model_shape_contradicting_schema_fails_on_select(
    make_bundle, tmp_path
) -> None:
    _swap_model(make_bundle(), linear_onnx(20, 3))
    with pytest.raises(BundleError, match=r"shape \['batch', 20, 3\].*\[batch, 16, 3\]") as info:
        ModelRegistry(tmp_path / "models").select_bundle("BTCUSDT", "basic")
    assert info.value.field == "input.shape"


def test_runner_with_corrupt_onnx_fails_on_select(make_bundle, tmp_path) -> None:
    _swap_model(make_bundle(), b"this is not an onnx model")
    with pytest.raises(BundleError, match="could not be loaded by ONNX Runtime"):
        ModelRegistry(tmp_path / "models").select_bundle("BTCUSDT", "basic")


def test_class_probability_bundle_decodes_direction_and_confidence(make_bundle, tmp_path) -> None:
    runner = _runner(
        make_bundle, tmp_path, target="class_probabilities", classes=("down", "flat", "up")
    )
    windows = np.random.default_rng(3).random((20, 16, 3)).astype(np.float32)
    batch = runner.predict_batch(windows)
    assert batch.raw.shape == (20, 3)
    np.testing.assert_allclose(batch.raw.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(batch.direction, np.array([-1, 0, 1])[batch.raw.argmax(1)])
    np.testing.assert_allclose(batch.confidence, batch.raw.max(axis=1), rtol=1e-6)
    assert np.isnan(batch.price).all()


@pytest.mark.parametrize(
    ("spec", "raw", "ctx", "price"),
    [
        (OutputSpec("close"), 105.0, PriceContext(100.0, 90.0, 110.0), 105.0),
        (OutputSpec("close_window_minmax"), 0.25, PriceContext(100.0, 90.0, 110.0), 95.0),
        (OutputSpec("close_window_minmax"), 0.9, PriceContext(100.0, 100.0, 100.0), 100.0),
        (OutputSpec("log_return"), np.log(1.02), PriceContext(100.0, 90.0, 110.0), 102.0),
        (OutputSpec("simple_return"), -0.03, PriceContext(100.0, 90.0, 110.0), 97.0),
        (OutputSpec("close_zscore", params={"mean": 100.0, "std": 10.0}), 0.5, None, 105.0),
    ],
)
def test_decode_each_target_gives_price(spec, raw, ctx, price) -> None:
    d = decode(spec, np.array([raw], dtype=np.float32), ctx)
    assert d.price[0] == pytest.approx(price, rel=1e-6)


def test_decode_confidence_and_direction_follow_predicted_return() -> None:
    spec = OutputSpec("simple_return", confidence_return_scale=0.02)
    ctx = PriceContext(np.full(4, 100.0), np.full(4, 90.0), np.full(4, 110.0))
    d = decode(spec, np.array([0.01, -0.05, 0.0005, 0.0]), ctx, direction_threshold=0.001)
    np.testing.assert_array_equal(d.direction, [1, -1, 0, 0])
    np.testing.assert_allclose(d.confidence, [0.5, 1.0, 0.025, 0.0])
