"""Layers only point down: every import in the package obeys ``atb_strategies.layers``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import atb_strategies
from atb_strategies.layers import FACES, LAYERS, layer_of

PACKAGE = Path(atb_strategies.__file__).parent


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every atb_strategies import in ``path``, at any depth."""
    package = ".".join(("atb_strategies", *path.relative_to(root).with_suffix("").parts))
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.startswith("atb_strategies"):
                found.append((node.lineno, name))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("atb_")]
    return found


def _violations(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        own = _top(".".join(("atb_strategies", *path.relative_to(root).with_suffix("").parts)))
        if own in FACES:
            continue
        for line, name in _imports(path, root):
            target = _top(name)
            where = f"{path.relative_to(root.parent)}:{line} imports {name}"
            if target in FACES:
                bad.append(f"{where}: the library never imports a face ({', '.join(FACES)})")
            elif layer_of(target) > layer_of(own):
                bad.append(
                    f"{where}: {own} (layer {layer_of(own)}) may not import {target} "
                    f"(layer {layer_of(target)})"
                )
    return bad


def test_layers_with_package_sources_have_no_upward_import():
    assert _violations(PACKAGE) == []


def test_layers_with_every_top_level_module_assigned_to_a_layer_or_face():
    tops = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    for top in sorted(tops - set(FACES)):
        layer_of(top)


def test_layers_with_an_upward_import_reports_it(tmp_path):
    root = tmp_path / "atb_strategies"
    (root / "features").mkdir(parents=True)
    (root / "features" / "bad.py").write_text(
        "def f():\n    from atb_strategies.live import feed\n"
    )
    (root / "registry").mkdir()
    (root / "registry" / "ok.py").write_text("from ..inference import runner\n")
    (root / "data").mkdir()
    (root / "data" / "face.py").write_text("import atb_strategies.prediction.engine\n")
    found = _violations(root)
    assert len(found) == 2
    assert "data/face.py:1 imports atb_strategies.prediction.engine" in found[0]
    assert "never imports a face" in found[0]
    assert "features/bad.py:2 imports atb_strategies.live" in found[1]


@pytest.mark.parametrize("names", LAYERS)
def test_layers_with_each_layer_naming_an_existing_module(names):
    assert any((PACKAGE / n).is_dir() or (PACKAGE / f"{n}.py").exists() for n in names)
