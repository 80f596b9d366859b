"""Fake installed distributions for entry-point discovery.

``DummyEntryPoint`` stands in for ``importlib.metadata.EntryPoint`` (as pytest's own tests do):
``tlkit.plugins._entry_points`` is monkeypatched to return a list of them. ``write_distribution``
writes a real, minimal distribution (modules + ``*.dist-info``) into a folder, so that a subprocess
with that folder on ``PYTHONPATH`` discovers it through ``importlib.metadata`` exactly like a
pip-installed plugin.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DummyDist:
    name: str
    version: str


@dataclass
class DummyEntryPoint:
    """``name = value`` in group ``tlkit`` of distribution ``dist``; ``load`` imports ``value``."""

    name: str
    value: str
    dist: DummyDist
    group: str = "tlkit"

    def load(self):
        module_name, _, attribute = self.value.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module


def entry_point(name: str, module: str, dist: str | None = None, version: str = "1.0") -> DummyEntryPoint:
    return DummyEntryPoint(name=name, value=module, dist=DummyDist(dist or f"tlkit-{name}", version))


def write_distribution(root: Path, dist_name: str, version: str, *, modules: dict[str, str],
                       entry_points: dict[str, str]) -> Path:
    """Write ``modules`` (name -> source) and a dist-info declaring ``entry_points`` in group tlkit."""
    root.mkdir(parents=True, exist_ok=True)
    for module_name, source in modules.items():
        (root / f"{module_name}.py").write_text(source, encoding="utf-8")
    info = root / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n", encoding="utf-8")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[tlkit]\n{lines}", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")
    return root


def fixture_source(module: str) -> str:
    """Source text of one of the plugin modules in this folder (to install it as a distribution)."""
    return (Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8")
