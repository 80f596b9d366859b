"""Shared test set-up.

Installed third-party plugins must not change the suite's results, so only the builtin plugins load
unless a test asks for more (the same guard as llm's and datasette's suites). Caches go to a
temporary TLKIT_HOME so that tests never reuse features or sample data from a user's machine.
"""

import os

import pytest

os.environ["TLKIT_LOAD_PLUGINS"] = ""
os.environ.pop("TLKIT_STRICT_PLUGINS", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _tlkit_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("tlkit_home")
    previous = os.environ.get("TLKIT_HOME")
    os.environ["TLKIT_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("TLKIT_HOME", None)
    else:
        os.environ["TLKIT_HOME"] = previous


@pytest.fixture
def fresh_host(monkeypatch):
    """A plugin host rebuilt for this test and forgotten afterwards (for tests that register plugins)."""
    from tlkit import plugins

    plugins.reset_host()
    yield plugins.get_host()
    plugins.reset_host()


def make_image_folder(root, classes=("cat", "dog"), per_class=6, size=32, split=True, seed=0):
    """A tiny image folder: each class a distinct colour pattern so that a model can learn it."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    parts = {"train": per_class, "val": max(2, per_class // 2)} if split else {"": per_class}
    for part, count in parts.items():
        for index, name in enumerate(classes):
            folder = root / part / name if part else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                channel = index % 3
                pixels[..., channel] = np.clip(pixels[..., channel].astype(int) + 160, 0, 255)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def folder_factory():
    """``make_image_folder`` for tests that need other sizes (conftest is not importable by name:
    the example plugin's tests have a conftest too)."""
    return make_image_folder
