"""Augmentation preview: ``tlkit augment`` on an image and on a folder, the Python API, the errors."""

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tlkit.augment import GRID_DPI, TILE_INCHES, augmentation_grid, augmentation_samples, grid_layout
from tlkit.cli import main
from tlkit.errors import TlkitError, UnknownNameError

POLICIES = ["none", "lecture", "randaugment", "trivialaugment", "autoaugment"]


def picture(path, colour, size=(60, 40)):
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    draw.ellipse((5, 5, 35, 35), fill=(250, 210, 0))
    draw.rectangle((30, 15, 55, 38), fill=(0, 80, 200))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def image(tmp_path):
    return picture(tmp_path / "cat.png", (200, 120, 90))


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    picture(root / "a.png", (200, 120, 90))
    picture(root / "b.jpg", (30, 90, 30))
    picture(root / "deeper" / "c.png", (20, 20, 60))
    (root / "broken.png").write_bytes(b"not a png")  # skipped, not fatal
    (root / "notes.txt").write_text("not an image")  # ignored
    return root


def expected_size(rows, columns):
    """Pixel size of a grid figure: fixed tile inches plus the title band (see tlkit.augment)."""
    return round(columns * TILE_INCHES * GRID_DPI), round((rows * TILE_INCHES + 0.45) * GRID_DPI)


def assert_png_of_grid(path, rows, columns):
    with Image.open(path) as png:
        assert png.format == "PNG"
        width, height = expected_size(rows, columns)
        assert abs(png.width - width) <= 2 and abs(png.height - height) <= 2
        assert np.asarray(png.convert("RGB")).std() > 10  # pictures, not a blank page


def test_grid_layout():
    assert grid_layout(16, 1) == (4, 5)  # original + 16 samples, near square
    assert grid_layout(8, 1) == (3, 3)
    assert grid_layout(6, 3) == (2, 6)  # 3 groups of (original + 2), two groups per row
    assert grid_layout(16, 16) == (4, 8)  # 16 pairs, four per row
    assert grid_layout(16, 2) == (2, 9)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_draws_a_grid_of_one_image(image, tmp_path, policy):
    out = augmentation_grid(image, policy=policy, n=8, out=tmp_path / "out" / f"{policy}.png", image_size=32)
    assert out == tmp_path / "out" / f"{policy}.png"
    assert_png_of_grid(out, *grid_layout(8, 1))


def test_a_folder_is_sampled_recursively_skipping_unreadable_files(folder, tmp_path):
    out = augmentation_grid(folder, policy="lecture", n=6, out=tmp_path / "grid.png", image_size=32)
    assert_png_of_grid(out, *grid_layout(6, 3))  # a.png, b.jpg, deeper/c.png; broken.png skipped


def test_samples_are_seeded_and_leave_the_global_random_state_alone(image):
    random.seed(5)
    torch.manual_seed(5)
    before = (random.random(), torch.rand(1).item())
    random.seed(5)
    torch.manual_seed(5)
    first = augmentation_samples(image, "randaugment", n=4, image_size=32, seed=1)
    after = (random.random(), torch.rand(1).item())
    assert after == before
    again = augmentation_samples(image, "randaugment", n=4, image_size=32, seed=1)
    other = augmentation_samples(image, "randaugment", n=4, image_size=32, seed=2)
    assert [s.tobytes() for s in first] == [s.tobytes() for s in again]
    assert [s.tobytes() for s in first] != [s.tobytes() for s in other]
    assert all(s.size == (32, 32) and s.mode == "RGB" for s in first)
    assert len({s.tobytes() for s in first}) > 1  # augmented, not copies


def test_policy_options_reach_the_policy(image):
    from torchvision.transforms.functional import resize

    plain = augmentation_samples(Image.open(image), "none", n=2, image_size=24)
    resized = resize(Image.open(image).convert("RGB"), [24, 24], antialias=True)
    assert plain[0].tobytes() == plain[1].tobytes() == resized.tobytes()
    with pytest.raises(TlkitError, match="augmentation policy 'lecture' rejected its options"):
        augmentation_samples(image, "lecture", n=1, image_size=24, options={"rotaton": 10})
    with pytest.raises(TlkitError, match="unknown AutoAugment policy 'mnist'"):
        augmentation_samples(image, "autoaugment", n=1, image_size=24, options={"policy": "mnist"})


def test_a_policy_that_returns_tensors_is_drawn_too(image, tmp_path):
    from tlkit import hookimpl
    from tlkit.plugins import get_host

    class TensorPolicy:
        @hookimpl
        def register_augmentations(self, register):
            def to_tensor(*, image_size):
                from torchvision import transforms

                return transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])

            register("test_tensor_policy", to_tensor)

    host = get_host()
    name = host.register(TensorPolicy(), name="test-tensor-policy")
    try:
        samples = augmentation_samples(image, "test_tensor_policy", n=2, image_size=20)
        assert all(isinstance(s, Image.Image) and s.size == (20, 20) for s in samples)
        out = augmentation_grid(image, policy="test_tensor_policy", n=3, out=tmp_path / "t.png", image_size=20)
        assert_png_of_grid(out, *grid_layout(3, 1))
    finally:
        host.unregister(name)


def test_errors(tmp_path, image):
    with pytest.raises(TlkitError, match="does not exist"):
        augmentation_grid(tmp_path / "missing.png", policy="none", out=tmp_path / "x.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TlkitError, match="holds no image files"):
        augmentation_grid(tmp_path / "empty", policy="none", out=tmp_path / "x.png")
    with pytest.raises(UnknownNameError, match="Did you mean 'lecture'.*Valid augmentations: .*randaugment"):
        augmentation_grid(image, policy="lectur", out=tmp_path / "x.png")
    with pytest.raises(TlkitError, match="between 1 and 256, got 0"):
        augmentation_grid(image, policy="none", n=0, out=tmp_path / "x.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(TlkitError, match="bad.png: not an image"):
        augmentation_grid(bad, policy="none", out=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# -- the command line -----------------------------------------------------------------------------
def test_cli_augment_an_image(image, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = main(["augment", str(image), "--policy", "lecture", "--n", "5", "--image-size", "32", "--out", str(out)])
    assert code == 0
    assert str(out) in capsys.readouterr().out
    assert_png_of_grid(out, *grid_layout(5, 1))


def test_cli_augment_a_folder(folder, tmp_path):
    out = tmp_path / "grid.png"
    code = main(["augment", str(folder), "--policy", "trivialaugment", "--n", "16", "--image-size", "32",
                 "--seed", "3", "--out", str(out)])
    assert code == 0
    assert_png_of_grid(out, *grid_layout(16, 3))


def test_cli_augment_unknown_policy_exits_2_listing_valid_names(image, tmp_path, capsys):
    code = main(["augment", str(image), "--policy", "nope", "--out", str(tmp_path / "x.png")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for name in POLICIES:
        assert name in err
    assert not (tmp_path / "x.png").exists()


def test_cli_augment_missing_source_exits_2(tmp_path, capsys):
    code = main(["augment", str(tmp_path / "nowhere"), "--policy", "none", "--out", str(tmp_path / "x.png")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
