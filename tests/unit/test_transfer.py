"""Bundles as data (``registry.transfer``, ``writer.register_bundle_files``) and the checks a
Ray task makes on its node (``executors.check_node_versions``, ``ATB_RAY_RUNTIME_ENV``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import atb_strategies
from atb_strategies import executors
from atb_strategies.bundle.format import BundleMetadata, FeatureSchema, InputSpec, OutputSpec
from atb_strategies.bundle.loader import load_bundle_spec
from atb_strategies.evaluation.folds import make_folds
from atb_strategies.evaluation.walkforward import FoldResult, WalkForwardConfig, _register_fold
from atb_strategies.exceptions import ConfigurationError, RegistryError
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.manage import allocate_version
from atb_strategies.registry.transfer import (
    materialised,
    pack_versions,
    read_bundle_files,
    unpack,
)
from atb_strategies.registry.writer import register_bundle_files, write_bundle
from atb_strategies.sweep.cells import Cell
from atb_strategies.sweep.predictions import shipped_cell
from tests.conftest import RICH_FEATURES, linear_onnx

V1 = "2026-01-01_1h_v1"


def _bundle(root: Path, version: str = V1, seed: int = 0) -> Path:
    meta = BundleMetadata(
        symbol="BTCUSDT",
        model_type="basic",
        timeframe="1h",
        version=version,
        input=InputSpec("features", "float32", 16, 3),
        output=OutputSpec("log_return", 1, "prediction", {}, None),
        model_sha256=None,
        created_at="2026-01-01T00:00:00+00:00",
        framework="onnx-test",
        raw={"training": {"config": {"registry": "/somewhere/else"}, "fold": 3}},
    )
    schema = FeatureSchema(16, tuple(RICH_FEATURES[:3]))
    return write_bundle(root, meta, schema, linear_onnx(16, 3, seed=seed), promote=True)


def test_pack_then_unpack_elsewhere_gives_the_same_files(tmp_path):
    vdir = _bundle(tmp_path / "a")
    files = pack_versions(tmp_path / "a", [("BTCUSDT", "basic", V1)])
    assert set(files) == {f"BTCUSDT/basic/{V1}/{p.name}" for p in vdir.iterdir()}
    unpack(files, tmp_path / "b")
    copy = RegistryLayout(tmp_path / "b").version_dir("BTCUSDT", "basic", V1)
    assert read_bundle_files(copy) == read_bundle_files(vdir)
    load_bundle_spec(copy, identity=("BTCUSDT", "basic", V1))  # a valid bundle there


def test_unpack_refuses_paths_that_leave_the_registry(tmp_path):
    for rel in ("../x/y/z", "BTCUSDT/basic/../../../etc", "a/b", "BTCUSDT/basic/v1/.hidden"):
        with pytest.raises(RegistryError):
            unpack({rel: b"x"}, tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_materialised_writes_each_snapshot_once_per_process(tmp_path):
    _bundle(tmp_path / "a")
    files = pack_versions(tmp_path / "a", [("BTCUSDT", "basic", V1)])
    first = materialised(files)
    assert materialised(dict(files)) == first
    assert first != tmp_path / "a" and (first / "BTCUSDT" / "basic" / V1).is_dir()


def test_shipped_cell_points_its_registry_at_a_private_copy(tmp_path):
    root = str((tmp_path / "a").resolve())
    _bundle(Path(root))
    cell = Cell("ml_basic", "BTCUSDT", V1, {"registry": root}, {"timeframe": "1h"}, ("f",))
    files = pack_versions(root, [("BTCUSDT", "basic", V1)])
    moved = shipped_cell({"models": {root: files}}, cell)
    assert moved.params["registry"] != root
    assert moved.digest() == cell.digest()  # the registry's path is no part of a cell
    assert shipped_cell({"models": {}}, cell) is cell


def test_register_bundle_files_sets_the_version_and_edits_metadata(tmp_path):
    vdir = _bundle(tmp_path / "worker")
    files = read_bundle_files(vdir)
    root = tmp_path / "driver"
    version = allocate_version(RegistryLayout(root), "BTCUSDT", "basic", "1h")

    def here(meta):
        meta["training"]["config"]["registry"] = str(root)

    final = register_bundle_files(root, files, version=version, update=here)
    assert final == RegistryLayout(root).version_dir("BTCUSDT", "basic", version)
    meta = json.loads((final / "metadata.json").read_text())
    assert meta["version"] == version and meta["training"]["fold"] == 3
    assert meta["training"]["config"]["registry"] == str(root)
    assert (final / "model.onnx").read_bytes() == files["model.onnx"]
    with pytest.raises(RegistryError, match="already exists"):
        register_bundle_files(root, files, version=version)
    assert not list(root.glob(".staging-*"))


def test_register_bundle_files_refuses_an_incomplete_bundle_and_leaves_nothing(tmp_path):
    files = read_bundle_files(_bundle(tmp_path / "worker"))
    del files["feature_schema.json"]
    with pytest.raises(RegistryError, match="feature_schema.json"):
        register_bundle_files(tmp_path / "driver", files, version="2026-01-02_1h_v1")
    assert not (tmp_path / "driver" / "BTCUSDT").exists()


def test_a_fold_sent_back_is_registered_by_the_driver_or_reported_without_a_version(tmp_path):
    fold = make_folds(2000, train_bars=800, test_bars=200, embargo=50)[0]
    config = WalkForwardConfig(symbol="BTCUSDT", train_bars=800, test_bars=200, registry=tmp_path)
    files = read_bundle_files(_bundle(tmp_path / "worker"))
    done = _register_fold(FoldResult(fold, 0, bundle=dict(files)), config)
    assert done.error is None and done.bundle is None
    assert RegistryLayout(tmp_path).versions("BTCUSDT", "basic") == [done.version]
    meta = json.loads(
        (RegistryLayout(tmp_path).version_dir("BTCUSDT", "basic", done.version))
        .joinpath("metadata.json")
        .read_text()
    )
    assert meta["training"]["config"]["registry"] == str(tmp_path)
    broken = {k: v for k, v in files.items() if k != "model.onnx"}
    failed = _register_fold(FoldResult(fold, 1, bundle=broken), config)
    assert failed.version is None and "model" in failed.error
    assert RegistryLayout(tmp_path).versions("BTCUSDT", "basic") == [done.version]


def test_node_with_other_versions_is_refused_naming_both(monkeypatch):
    here = executors.node_versions()
    assert here["atb-strategies"] == atb_strategies.__version__
    executors.check_node_versions(here)
    driver = {**here, "onnxruntime": "0.0.1"}
    with pytest.raises(ConfigurationError) as e:
        executors.check_node_versions(driver)
    text = str(e.value)
    assert "onnxruntime 0.0.1" in text and f"onnxruntime {here['onnxruntime']}" in text
    assert "\n" not in text
    refused = executors._ray_task(lambda s, t: t, None, "x", driver)
    assert isinstance(refused, executors.NodeRefused)
    assert executors._ray_task(lambda s, t: t, None, "x", here) == "x"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_bad_runtime_env_variable_is_one_configuration_error(monkeypatch, text):
    monkeypatch.setenv(executors.RUNTIME_ENV_VAR, text)
    with pytest.raises(ConfigurationError, match=executors.RUNTIME_ENV_VAR):
        executors._runtime_env()
    monkeypatch.setenv(executors.RUNTIME_ENV_VAR, '{"py_modules": ["x"]}')
    assert executors._runtime_env() == {"py_modules": ["x"]}
