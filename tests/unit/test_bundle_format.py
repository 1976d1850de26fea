"""Bundle format: strict writing, lenient reading, validation errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atb_strategies.bundle.format import FeatureSchema, OutputSpec
from atb_strategies.bundle.jsonio import dumps_strict, read_json
from atb_strategies.bundle.loader import load_bundle_spec
from atb_strategies.exceptions import BundleError
from tests.conftest import RICH_FEATURES, BundleFactory


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_written_bundle_round_trips_through_loader(make_bundle: BundleFactory) -> None:
    directory = make_bundle(features=RICH_FEATURES, sequence_length=32)
    spec = load_bundle_spec(directory)
    assert spec.key == "BTCUSDT/basic@2026-01-01_1h_v1"
    assert spec.schema == FeatureSchema(32, RICH_FEATURES)
    assert spec.metadata.output == OutputSpec("log_return", 1, "prediction")
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["format_version"] == 1
    assert len(meta["model_sha256"]) == 64
    schema = json.loads((directory / "feature_schema.json").read_text())
    assert schema["warmup_bars"] == 23 and schema["columns"][0] == "close"


def test_read_json_with_infinity_is_lenient(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text('{"mape": Infinity, "x": NaN}')
    data = read_json(p)
    assert data["mape"] == float("inf")


def test_dumps_strict_with_infinity_raises_naming_path() -> None:
    with pytest.raises(ValueError, match=r"\$\.metrics\.mape"):
        dumps_strict({"metrics": {"mape": float("inf")}})


def test_read_json_with_broken_file_names_file_and_position(tmp_path: Path) -> None:
    p = tmp_path / "metadata.json"
    p.write_text('{"a": 1,,}')
    with pytest.raises(BundleError, match=r"metadata.json is not valid JSON: .* line 1") as info:
        read_json(p)
    assert info.value.path == p


def test_loader_with_changed_model_file_reports_checksum(make_bundle: BundleFactory) -> None:
    directory = make_bundle()
    with (directory / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="sha256") as info:
        load_bundle_spec(directory)
    assert info.value.field == "model_sha256"


def test_loader_with_missing_schema_file_names_it(make_bundle: BundleFactory) -> None:
    directory = make_bundle()
    (directory / "feature_schema.json").unlink()
    with pytest.raises(BundleError, match="feature_schema.json is missing"):
        load_bundle_spec(directory)


def test_loader_with_missing_model_file_names_it(make_bundle: BundleFactory) -> None:
    directory = make_bundle()
    (directory / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx is missing"):
        load_bundle_spec(directory)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda m: m.pop("output"), "output", "is missing"),
        (lambda m: m["output"].pop("target"), "output.target", "is missing"),
        (lambda m: m["output"].update(target="price_usd"), "output.target", "must be one of"),
        (lambda m: m["output"].update(horizon=0), "output.horizon", "positive integer"),
        (lambda m: m["input"].update(dtype="float64"), "input.dtype", "must be one of"),
        (lambda m: m["input"].update(shape=[None, 120]), "input.shape", "must be"),
        (lambda m: m.update(format_version=2), "format_version", "reads format 1"),
        (lambda m: m.pop("model_sha256"), "model_sha256", "is missing"),
        (lambda m: m.update(timeframe=None), "timeframe", "is missing"),
        (
            lambda m: m["output"].update(target="close_zscore", params={"mean": 1.0}),
            "output.params.std",
            "is missing",
        ),
        (
            lambda m: m["output"].update(target="class_probabilities", classes=["up", "up"]),
            "output.classes",
            "distinct",
        ),
    ],
)
def test_loader_with_bad_metadata_names_field(
    make_bundle: BundleFactory, change, field: str, message: str
) -> None:
    directory = make_bundle()
    _edit(directory / "metadata.json", change)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle_spec(directory)
    assert info.value.field == field
    assert info.value.path == directory / "metadata.json"
    assert "metadata.json" in str(info.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s["features"][0].pop("source"), "features[0].source"),
        (lambda s: s["features"][1]["transforms"][0].update(op="magic"), "features[1].transforms"),
        (lambda s: s["features"][1]["transforms"][0].update(period="2"), "features[1].transforms"),
        (lambda s: s.update(warmup_bars=3), "warmup_bars"),
        (lambda s: s.update(nan_policy="fill"), "nan_policy"),
        (lambda s: s["features"].append(dict(s["features"][0])), "features[3].name"),
    ],
)
def test_loader_with_bad_schema_names_field(make_bundle: BundleFactory, change, field: str) -> None:
    directory = make_bundle()
    _edit(directory / "feature_schema.json", change)
    with pytest.raises(BundleError) as info:
        load_bundle_spec(directory)
    assert "feature_schema.json" in str(info.value)
    assert info.value.field == field


def test_loader_with_schema_contradicting_input_shape_raises(make_bundle: BundleFactory) -> None:
    directory = make_bundle(sequence_length=16)
    _edit(directory / "feature_schema.json", lambda s: s.update(sequence_length=30))
    with pytest.raises(BundleError, match=r"contradicts feature_schema.json \(30 bars x 3"):
        load_bundle_spec(directory)


def test_loader_with_identity_not_matching_directory_raises(make_bundle: BundleFactory) -> None:
    directory = make_bundle()
    _edit(directory / "metadata.json", lambda m: m.update(symbol="ETHUSDT"))
    with pytest.raises(BundleError, match="ETHUSDT/basic@2026-01-01_1h_v1 but lives at"):
        load_bundle_spec(directory, verify_checksum=False)
