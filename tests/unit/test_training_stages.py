"""The training stages one by one, on tiny inputs (no fitting): family registry, data slice,
gap dropping, parity gate, timings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atb_strategies.bundle.format import FeatureSchema, FeatureSpec
from atb_strategies.exceptions import ConfigurationError, TrainingError
from atb_strategies.training import family as family_module
from atb_strategies.training.config import TrainingConfig
from atb_strategies.training.data import slice_period
from atb_strategies.training.dataset import Part
from atb_strategies.training.family import ModelFamily, model_family, register_family
from atb_strategies.training.gates import check_parity
from atb_strategies.training.recipes import recipe_for, source_columns
from atb_strategies.training.split import drop_gap_samples, time_split
from atb_strategies.training.timing import Stopwatch


class ConstantFamily(ModelFamily[float]):
    """A third family living outside the package: predicts the mean train target."""

    name = "constant"
    framework_file = "constant.txt"
    framework = "none"

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
    ) -> float:
        return float(np.mean(y))

    def predict(self, fitted: float, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), fitted)

    def to_onnx(self, fitted: float, sequence_length: int, n_features: int) -> bytes:
        return b""

    def serialize(self, fitted: float) -> bytes:
        return repr(fitted).encode()


@pytest.fixture
def families(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A private copy of the family registry, so registrations here do not leak."""
    copy = dict(family_module.FAMILIES)
    monkeypatch.setattr(family_module, "FAMILIES", copy)
    return copy


def test_model_family_with_unknown_name_lists_registered_architectures() -> None:
    message = (
        r"Unknown architecture 'x'; choose 'mlp', 'gru', 'ridge', 'lightgbm', 'mlp_ensemble' "
        r"or 'auto'\.$"
    )
    with pytest.raises(ConfigurationError, match=message):
        model_family("x")


def test_model_family_with_mlp_returns_model_family_implementation() -> None:
    mlp = model_family("mlp")
    assert isinstance(mlp, ModelFamily)
    assert (mlp.name, mlp.framework_file) == ("mlp", "model.pkl")
    assert mlp.framework.startswith("scikit-learn ")


def test_register_family_with_new_module_makes_it_an_architecture(families: dict) -> None:
    register_family("constant", __name__, "ConstantFamily")

    found = model_family("constant")

    assert isinstance(found, ConstantFamily)
    assert found.fit(None, np.array([1.0, 3.0]), None, None, seed=0, epochs=1) == 2.0
    with pytest.raises(ConfigurationError, match=r"'mlp_ensemble', 'auto' or 'constant'"):
        model_family("x")


def test_model_family_with_missing_dependency_names_it(families: dict) -> None:
    register_family(
        "needy", __name__, "ConstantFamily", requires=("no_such_module_zz",), missing="({missing})"
    )
    with pytest.raises(ConfigurationError, match=r"\(no_such_module_zz\)"):
        model_family("needy")


def test_model_family_subclass_without_a_method_cannot_be_created() -> None:
    class Partial(ModelFamily[float]):
        name = "partial"
        framework_file = "p.bin"

    with pytest.raises(TypeError):
        Partial()


def test_source_columns_with_sentiment_recipe_appends_sentiment_after_ohlcv() -> None:
    assert source_columns(recipe_for("basic")) == ["open", "high", "low", "close", "volume"]
    assert source_columns(recipe_for("sentiment"))[5:] == ["sentiment"]


def test_slice_period_with_end_date_includes_that_whole_day() -> None:
    frame = pd.DataFrame({"v": range(72)}, index=pd.date_range("2024-01-01", periods=72, freq="h"))

    day = slice_period(frame, "2024-01-02", "2024-01-02")
    to_hour = slice_period(frame, None, "2024-01-02 05:00")

    assert (day.index[0], day.index[-1], len(day)) == (
        pd.Timestamp("2024-01-02 00:00"),
        pd.Timestamp("2024-01-02 23:00"),
        24,
    )
    assert to_hour.index[-1] == pd.Timestamp("2024-01-02 05:00") and len(to_hour) == 30
    assert slice_period(frame, None, None) is frame


def test_time_split_with_config_fractions_sets_bar_boundaries() -> None:
    split = time_split(1000, TrainingConfig("X", train_fraction=0.6, val_fraction=0.2))
    assert (split.train_end, split.val_end, split.n_bars) == (600, 800, 1000)


def _part(frame: pd.DataFrame, ends: np.ndarray) -> Part:
    close = frame["close"].to_numpy()
    return Part(
        np.zeros((len(ends), 2, 1), np.float32),
        np.zeros(len(ends)),
        ends,
        close[ends],
        close[ends + 1],
        frame.index[ends],
    )


