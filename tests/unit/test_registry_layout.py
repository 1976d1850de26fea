"""Registry layout on disk (``latest`` pointer, names, discovery, sort order) and the writer."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from atb_strategies.bundle.format import (
    METADATA_FILE,
    MODEL_FILE,
    SCHEMA_FILE,
    BundleMetadata,
    FeatureSchema,
    InputSpec,
    OutputSpec,
)
from atb_strategies.exceptions import BundleError, RegistryError
from atb_strategies.registry.layout import RegistryLayout, check_name
from atb_strategies.registry.registry import ModelRegistry
from atb_strategies.registry.writer import write_bundle
from tests.conftest import RICH_FEATURES, BundleFactory, linear_onnx

V1 = "2026-01-01_1h_v1"
V2 = "2026-01-02_1h_v2"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def two_versions(make_bundle: BundleFactory, root: Path) -> Path:
    """BTCUSDT/basic with V1 and V2 and no ``latest`` pointer; returns the type directory."""
    make_bundle(version=V1, promote=False)
    make_bundle(version=V2, seed=1, promote=False)
    return root / "BTCUSDT" / "basic"


def _metadata(version: str = V1, **changes) -> BundleMetadata:
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
    )
    return dataclasses.replace(meta, **changes)


SCHEMA = FeatureSchema(16, tuple(RICH_FEATURES[:3]))
MODEL = linear_onnx(16, 3)


#: Hidden files the registry keeps on purpose (see atb_strategies.registry.manage).
_BOOKKEEPING = {".lock", ".versions", ".latest-history"}


def _leftovers(tdir: Path) -> list[str]:
    """Hidden temporaries left behind (staging directories, half-made pointers), in ``tdir``
    and in the registry root above it."""
    dirs = [d for d in (tdir, tdir.parent.parent) if d.is_dir()]
    return sorted(
        p.name
        for d in dirs
        for p in d.iterdir()
        if p.name.startswith(".") and p.name not in _BOOKKEEPING
    )


# ---------------------------------------------------------------- reading latest


def test_read_latest_with_relative_symlink_returns_version(two_versions, root):
    os.symlink(V1, two_versions / "latest")
    assert RegistryLayout(root).read_latest("BTCUSDT", "basic") == V1


def test_read_latest_with_plain_text_file_returns_version(two_versions, root):
    (two_versions / "latest").write_text(f"  {V2}\n", encoding="utf-8")
    assert RegistryLayout(root).read_latest("BTCUSDT", "basic") == V2


def test_read_latest_with_no_pointer_returns_none(two_versions, root):
    assert RegistryLayout(root).read_latest("BTCUSDT", "basic") is None


def test_read_latest_with_absolute_symlink_to_sibling_returns_version(two_versions, root):
    os.symlink(two_versions / V2, two_versions / "latest")
    assert RegistryLayout(root).read_latest("BTCUSDT", "basic") == V2


@pytest.mark.parametrize("target", ["../../..", "..", "../../../..", "/tmp", "../../ETHUSDT"])
def test_read_latest_with_symlink_leaving_type_dir_raises(two_versions, root, target):
    os.symlink(target, two_versions / "latest")
    with pytest.raises(RegistryError, match=r"basic/latest (points to|names) ") as info:
        RegistryLayout(root).read_latest("BTCUSDT", "basic")
    assert repr(target) in str(info.value)


def test_read_latest_with_symlink_to_other_type_raises(make_bundle, two_versions, root):
    make_bundle(model_type="sentiment", version=V1, promote=False)
    os.symlink(f"../sentiment/{V1}", two_versions / "latest")
    with pytest.raises(RegistryError, match="not a version directory beside it"):
        RegistryLayout(root).read_latest("BTCUSDT", "basic")


def test_read_latest_with_symlink_to_directory_outside_root_raises(
    make_bundle, two_versions, root, tmp_path
):
    outside = make_bundle(root=tmp_path / "outside", version=V1, promote=False)
    os.symlink(outside, two_versions / "latest")
    with pytest.raises(RegistryError):
        RegistryLayout(root).read_latest("BTCUSDT", "basic")


@pytest.mark.parametrize("content", ["../../../etc", "..", ".hidden", "latest", "a/b", ""])
def test_read_latest_with_text_file_naming_invalid_version_raises(two_versions, root, content):
    (two_versions / "latest").write_text(content, encoding="utf-8")
    with pytest.raises(RegistryError, match="not a valid registry name"):
        RegistryLayout(root).read_latest("BTCUSDT", "basic")


def test_read_latest_with_pointer_to_missing_version_raises(two_versions, root):
    os.symlink("2026-01-09_1h_v9", two_versions / "latest")
    with pytest.raises(RegistryError, match="does not exist"):
        RegistryLayout(root).read_latest("BTCUSDT", "basic")


def test_read_latest_with_pointer_to_escaping_version_symlink_raises(
    make_bundle, two_versions, root, tmp_path
):
    outside = make_bundle(root=tmp_path / "outside", version="2026-01-03_1h_v3", promote=False)
    os.symlink(outside, two_versions / "2026-01-03_1h_v3", target_is_directory=True)
    (two_versions / "latest").write_text("2026-01-03_1h_v3\n", encoding="utf-8")
    with pytest.raises(RegistryError, match="outside the registry root"):
        RegistryLayout(root).read_latest("BTCUSDT", "basic")


def test_read_latest_with_directory_named_latest_raises(two_versions, root):
    (two_versions / "latest").mkdir()
    with pytest.raises(RegistryError, match="neither a symlink nor a file"):
        RegistryLayout(root).read_latest("BTCUSDT", "basic")


# ---------------------------------------------------------------- writing latest


def test_write_latest_with_existing_version_writes_relative_symlink(two_versions, root):
    kind = RegistryLayout(root).write_latest("BTCUSDT", "basic", V1)
    pointer = two_versions / "latest"
    assert kind == "symlink"
    assert pointer.is_symlink()
    assert os.readlink(pointer) == V1  # relative: survives moving the registry
    assert pointer.resolve() == (two_versions / V1).resolve()


def test_write_latest_with_moved_registry_still_resolves(two_versions, root, tmp_path):
    RegistryLayout(root).write_latest("BTCUSDT", "basic", V2)
    moved = tmp_path / "moved"
    root.rename(moved)
    assert RegistryLayout(moved).read_latest("BTCUSDT", "basic") == V2


def test_write_latest_with_new_version_switches_pointer_and_leaves_no_temp(two_versions, root):
    layout = RegistryLayout(root)
    layout.write_latest("BTCUSDT", "basic", V1)
    assert os.readlink(two_versions / "latest") == V1
    layout.write_latest("BTCUSDT", "basic", V2)
    assert os.readlink(two_versions / "latest") == V2
    assert layout.read_latest("BTCUSDT", "basic") == V2
    assert _leftovers(two_versions) == []
    assert layout.versions("BTCUSDT", "basic") == [V1, V2]


def test_write_latest_with_plain_file_pointer_replaces_it_with_symlink(two_versions, root):
    (two_versions / "latest").write_text(V1 + "\n", encoding="utf-8")
    RegistryLayout(root).write_latest("BTCUSDT", "basic", V2)
    assert os.readlink(two_versions / "latest") == V2


def test_write_latest_with_missing_version_raises_and_keeps_old_pointer(two_versions, root):
    layout = RegistryLayout(root)
    layout.write_latest("BTCUSDT", "basic", V1)
    with pytest.raises(RegistryError, match="is missing"):
        layout.write_latest("BTCUSDT", "basic", "2026-01-09_1h_v9")
    assert os.readlink(two_versions / "latest") == V1
    assert _leftovers(two_versions) == []


@pytest.mark.parametrize("version", ["../basic/" + V2, "..", "latest", f"{V2}/"])
def test_write_latest_with_invalid_name_raises_and_keeps_old_pointer(two_versions, root, version):
    layout = RegistryLayout(root)
    layout.write_latest("BTCUSDT", "basic", V1)
    with pytest.raises(RegistryError):
        layout.write_latest("BTCUSDT", "basic", version)
    assert os.readlink(two_versions / "latest") == V1


def test_write_latest_with_concurrent_reader_never_shows_missing_pointer(two_versions, root):
    layout = RegistryLayout(root)
    layout.write_latest("BTCUSDT", "basic", V1)
    seen: set[str | None] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        reader_layout = RegistryLayout(root)
        while not stop.is_set():
            try:
                seen.add(reader_layout.read_latest("BTCUSDT", "basic"))
            except BaseException as e:  # any failure means a reader saw neither version
                errors.append(e)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(400):
            layout.write_latest("BTCUSDT", "basic", V2 if i % 2 == 0 else V1)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert seen <= {V1, V2}
    assert None not in seen
    assert _leftovers(two_versions) == []


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["BTCUSDT", "basic", V1, "a", "1INCHUSDT", "x.y_z-1"])
def test_check_name_with_safe_name_returns_it(name):
    assert check_name(name, "version") == name


@pytest.mark.parametrize(
    "name", ["", "..", ".", "../x", "a/b", "/abs", ".hidden", "-opt", "a b", "a\\b", "a\x00b"]
)
def test_check_name_with_unsafe_name_raises(name):
    with pytest.raises(RegistryError, match="not a valid registry name"):
        check_name(name, "symbol")


def test_check_name_with_latest_as_version_raises():
    with pytest.raises(RegistryError):
        check_name("latest", "version")
    assert check_name("latest", "model type") == "latest"


@pytest.mark.parametrize(
    ("symbol", "model_type", "version"),
    [
        ("../BTCUSDT", "basic", V1),
        ("BTCUSDT", "..", V1),
        ("BTCUSDT", "basic", "../../../etc"),
        ("BTCUSDT", "basic/..", V1),
        ("BTCUSDT", "basic", f"{V1}/../{V2}"),
    ],
)
def test_version_dir_with_traversal_name_raises(two_versions, root, symbol, model_type, version):
    with pytest.raises(RegistryError, match="not a valid registry name"):
        RegistryLayout(root).version_dir(symbol, model_type, version)


@pytest.mark.parametrize("version", ["../basic/" + V1, "..", f"{V1}/.."])
def test_select_bundle_with_traversal_version_raises_registry_error(make_bundle, root, version):
    make_bundle(version=V1)
    with pytest.raises(RegistryError):
        ModelRegistry(root).select_bundle("BTCUSDT", "basic", version=version)


def test_write_bundle_with_traversal_symbol_raises_and_writes_nothing(tmp_path, root):
    with pytest.raises(RegistryError, match="not a valid registry name"):
        write_bundle(root, _metadata(symbol="../evil"), SCHEMA, MODEL)
    assert not (tmp_path / "evil").exists()
    assert not root.exists()


# ---------------------------------------------------------------- escaping version directories


def test_select_bundle_with_version_symlinked_outside_root_raises(
    make_bundle, two_versions, root, tmp_path
):
    escaped = "2026-01-03_1h_v3"
    outside = make_bundle(root=tmp_path / "outside", version=escaped, promote=False)
    os.symlink(outside, two_versions / escaped, target_is_directory=True)
    registry = ModelRegistry(root)
    with pytest.raises(RegistryError, match="outside the registry root"):
        registry.select_bundle("BTCUSDT", "basic", version=escaped)
    # the same bundle is servable where it really lives, so only the escape was refused
    assert (
        ModelRegistry(tmp_path / "outside")
        .select_bundle("BTCUSDT", "basic", version=escaped)
        .version
        == escaped
    )


def test_select_bundle_with_latest_on_escaping_version_raises(
    make_bundle, two_versions, root, tmp_path
):
    escaped = "2026-01-03_1h_v3"
    outside = make_bundle(root=tmp_path / "outside", version=escaped, promote=False)
    os.symlink(outside, two_versions / escaped, target_is_directory=True)
    os.symlink(escaped, two_versions / "latest")
    with pytest.raises(RegistryError, match="outside the registry root"):
        ModelRegistry(root).select_bundle("BTCUSDT", "basic")


def test_select_bundle_with_symlinked_type_dir_outside_root_raises(make_bundle, root, tmp_path):
    make_bundle(version=V1)  # creates root
    outside_type = make_bundle(root=tmp_path / "outside", model_type="ext", version=V1).parent
    os.symlink(outside_type, root / "BTCUSDT" / "ext", target_is_directory=True)
    with pytest.raises(RegistryError):
        ModelRegistry(root).select_bundle("BTCUSDT", "ext", version=V1)


# ---------------------------------------------------------------- write_bundle


def test_write_bundle_with_valid_input_writes_three_files_and_real_sha(root):
    meta = _metadata(model_sha256="0" * 64)  # ignored: recomputed from the bytes
    path = write_bundle(root, meta, SCHEMA, MODEL)
    assert path == root / "BTCUSDT" / "basic" / V1
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [MODEL_FILE, METADATA_FILE, SCHEMA_FILE]
    )
    assert (path / MODEL_FILE).read_bytes() == MODEL
    written = json.loads((path / METADATA_FILE).read_text())
    assert written["model_sha256"] == hashlib.sha256(MODEL).hexdigest()
    assert written["input"]["shape"] == [None, 16, 3]
    assert json.loads((path / SCHEMA_FILE).read_text())["sequence_length"] == 16
    assert not (path.parent / "latest").exists()  # promote defaults to False


def test_write_bundle_with_promote_moves_latest_only_when_asked(root):
    write_bundle(root, _metadata(V1), SCHEMA, MODEL, promote=True)
    write_bundle(root, _metadata(V2), SCHEMA, MODEL, promote=False)
    layout = RegistryLayout(root)
    assert layout.read_latest("BTCUSDT", "basic") == V1
    write_bundle(root, _metadata("2026-01-03_1h_v3"), SCHEMA, MODEL, promote=True)
    assert os.readlink(root / "BTCUSDT" / "basic" / "latest") == "2026-01-03_1h_v3"


def test_write_bundle_with_existing_version_raises_and_keeps_original(root):
    path = write_bundle(root, _metadata(V1), SCHEMA, MODEL, promote=True)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    other = linear_onnx(16, 3, seed=5)
    with pytest.raises(RegistryError, match="already exists; versions are never overwritten"):
        write_bundle(root, _metadata(V1, framework="other"), SCHEMA, other, promote=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert _leftovers(path.parent) == []


def test_write_bundle_with_written_bundle_round_trips_through_registry(root):
    write_bundle(root, _metadata(V1), SCHEMA, MODEL, promote=True)
    bundle = ModelRegistry(root).select_bundle("BTCUSDT", "basic", timeframe="1h")
    assert bundle.version == V1
    assert bundle.feature_schema == SCHEMA


@pytest.mark.parametrize(
    ("changes", "extra", "error", "match"),
    [
        (  # input shape contradicts the schema
            {"input": InputSpec("features", "float32", 16, 4)},
            None,
            BundleError,
            "contradicts",
        ),
        (  # unknown output target
            {"output": OutputSpec("bogus", 1, "prediction", {}, None)},
            None,
            BundleError,
            "'output.target'",
        ),
        (  # horizon must be positive
            {"output": OutputSpec("log_return", 0, "prediction", {}, None)},
            None,
            BundleError,
            "'output.horizon'",
        ),
        (  # unsupported dtype
            {"input": InputSpec("features", "float64", 16, 3)},
            None,
            BundleError,
            "'input.dtype'",
        ),
        (  # non-finite number cannot be written as strict JSON
            {"output": OutputSpec("log_return", 1, "prediction", {"scale": float("inf")}, None)},
            None,
            ValueError,
            "non-finite",
        ),
        ({}, {"../escape.txt": b"x"}, RegistryError, "not allowed"),
        ({}, {MODEL_FILE: b"x"}, RegistryError, "not allowed"),
        ({}, {".hidden": b"x"}, RegistryError, "not allowed"),
    ],
)
def test_write_bundle_with_invalid_bundle_raises_and_leaves_no_temp_dir(
    root, tmp_path, changes, extra, error, match
):
    write_bundle(root, _metadata(V1), SCHEMA, MODEL, promote=True)
    tdir = root / "BTCUSDT" / "basic"
    with pytest.raises(error, match=match):
        write_bundle(root, _metadata(V2, **changes), SCHEMA, MODEL, extra_files=extra, promote=True)
    assert not (tdir / V2).exists()
    assert _leftovers(tdir) == []
    assert os.readlink(tdir / "latest") == V1  # latest did not move
    assert not (tmp_path / "escape.txt").exists()
    assert not (root / "BTCUSDT" / "escape.txt").exists()


def test_write_bundle_with_allowed_extra_file_writes_it(root):
    path = write_bundle(root, _metadata(V1), SCHEMA, MODEL, extra_files={"notes.txt": b"hi"})
    assert (path / "notes.txt").read_bytes() == b"hi"


def test_write_bundle_with_non_onnx_bytes_refuses_and_leaves_nothing(root):
    """The writer opens the model in ONNX Runtime before the version is renamed into place."""
    with pytest.raises(BundleError, match="could not be loaded by ONNX Runtime"):
        write_bundle(root, _metadata(V1), SCHEMA, b"definitely not onnx", promote=True)
    tdir = root / "BTCUSDT" / "basic"
    assert not (tdir / V1).exists()
    assert _leftovers(tdir) == []
    assert RegistryLayout(root).read_latest("BTCUSDT", "basic") is None


# ---------------------------------------------------------------- discovery and sort order


def test_versions_with_temp_and_hidden_dirs_ignores_them(make_bundle, root):
    path = make_bundle(version=V1)
    tdir = path.parent
    shutil.copytree(path, tdir / f".tmp-{V2}-deadbeef")
    shutil.copytree(path, tdir / "_trash")
    (tdir / "notes.txt").write_text("not a version")
    layout = RegistryLayout(root)
    assert layout.versions("BTCUSDT", "basic") == [V1]
    assert [v.version for v in layout.walk()] == [V1]
    assert [i.version for i in ModelRegistry(root).list_bundles()] == [V1]


def test_walk_with_temp_symbol_and_type_dirs_ignores_them(make_bundle, root):
    path = make_bundle(version=V1)
    shutil.copytree(root / "BTCUSDT", root / ".tmp-BTCUSDT")
    shutil.copytree(path.parent, root / "BTCUSDT" / ".tmp-basic")
    assert [(v.symbol, v.model_type, v.version) for v in RegistryLayout(root).walk()] == [
        ("BTCUSDT", "basic", V1)
    ]


def test_versions_with_numbered_suffixes_sorts_numerically(root):
    tdir = root / "BTCUSDT" / "basic"
    names = [
        "2026-01-02_1h_v10",
        "2026-01-02_1h_v9",
        "2026-01-02_1h_v2",
        "2026-01-02_1h_v1",
        "2026-01-02_1h_v11",
        "2025-12-31_4h_v12",
        "2026-01-10_1h_v1",
        "manual-test",
    ]
    for name in names:
        (tdir / name).mkdir(parents=True)
    assert RegistryLayout(root).versions("BTCUSDT", "basic") == [
        "2025-12-31_4h_v12",
        "2026-01-02_1h_v1",
        "2026-01-02_1h_v2",
        "2026-01-02_1h_v9",
        "2026-01-02_1h_v10",
        "2026-01-02_1h_v11",
        "2026-01-10_1h_v1",
        "manual-test",
    ]


def test_versions_with_missing_type_dir_returns_empty(root):
    assert RegistryLayout(root).versions("BTCUSDT", "basic") == []
    assert RegistryLayout(root).walk() == []
