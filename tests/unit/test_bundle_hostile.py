"""Hostile bundles fail closed: one broken version is reported invalid with its reason, the
others keep working, and nothing hangs, reads without bound or escapes the version folder."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from atb_strategies.bundle.jsonio import MAX_DEPTH, read_json
from atb_strategies.bundle.lineage import training_period
from atb_strategies.bundle.loader import load_bundle_spec, sha256_of
from atb_strategies.bundle.safeio import MAX_BYTES
from atb_strategies.exceptions import BundleError, ModelNotFoundError, RegistryError
from atb_strategies.inference.certificate import (
    CERTIFICATE_FILE,
    certificate_bytes,
    verify_certificate,
)
from atb_strategies.registry import manage
from atb_strategies.registry.asof import asof_schedule
from atb_strategies.registry.layout import RegistryLayout, check_name
from atb_strategies.registry.registry import ModelRegistry
from tests.conftest import RICH_FEATURES, BundleFactory

V1 = "2026-01-01_1h_v1"
V2 = "2026-01-02_1h_v2"
KEY1 = f"BTCUSDT/basic@{V1}"
KEY2 = f"BTCUSDT/basic@{V2}"


@pytest.fixture
def root(make_bundle: BundleFactory, tmp_path: Path) -> Path:
    """BTCUSDT/basic: V1 (the one the tests break) and V2 (latest, must keep working)."""
    make_bundle(version=V1, promote=False)
    make_bundle(version=V2, seed=1)
    return tmp_path / "models"


def vdir(root: Path, version: str = V1) -> Path:
    return root / "BTCUSDT" / "basic" / version


def edit_metadata(version_dir: Path, **changes: Any) -> None:
    path = version_dir / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def assert_only_v1_broken(root: Path, reason: str) -> None:
    """Listing and validation report V1 invalid with ``reason``; V2 is listed, valid, served."""
    registry = ModelRegistry(root)
    infos = {i.version: i for i in registry.list_bundles()}
    assert set(infos) == {V1, V2}
    assert infos[V2].error is None and infos[V2].timeframe == "1h"
    results = {info.version: error for info, error in registry.validate_all()}
    assert results[V2] is None
    assert results[V1] is not None and reason in results[V1], results[V1]
    assert registry.select_bundle("BTCUSDT", "basic").key == KEY2
    with pytest.raises(BundleError, match=re.escape(reason)):
        registry.select_bundle("BTCUSDT", "basic", version=V1)


def replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


# ---------------------------------------------------------------- item 3: special files


@pytest.mark.parametrize("name", ["metadata.json", "feature_schema.json", "model.onnx"])
def test_bundle_file_that_is_a_fifo_marks_only_its_version_invalid(root: Path, name: str) -> None:
    replace_with_fifo(vdir(root) / name)
    assert_only_v1_broken(root, "is not a regular file (a FIFO)")


def test_certificate_that_is_a_fifo_is_invalid_not_absent(root: Path) -> None:
    os.mkfifo(vdir(root) / CERTIFICATE_FILE)
    assert_certificate_invalid(root, re.escape("is not a regular file (a FIFO)"))


def test_metadata_symlinked_to_dev_zero_is_refused_without_reading_it(root: Path) -> None:
    meta = vdir(root) / "metadata.json"
    meta.unlink()
    meta.symlink_to("/dev/zero")
    # /dev/zero is outside the version folder, and not a regular file either
    assert_only_v1_broken(root, "outside its version folder")


def test_device_inside_the_version_folder_is_refused_as_not_regular(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    os.mkfifo(folder / "metadata.json")
    with pytest.raises(BundleError, match=r"not a regular file \(a FIFO\)"):
        read_json(folder / "metadata.json")


def test_json_over_the_size_cap_is_refused_before_reading(root: Path) -> None:
    meta = vdir(root) / "metadata.json"
    with open(meta, "r+b") as fh:  # sparse: the size says too big, nothing is written
        fh.truncate(MAX_BYTES["json"] + 1)
    assert_only_v1_broken(root, "more than the 16,777,216 allowed for a JSON file")


def test_model_over_the_size_cap_is_refused(root: Path) -> None:
    model = vdir(root) / "model.onnx"
    with open(model, "r+b") as fh:
        fh.truncate(MAX_BYTES["model"] + 1)
    assert_only_v1_broken(root, "allowed for a model")


def test_metadata_symlinked_to_a_file_outside_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    shutil.copy(vdir(root) / "metadata.json", outside)
    (vdir(root) / "metadata.json").unlink()
    (vdir(root) / "metadata.json").symlink_to(outside)
    assert_only_v1_broken(root, "outside its version folder")


def test_latest_file_that_is_a_fifo_is_a_broken_pointer(root: Path) -> None:
    pointer = root / "BTCUSDT" / "basic" / "latest"
    pointer.unlink()
    os.mkfifo(pointer)
    layout = RegistryLayout(root)
    with pytest.raises(RegistryError, match=r"neither a symlink nor a file.*a FIFO"):
        layout.read_latest("BTCUSDT", "basic")
    assert len(ModelRegistry(root).list_bundles()) == 2
    assert ModelRegistry(root).select_bundle("BTCUSDT", "basic", version=V1).key == KEY1


def test_ledger_that_is_a_fifo_fails_promote_instead_of_hanging(root: Path) -> None:
    history = root / "BTCUSDT" / "basic" / manage.HISTORY
    history.unlink(missing_ok=True)
    os.mkfifo(history)
    with pytest.raises(RegistryError, match="not a regular file"):
        manage.promote(RegistryLayout(root), "BTCUSDT", "basic", V1)


# ---------------------------------------------------------------- item 4: nothing from outside


@pytest.mark.parametrize(
    "model_file",
    ["/etc/hostname", "../2026-01-02_1h_v2/model.onnx", "sub/model.onnx", "..", "m" * 5000],
)
def test_model_file_that_is_not_a_plain_name_is_refused(root: Path, model_file: str) -> None:
    edit_metadata(vdir(root), model_file=model_file)
    with pytest.raises(BundleError, match="inside the bundle's own folder") as info:
        load_bundle_spec(vdir(root))
    assert info.value.field == "model_file"
    assert len(str(info.value)) < 600
    assert_only_v1_broken(root, "'model_file' must be the name of a file inside")


def test_model_symlinked_outside_the_version_folder_is_refused(root: Path, tmp_path: Path) -> None:
    model = vdir(root) / "model.onnx"
    outside = tmp_path / "model.onnx"
    shutil.copy(model, outside)
    model.unlink()
    model.symlink_to(outside)
    assert_only_v1_broken(root, "outside its version folder")


def test_model_symlinked_inside_the_version_folder_is_served(root: Path) -> None:
    model = vdir(root) / "model.onnx"
    model.rename(vdir(root) / "model-real.onnx")
    model.symlink_to("model-real.onnx")
    assert ModelRegistry(root).select_bundle("BTCUSDT", "basic", version=V1).key == KEY1


@pytest.mark.realdata
def test_legacy_bundle_with_absolute_model_file_is_refused(
    shared_dir: Path, tmp_path: Path
) -> None:
    source = shared_dir / "reference-bundles" / "models" / "BTCUSDT" / "basic" / "2025-10-30_12h_v1"
    copy = tmp_path / "models" / "BTCUSDT" / "basic" / source.name
    shutil.copytree(source, copy)
    for path in copy.iterdir():
        path.chmod(0o644)
    assert load_bundle_spec(copy).metadata.model_file == "model.onnx"  # as shipped: served
    edit_metadata(copy, model_file=str(source / "model.onnx"))
    with pytest.raises(BundleError, match="inside the bundle's own folder") as info:
        load_bundle_spec(copy)
    assert info.value.field == "model_file"


# ---------------------------------------------------------------- item 6: one entry, not all


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("name", ["metadata.json", "feature_schema.json"])
def test_json_nested_1000_deep_marks_only_its_version_invalid(root: Path, name: str) -> None:
    path = vdir(root) / name
    text = path.read_text().rstrip().removesuffix("}")
    path.write_text(text + ', "extra": ' + "[" * 1000 + "]" * 1000 + "}")
    assert_only_v1_broken(root, f"more than {MAX_DEPTH} levels deep")


def test_json_nested_just_past_the_limit_is_refused_and_at_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"a": nested(MAX_DEPTH - 1)}))
    assert read_json(path)["a"] == nested(MAX_DEPTH - 1)
    path.write_text(json.dumps({"a": nested(MAX_DEPTH)}))
    with pytest.raises(BundleError, match="levels deep"):
        read_json(path)


def test_self_looping_symlink_in_a_type_folder_is_listed_invalid(root: Path) -> None:
    loop = root / "BTCUSDT" / "basic" / "2026-01-03_1h_v3"
    loop.symlink_to(loop.name)
    registry = ModelRegistry(root)
    infos = {i.version: i for i in registry.list_bundles()}
    assert set(infos) == {V1, V2, loop.name}
    assert infos[V1].error is None and infos[V2].error is None
    assert "Too many levels of symbolic links" in (infos[loop.name].error or "")
    results = {info.version: error for info, error in registry.validate_all()}
    assert results[V1] is None and results[V2] is None and results[loop.name]
    assert registry.select_bundle("BTCUSDT", "basic").key == KEY2


def test_dangling_version_symlink_is_listed_invalid(root: Path) -> None:
    (root / "BTCUSDT" / "basic" / "2026-01-03_1h_v3").symlink_to("gone")
    errors = {i.version: i.error for i in ModelRegistry(root).list_bundles()}
    assert "not a directory" in (errors["2026-01-03_1h_v3"] or "")
    assert errors[V1] is None and errors[V2] is None


@pytest.mark.parametrize("content", ["x" * 300, "2026-01-02_1h_v2" * 20])
def test_latest_file_with_an_overlong_name_is_refused_briefly(root: Path, content: str) -> None:
    pointer = root / "BTCUSDT" / "basic" / "latest"
    pointer.unlink()
    pointer.write_text(content)
    with pytest.raises(RegistryError, match="at most 128 characters") as info:
        RegistryLayout(root).read_latest("BTCUSDT", "basic")
    assert content not in str(info.value) and len(str(info.value)) < 1000
    assert [i.is_latest for i in ModelRegistry(root).list_bundles()] == [False, False]
    _, problem = manage.latest_status(RegistryLayout(root), "BTCUSDT", "basic")
    assert problem is not None and "at most 128" in problem


def test_latest_file_of_100_mb_is_refused_without_reading_it(root: Path) -> None:
    pointer = root / "BTCUSDT" / "basic" / "latest"
    pointer.unlink()
    with open(pointer, "wb") as fh:
        fh.truncate(100 * (1 << 20))
    with pytest.raises(RegistryError, match="104,857,600 bytes"):
        RegistryLayout(root).read_latest("BTCUSDT", "basic")
    assert len(ModelRegistry(root).list_bundles()) == 2


# ---------------------------------------------------------------- item 7: the certificate


def certify(root: Path, version: str = V1, **arrays: Any) -> ModelRegistry:
    """Write a correct certificate for ``version``, with ``arrays`` replacing its parts."""
    registry = ModelRegistry(root)
    bundle = registry.select_bundle("BTCUSDT", "basic", version=version)
    windows = np.random.default_rng(0).random((4, 16, 3), dtype=np.float32)
    parts: dict[str, Any] = {
        "inputs": windows,
        "outputs": bundle.runner.run_raw(windows).astype(np.float32),
        "tolerance": np.float64(1e-5),
    }
    parts.update(arrays)
    with open(vdir(root, version) / CERTIFICATE_FILE, "wb") as fh:
        np.savez(fh, **{k: v for k, v in parts.items() if v is not None})
    return ModelRegistry(root)


def test_correct_certificate_passes(root: Path) -> None:
    registry = certify(root)
    check = verify_certificate(registry.select_bundle("BTCUSDT", "basic", version=V1))
    assert check.windows == 4 and check.max_abs_diff <= 1e-6


def test_nan_tolerance_with_every_output_wrong_fails(root: Path) -> None:
    certify(root, outputs=np.full(4, 123.0, np.float32), tolerance=np.float64("nan"))
    assert_certificate_invalid(root, "'tolerance' is nan")


def test_every_output_wrong_fails_naming_the_difference(root: Path) -> None:
    certify(root, outputs=np.full(4, 123.0, np.float32))
    assert_certificate_invalid(root, "does not reproduce the bundle's parity certificate")


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({"inputs": np.zeros((4, 15, 3), np.float32)}, r"'inputs' have shape \[4, 15, 3\]"),
        ({"inputs": np.zeros((4, 16, 3), np.float64)}, "'inputs' are float64"),
        ({"outputs": np.zeros(3, np.float32)}, r"'outputs' have shape \[3\]"),
        ({"outputs": np.zeros((4, 2), np.float32)}, r"'outputs' have shape \[4, 2\]"),
        ({"outputs": np.float32(0.0)}, r"'outputs' have shape \[\]"),
        ({"inputs": np.zeros((0, 16, 3), np.float32)}, r"'inputs' have shape \[0, 16, 3\]"),
        ({"outputs": np.zeros(4, np.int64)}, "'outputs' are int64"),
        ({"tolerance": np.array([1e-5, 1e-5])}, "'tolerance' must be one number"),
        ({"tolerance": np.float64(0.5)}, "'tolerance' is 0.5"),
        ({"outputs": np.array([0, 0, np.inf, 0], np.float32)}, "NaN or infinite"),
        ({"outputs": None}, "no outputs array"),
    ],
)
def test_malformed_certificate_is_invalid_and_validation_goes_on(
    root: Path, arrays: dict[str, Any], reason: str
) -> None:
    certify(root, **arrays)
    assert_certificate_invalid(root, reason)


def test_certificate_that_is_not_an_npz_is_unreadable(root: Path) -> None:
    (vdir(root) / CERTIFICATE_FILE).write_bytes(b"not a zip")
    assert_certificate_invalid(root, "unreadable parity certificate")


def test_certificate_bytes_round_trip_is_accepted(root: Path) -> None:
    bundle = ModelRegistry(root).select_bundle("BTCUSDT", "basic", version=V1)
    windows = np.ones((2, 16, 3), np.float32)
    data = certificate_bytes(windows, bundle.runner.run_raw(windows))
    (vdir(root) / CERTIFICATE_FILE).write_bytes(data)
    assert verify_certificate(bundle).windows == 2


def assert_certificate_invalid(root: Path, reason: str) -> None:
    registry = ModelRegistry(root)
    results = {info.version: error for info, error in registry.validate_all()}
    assert results[V2] is None
    assert results[V1] is not None
    assert re.search(reason, results[V1]), results[V1]
    with pytest.raises(BundleError, match=reason):
        verify_certificate(registry.select_bundle("BTCUSDT", "basic", version=V1))


# ---------------------------------------------------------------- item 8: fails on use


def fixed_batch_onnx(sequence_length: int, n_features: int) -> bytes:
    """Opens fine, but a Reshape to [1, 1] fails for every batch but one."""
    w = np.full((sequence_length * n_features, 1), 0.01, np.float32)
    nodes = [
        helper.make_node("Flatten", ["features"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Reshape", ["mm", "S"], ["prediction"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed",
        [
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, ["batch", sequence_length, n_features]
            )
        ],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.array([1, 1], np.int64), "S"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_model_whose_reshape_fails_at_run_time_is_invalid(root: Path) -> None:
    model = vdir(root) / "model.onnx"
    model.write_bytes(fixed_batch_onnx(16, 3))
    edit_metadata(vdir(root), model_sha256=sha256_of(model))
    assert_only_v1_broken(root, "opens but fails when run on a batch of 2 window")


def test_writer_refuses_a_model_whose_reshape_fails(make_bundle: BundleFactory) -> None:
    with pytest.raises(BundleError, match="fails when run"):
        make_bundle(version="2026-01-05_1h_v5", model_bytes=fixed_batch_onnx(16, 3))


def test_float_horizon_1e30_is_refused(root: Path) -> None:
    output = {"name": "prediction", "target": "log_return", "horizon": 1e30}
    edit_metadata(vdir(root), output=output)
    assert_only_v1_broken(root, "'output.horizon' must be int")


def test_huge_integer_horizon_is_refused(root: Path) -> None:
    edit_metadata(
        vdir(root), output={"name": "prediction", "target": "log_return", "horizon": 10**30}
    )
    assert_only_v1_broken(root, "'output.horizon' must be at most 100,000")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("horizon", "9" * 200_000),  # a string where a number belongs
        ("horizon", list(range(100_000))),
        ("target", "x" * 200_000),
    ],
    ids=["digits-string", "long-list", "long-target"],
)
def test_a_huge_bad_value_is_quoted_briefly(root: Path, field: str, value: object) -> None:
    output = {"name": "prediction", "target": "log_return", "horizon": 1, field: value}
    edit_metadata(vdir(root), output=output)
    assert_only_v1_broken(root, f"'output.{field}' must")
    message = next(str(e) for info, e in ModelRegistry(root).validate_all() if info.version == V1)
    assert len(message) < 400 and "\n" not in message, message[:500]


def test_huge_input_shape_is_refused(root: Path) -> None:
    edit_metadata(
        vdir(root), input={"name": "features", "dtype": "float32", "shape": [None, 10**6, 3]}
    )
    assert_only_v1_broken(root, "sequence_length at most 100,000")


@pytest.mark.parametrize("timeframe", ["0h", "\u202e1h", "1h\n", "\u0661h", "99999h", "1y"])
def test_bad_timeframe_is_refused_and_never_printed_raw(root: Path, timeframe: str) -> None:
    edit_metadata(vdir(root), timeframe=timeframe)
    assert_only_v1_broken(root, "'timeframe' must be <n>m, <n>h, <n>d or <n>w")
    info = next(i for i in ModelRegistry(root).list_bundles() if i.version == V1)
    assert info.timeframe is None
    with pytest.raises(BundleError) as error:
        load_bundle_spec(vdir(root))
    assert "\u202e" not in str(error.value) and "\n" not in str(error.value)


LINEAGE_9999 = {
    "first_bar_seen": "2024-01-01T00:00:00",
    "seen_until": "9999-12-31T00:00:00+01:00",
    "available_from": "9999-12-31T01:00:00",
}


def test_lineage_dates_in_year_9999_fail_at_selection(root: Path) -> None:
    edit_metadata(vdir(root), training=LINEAGE_9999)
    assert_only_v1_broken(root, "lineage field 'training.seen_until'")


def test_lineage_derived_past_the_date_range_fails(root: Path) -> None:
    lineage = {
        "data": {"first_bar": "2024-01-01"},
        "samples": {"val": {"last": "2262-04-11T23:00:00"}},
        "config": {"horizon": 3},
    }
    with pytest.raises(BundleError, match="training.samples.val.last"):
        training_period({"timeframe": "1h", "training": lineage})


def test_asof_leaves_out_a_version_with_unusable_lineage(root: Path) -> None:
    good = {
        "first_bar_seen": "2024-01-01T00:00:00",
        "seen_until": "2024-06-01T00:00:00",
        "available_from": "2024-06-01T01:00:00",
    }
    edit_metadata(vdir(root, V2), training=good)
    edit_metadata(vdir(root), training=LINEAGE_9999)
    schedule = asof_schedule(RegistryLayout(root), "BTCUSDT", "basic", "1h")
    assert schedule.versions == (V2,)


@pytest.mark.parametrize(
    ("transform", "reason"),
    [
        ({"op": "zscore", "mean": 5.0, "std": 5e-324}, "has std = 5e-324"),
        ({"op": "minmax_scale", "min": 0.0, "max": 1e-300}, "has max - min"),
    ],
)
def test_tiny_fitted_scale_is_refused_naming_the_feature(
    make_bundle: BundleFactory, tmp_path: Path, transform: dict, reason: str
) -> None:
    make_bundle(version=V1, promote=False)
    make_bundle(version=V2, seed=1)
    root = tmp_path / "models"
    path = vdir(root) / "feature_schema.json"
    schema = json.loads(path.read_text())
    schema["features"][0]["transforms"] = [transform]
    path.write_text(json.dumps(schema))
    assert_only_v1_broken(root, reason)
    with pytest.raises(BundleError, match=f"feature {schema['features'][0]['name']}"):
        load_bundle_spec(vdir(root))


def test_fitted_scale_in_range_is_served(make_bundle: BundleFactory, tmp_path: Path) -> None:
    make_bundle(version=V1, features=(RICH_FEATURES[7], RICH_FEATURES[8]))
    assert ModelRegistry(tmp_path / "models").select_bundle("BTCUSDT", "basic").key == KEY1


# ---------------------------------------------------------------- item 9 and 15


@pytest.mark.parametrize("name", [f"{V1}\n", f"{V1}\r", "a" * 129, "", "-x", ".x", "a/b"])
def test_check_name_refuses_trailing_newline_and_overlong_names(name: str) -> None:
    with pytest.raises(RegistryError, match="not a valid registry name"):
        check_name(name, "version")


def test_check_name_accepts_the_longest_allowed_name() -> None:
    assert check_name("a" * 128, "version") == "a" * 128


def test_version_with_trailing_newline_is_not_selected(root: Path) -> None:
    with pytest.raises(RegistryError, match="no version") as info:
        ModelRegistry(root).select_bundle("BTCUSDT", "basic", version=f"{V1}\n")
    assert "\n" not in str(info.value)
    with pytest.raises(RegistryError, match="not a valid registry name"):
        RegistryLayout(root).version_dir("BTCUSDT", "basic", f"{V1}\n")


def test_missing_registry_folder_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-registry"
    with pytest.raises(
        ModelNotFoundError, match="registry folder .*no-such-registry does not exist"
    ):
        ModelRegistry(missing).select_bundle("BTCUSDT", "basic")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        manage.promote(RegistryLayout(missing), "BTCUSDT", "basic", V1)
    assert not missing.exists()


def test_model_still_loads_after_the_checks(root: Path) -> None:
    """The checks refuse nothing a writer produces: both versions validate and predict."""
    registry = ModelRegistry(root)
    assert [error for _, error in registry.validate_all()] == [None, None]
    bundle = registry.select_bundle("BTCUSDT", "basic")
    prediction = bundle.runner.predict(np.zeros((16, 3), np.float32))
    assert np.isfinite(prediction.raw)
    onnx.load_from_string((vdir(root, V2) / "model.onnx").read_bytes())