def test_drop_gap_samples_with_gap_removes_samples_whose_bars_span_it() -> None:
    index = pd.date_range("2024-01-01", periods=40, freq="h").delete(range(20, 23))  # gap 19|20
    frame = pd.DataFrame({"close": np.arange(1.0, 38.0)}, index=index)
    schema = FeatureSchema(2, (FeatureSpec("r", ("close",), ({"op": "log_return"},)),))
    ends = np.arange(schema.min_bars - 1, len(frame) - 1)
    parts = {"train": _part(frame, ends)}

    kept = drop_gap_samples(parts, frame, schema, "1h", 1)["train"]

    lo, hi = ends - (schema.min_bars - 1), ends + 1
    clean = ends[~((lo <= 19) & (hi > 19))]
    np.testing.assert_array_equal(kept.end_index, clean)
    assert len(kept) == len(ends) - schema.min_bars
    assert kept.stamps.equals(frame.index[clean])
    assert kept.dropped_for_gaps == schema.min_bars  # recorded in metrics.json and lineage
    without_gap = frame.iloc[:19]
    short = {"train": _part(without_gap, np.arange(schema.min_bars - 1, 18))}
    assert drop_gap_samples(short, without_gap, schema, "1h", 1) is short


def test_check_parity_above_tolerance_raises_and_below_returns_max_difference() -> None:
    framework = np.array([0.1, 0.2, 0.3])
    onnx = framework + np.array([0.0, 1e-6, -2e-6])

    assert check_parity(framework, onnx, 1e-5) == pytest.approx(2e-6)
    with pytest.raises(TrainingError, match="not registered"):
        check_parity(framework, onnx, 1e-7)


def test_stopwatch_with_failing_stage_records_only_finished_stages_then_total() -> None:
    clock = Stopwatch()
    with clock.measure("fit_seconds"):
        pass
    with pytest.raises(RuntimeError), clock.measure("backtest_seconds"):
        raise RuntimeError("stage failed")

    timings = clock.finish()

    assert list(timings) == ["fit_seconds", "total_seconds"]
    assert 0 <= timings["fit_seconds"] <= timings["total_seconds"]


def test_evaluate_predictions_with_horizon_reports_drift_per_bar_and_per_horizon() -> None:
    from atb_strategies.training.evaluate import evaluate_predictions

    close = np.array([100.0, 101.0, 102.0, 103.0])
    out = evaluate_predictions(np.zeros(4), close, close * 1.01, 0.006, horizon=3)
    assert out["baseline_drift"]["drift_per_horizon"] == pytest.approx(0.006)
    assert out["baseline_drift"]["drift_per_bar"] == pytest.approx(0.002)


def test_mlp_fit_logs_train_and_validation_loss_as_the_same_measure(caplog) -> None:
    from atb_strategies.training.mlp import ALPHAS, MlpFamily

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4, 2)).astype(np.float32)
    y = X[:, -1, 0].astype(np.float64) * 0.01 + rng.standard_normal(300) * 0.001
    with caplog.at_level("INFO"):
        MlpFamily().fit(X, y, X, y, seed=0, epochs=2)  # validation part = training part
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2 * len(ALPHAS)  # two epochs at each L2 strength tried
    for line in lines:
        train = float(line.split("train loss ")[1].split(",")[0])
        val = float(line.split("validation loss ")[1].split(" ")[0])
        assert train == val


@pytest.mark.parametrize(
    ("end", "last"),
    [("2024-01-02", "2024-01-02 23:00:00"), ("2024-01-02T00:00", "2024-01-02 00:00:00")],
)
def test_period_end_means_the_whole_day_for_a_date_and_the_instant_for_a_time(end, last):
    from atb_strategies.data.periods import period_end

    frame = pd.DataFrame({"close": 1.0}, index=pd.date_range("2024-01-01", periods=72, freq="h"))
    assert str(slice_period(frame, None, end).index[-1]) == last
    assert str(frame.loc[: period_end(end)].index[-1]) == last


def test_translate_with_invalid_symbol_on_a_read_gives_advice_for_that_call() -> None:
    import ccxt

    from atb_strategies.exchange.errors import translate

    read = translate(ccxt.BadSymbol('{"code":-1121,"msg":"Invalid symbol."}'), "fetch_ohlcv(X)")
    assert "order size" not in str(read) and "Check the symbol" in str(read)
    order = translate(ccxt.InvalidOrder("bad"), "binance.create_order(BTC/USDT)")
    assert "order size and price" in str(order)
