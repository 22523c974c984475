"""scoring, storage and dashboard are prefsift.scoring, prefsift.storage and prefsift.dashboard,
in the source tree as installed; nothing uses their old top-level names (a module imported under
two names exists twice, with two states)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_source_tree_links_the_packages_into_prefsift():
    for name in ("scoring", "storage", "dashboard"):
        link = ROOT / "prefsift" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), link
        spec = importlib.util.find_spec(f"prefsift.{name}")
        assert Path(spec.origin).resolve() == (ROOT / name / "__init__.py").resolve()


def test_nothing_uses_the_old_top_level_names():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the script lists files through git)")
    spec = importlib.util.spec_from_file_location("namespace_rename", ROOT / "tools" / "namespace_rename.py")
    rename = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rename)
    left = rename.leftovers()
    assert not left, (
        "old top-level names in use (python tools/namespace_rename.py converts them):\n" + "\n".join(left)
    )


def test_no_import_circles():
    """No module of prefsift reaches itself through its imports, late (in-function) imports
    included: a late import is how a circle hides, not how it goes away."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("prefsift")
    circles = sorted(
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    )
    assert not circles, circles
