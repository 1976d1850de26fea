"""Registry: discovery without sessions, selection, caching, reload, errors that list options."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from atb_strategies.config import PredictionConfig
from atb_strategies.exceptions import ModelNotFoundError, RegistryError
from atb_strategies.prediction.models.registry import PredictionModelRegistry
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.registry import ModelRegistry
from tests.conftest import BundleFactory


@pytest.fixture
def populated(make_bundle: BundleFactory, tmp_path):
    make_bundle(version="2026-01-01_1h_v1", promote=False)
    make_bundle(version="2026-01-02_1h_v2", seed=1)
    make_bundle(version="2026-01-03_4h_v3", timeframe="4h", seed=2, promote=False)
    make_bundle(symbol="ETHUSDT", model_type="sentiment", version="2026-01-01_1h_v1")
    return ModelRegistry(tmp_path / "models")


def test_list_bundles_discovers_all_without_opening_sessions(populated: ModelRegistry) -> None:
    infos = populated.list_bundles()
    assert [i.key for i in infos] == [
        "BTCUSDT/basic@2026-01-01_1h_v1",
        "BTCUSDT/basic@2026-01-02_1h_v2",
        "BTCUSDT/basic@2026-01-03_4h_v3",
        "ETHUSDT/sentiment@2026-01-01_1h_v1",
    ]
    assert [i.is_latest for i in infos] == [False, True, False, True]
    assert infos[2].timeframe == "4h"
    assert infos[0].input_shape == (None, 16, 3)
    assert populated._cache == {}


def test_select_bundle_with_no_version_follows_latest(populated: ModelRegistry) -> None:
    bundle = populated.select_bundle(symbol="BTCUSDT", model_type="basic", timeframe="1h")
    assert bundle.key == "BTCUSDT/basic@2026-01-02_1h_v2"
    assert bundle.runner._session is not None
    assert bundle.metadata.timeframe == "1h"
    assert bundle.feature_schema.sequence_length == 16


def test_select_bundle_is_cached_per_version(populated: ModelRegistry) -> None:
    a = populated.select_bundle("BTCUSDT", "basic")
    b = populated.select_bundle("BTCUSDT", "basic", version="2026-01-02_1h_v2")
    c = populated.select_bundle("BTCUSDT", "basic", version="2026-01-01_1h_v1")
    assert a is b and a is not c
    assert len(populated._cache) == 2


def test_select_bundle_with_unknown_version_lists_existing(populated: ModelRegistry) -> None:
    with pytest.raises(
        ModelNotFoundError,
        match="Versions present: 2026-01-01_1h_v1, 2026-01-02_1h_v2, 2026-01-03_4h_v3",
    ):
        populated.select_bundle("BTCUSDT", "basic", version="2025-01-01_1h_v9")


def test_select_bundle_with_unknown_type_lists_types(populated: ModelRegistry) -> None:
    with pytest.raises(ModelNotFoundError, match="Types present for ETHUSDT: sentiment"):
        populated.select_bundle("ETHUSDT", "basic")


def test_select_bundle_with_unknown_symbol_lists_symbols(populated: ModelRegistry) -> None:
    with pytest.raises(ModelNotFoundError, match="Symbols present: BTCUSDT, ETHUSDT") as info:
        populated.select_bundle("SOLUSDT", "basic")
    assert isinstance(info.value, LookupError)


def test_select_bundle_with_wrong_timeframe_names_matching_versions(
    populated: ModelRegistry,
) -> None:
    with pytest.raises(ModelNotFoundError, match=r"1h model.*'4h'.*4h: 2026-01-03_4h_v3"):
        populated.select_bundle("BTCUSDT", "basic", timeframe="4h")
    assert populated.select_bundle("BTCUSDT", "basic", "4h", "2026-01-03_4h_v3").timeframe == "4h"


def test_select_bundle_without_latest_pointer_says_how_to_promote(
    make_bundle: BundleFactory, tmp_path
) -> None:
    make_bundle(promote=False)
    with pytest.raises(ModelNotFoundError, match="atb models promote BTCUSDT basic"):
        ModelRegistry(tmp_path / "models").select_bundle("BTCUSDT", "basic")


def test_select_bundle_with_path_traversal_names_is_refused(populated: ModelRegistry) -> None:
    for args in (("..", "basic"), ("BTCUSDT", "../ETHUSDT"), ("BTCUSDT", "basic", None, "../x")):
        with pytest.raises(RegistryError):
            populated.select_bundle(*args)


def test_reload_sees_new_latest_and_drops_cache(populated: ModelRegistry, tmp_path) -> None:
    first = populated.select_bundle("BTCUSDT", "basic")
    RegistryLayout(tmp_path / "models").write_latest("BTCUSDT", "basic", "2026-01-01_1h_v1")
    populated.reload()
    second = populated.select_bundle("BTCUSDT", "basic")
    assert second.version == "2026-01-01_1h_v1"
    x = np.zeros((16, 3), dtype=np.float32)
    assert first.runner.predict(x).model_key.endswith("v2")  # handed-out bundles keep working


def test_select_and_reload_from_many_threads_are_consistent(populated: ModelRegistry) -> None:
    errors: list[BaseException] = []
    keys: set[str] = set()

    def worker(i: int) -> None:
        try:
            for _ in range(20):
                if i % 3 == 0:
                    populated.reload()
                b = populated.select_bundle("BTCUSDT", "basic", "1h")
                keys.add(b.key)
                b.runner.predict(np.zeros((16, 3), dtype=np.float32))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert keys == {"BTCUSDT/basic@2026-01-02_1h_v2"}


def test_bundle_pickles_without_session_and_predicts_the_same(populated: ModelRegistry) -> None:
    bundle = populated.select_bundle("BTCUSDT", "basic")
    x = np.random.default_rng(0).random((16, 3)).astype(np.float32)
    clone = pickle.loads(pickle.dumps(bundle))
    assert clone.runner._session is None
    assert clone.runner.predict(x).raw == bundle.runner.predict(x).raw


def test_prediction_model_registry_uses_config_path_and_runner_options(populated, tmp_path) -> None:
    config = PredictionConfig(
        model_registry_path=tmp_path / "models", intra_op_num_threads=2, direction_threshold=0.01
    )
    registry = PredictionModelRegistry(config)
    bundle = registry.select_bundle(symbol="BTCUSDT", model_type="basic", timeframe="1h")
    assert bundle.runner.intra_op_num_threads == 2
    assert bundle.runner.direction_threshold == 0.01
    assert bundle.runner.session.get_session_options().intra_op_num_threads == 2
