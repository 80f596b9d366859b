"""Image reading, folder scanning, the DataModule and the built-in sample data (all with tiny images)."""

from __future__ import annotations

import csv
import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from tlkit.data import (
    ImageDataset,
    ImageFolderDataModule,
    Sample,
    ScanResult,
    SkippedFile,
    scan_image_folder,
)
from tlkit.errors import TlkitError
from tlkit.images import IMAGE_EXTENSIONS, ImageError, check_image, is_image_file, load_rgb
from tlkit.sample_data import SAMPLE_CLASSES, make_sample_dataset, sample_data_dir

# --- helpers -----------------------------------------------------------------------------------


def save_image(path, size=(16, 16), color=(200, 30, 30), mode="RGB", fmt=None, **save_args):
    """A small solid image at ``path`` (parents created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt, **save_args)
    return path


def noise_bytes(fmt, size=(32, 32), seed=0):
    """Encoded noise image: noise defeats compression, so cutting the file loses real pixel data."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def make_flat(root, counts, size=(16, 16)):
    """root/<class>/img_N.png with counts[class] images each, distinct colours per class."""
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            save_image(root / name / f"img_{i:02d}.png", size=size, color=(40 * k % 256, 10 * i % 256, 90))
    return root


# --- images.py ---------------------------------------------------------------------------------


def test_image_extensions_are_lower_case_and_matched_case_insensitively():
    expected = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
    assert expected <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    assert isinstance(IMAGE_EXTENSIONS, frozenset)
    assert is_image_file("a/b/photo.JPG") and is_image_file("x.PnG") and is_image_file("y.Tiff")
    assert not is_image_file("notes.txt") and not is_image_file("jpg")


def test_rgba_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 255, 0))  # fully transparent blue -> white
    img.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black -> mid grey
    img.save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert out.mode == "RGB" and out.size == (4, 2)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert all(120 <= c <= 135 for c in out.getpixel((1, 0)))
    assert out.getpixel((3, 1)) == (255, 0, 0)


def test_palette_with_transparency_becomes_white(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 255, 0, 0, 0, 255] + [0] * 762)  # index 0 green, index 1 blue
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "p.png", transparency=0)
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = load_rgb(tmp_path / "p.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 0, 255)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    save_image(tmp_path / "c.jpg", mode="CMYK", color=(0, 255, 255, 0), quality=95)  # pure red in CMYK
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    r, g, b = load_rgb(tmp_path / "c.jpg").getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode in ("I;16", "I")
    out = load_rgb(tmp_path / "g16.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((2, 0)) == (255, 255, 255)
    assert all(abs(c - 128) <= 1 for c in out.getpixel((1, 0)))
    assert out.getpixel((3, 0))[0] == 4  # 1000/65535*255; clipping would give 255


def test_32bit_int_and_float_grey_are_scaled(tmp_path):
    Image.fromarray(np.array([[0, 2**31 - 1]], dtype=np.int32)).save(tmp_path / "i32.tif")
    out = load_rgb(tmp_path / "i32.tif")
    assert [out.getpixel((x, 0))[0] for x in range(2)] == [0, 255]
    Image.fromarray(np.array([[-1.0, 0.0, 3.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    out = load_rgb(tmp_path / "f.tif")
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 64, 255]


def test_grey_and_bilevel_become_rgb(tmp_path):
    save_image(tmp_path / "l.png", mode="L", color=100)
    assert load_rgb(tmp_path / "l.png").getpixel((3, 3)) == (100, 100, 100)
    save_image(tmp_path / "one.pbm", mode="1", color=1)
    assert load_rgb(tmp_path / "one.pbm").getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    assert Image.open(tmp_path / "rot.jpg").size == (40, 20)
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    assert out.getpixel((10, 2))[0] > 200  # the white left edge is now the top
    assert out.getpixel((10, 37))[0] < 50


def test_load_rgb_accepts_file_objects_and_returns_independent_image(tmp_path):
    data = noise_bytes("PNG", size=(8, 6))
    out = load_rgb(io.BytesIO(data))
    assert out.mode == "RGB" and out.size == (8, 6)
    path = tmp_path / "n.png"
    path.write_bytes(data)
    img = load_rgb(path)
    path.unlink()  # the returned image must not depend on the file
    assert np.array_equal(np.asarray(img), np.asarray(out))


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"plain text, not a JPEG", "not an image"),
        ("cut.jpg", lambda: noise_bytes("JPEG")[:-400], "truncated or corrupt image"),
        ("cut.png", lambda: noise_bytes("PNG")[: len(noise_bytes("PNG")) // 2], "truncated or corrupt image"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png"],
)
def test_check_image_reasons(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content() if callable(content) else content)
    assert check_image(path) == reason
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert info.value.reason == reason and name in str(info.value)


def test_check_image_good_and_missing(tmp_path):
    assert check_image(save_image(tmp_path / "ok.webp", color=(1, 2, 3))) is None
    reason = check_image(tmp_path / "missing.png")
    assert reason.startswith("unreadable: ")


def test_decompression_bomb_limits_are_respected(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    save_image(tmp_path / "small.png", size=(20, 20))  # 400 pixels
    save_image(tmp_path / "warn.png", size=(40, 40))  # 1600: Pillow only warns here
    save_image(tmp_path / "error.png", size=(64, 64))  # 4096 > 2 x limit: Pillow raises
    assert check_image(tmp_path / "small.png") is None
    bomb = "decompression bomb (over Pillow's pixel limit)"
    with pytest.warns(Image.DecompressionBombWarning):
        assert check_image(tmp_path / "warn.png") == bomb
    assert check_image(tmp_path / "error.png") == bomb


def test_image_error_survives_dataloader_style_recreation():
    err = ImageError("truncated or corrupt image", "a/b.jpg")
    assert str(err) == "a/b.jpg: truncated or corrupt image"
    again = pickle.loads(pickle.dumps(err))
    assert again.reason == err.reason and again.path == err.path
    assert isinstance(ImageError("one message only"), TlkitError)


# --- scanning ----------------------------------------------------------------------------------


def test_split_layout_with_test_folder(tmp_path):
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for cls in ("dog", "cat"):
            for i in range(n):
                save_image(tmp_path / split / cls / f"{i}.png")
    scan = scan_image_folder(tmp_path, progress=False)
    assert scan.layout == "split"
    assert scan.class_names == ["cat", "dog"]
    assert {k: len(v) for k, v in scan.splits.items()} == {"train": 6, "val": 4, "test": 2}
    assert scan.class_counts("val") == {"cat": 2, "dog": 2}
    assert all(("/cat/" in s.path) == (s.label == 0) for s in scan.splits["train"])
    assert scan.skipped == []
    assert scan.summary() == "12 images in 2 classes (train 6, val 4, test 2)"


def test_split_layout_val_class_missing_from_train_is_an_error(tmp_path):
    save_image(tmp_path / "train" / "a" / "1.png")
    save_image(tmp_path / "train" / "b" / "1.png")
    save_image(tmp_path / "val" / "a" / "1.png")
    save_image(tmp_path / "val" / "zebra" / "1.png")
    with pytest.raises(TlkitError, match="'zebra'"):
        scan_image_folder(tmp_path, progress=False)


def test_split_layout_val_subset_of_classes_is_fine(tmp_path):
    for cls in ("a", "b", "c"):
        save_image(tmp_path / "train" / cls / "1.png")
    save_image(tmp_path / "val" / "b" / "1.png")
    scan = scan_image_folder(tmp_path, progress=False)
    assert scan.class_names == ["a", "b", "c"]
    assert scan.class_counts("val") == {"a": 0, "b": 1, "c": 0}


def test_train_folder_alone_gets_validation_split_off(tmp_path):
    make_flat(tmp_path / "train", {"a": 5, "b": 5})
    scan = scan_image_folder(tmp_path, val_split=0.2, progress=False)
    assert scan.layout == "split"
    assert scan.class_counts("train") == {"a": 4, "b": 4}
    assert scan.class_counts("val") == {"a": 1, "b": 1}


def test_flat_layout_stratified_seeded_split(tmp_path):
    make_flat(tmp_path, {"big": 10, "mid": 5, "pair": 2, "single": 1})
    scan = scan_image_folder(tmp_path, val_split=0.2, seed=3, progress=False)
    assert scan.layout == "flat"
    assert scan.class_names == ["big", "mid", "pair", "single"]
    # round(n * 0.2), but at least 1 for n >= 2 and none for a lone image
    assert scan.class_counts("val") == {"big": 2, "mid": 1, "pair": 1, "single": 0}
    assert scan.class_counts("train") == {"big": 8, "mid": 4, "pair": 1, "single": 1}
    all_paths = [s.path for split in scan.splits.values() for s in split]
    assert len(all_paths) == len(set(all_paths)) == 18

    again = scan_image_folder(tmp_path, val_split=0.2, seed=3, progress=False)
    assert again.splits == scan.splits
    val_sets = set()
    for seed in range(6):
        other = scan_image_folder(tmp_path, val_split=0.2, seed=seed, progress=False)
        val_sets.add(tuple(s.path for s in other.splits["val"]))
    assert len(val_sets) > 1  # the seed matters


def test_extension_case_and_hidden_files(tmp_path):
    save_image(tmp_path / "a" / "one.JPG", fmt="JPEG")
    save_image(tmp_path / "a" / "two.PnG", fmt="PNG")
    save_image(tmp_path / "a" / "nested" / "deeper" / "three.png")  # found recursively
    save_image(tmp_path / "a" / ".hidden.png")
    save_image(tmp_path / "a" / ".ipynb_checkpoints" / "copy.png")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0\1junk")
    save_image(tmp_path / ".trash" / "x.png")  # a hidden folder is not a class
    save_image(tmp_path / "b" / "b1.jpeg", fmt="JPEG")
    save_image(tmp_path / "b" / "b2.bmp")
    (tmp_path / "README.txt").write_text("about this data")  # files next to the classes: ignored
    save_image(tmp_path / "stray.png")  # an image without a class: recorded
    scan = scan_image_folder(tmp_path, val_split=0.4, progress=False)
    assert scan.class_names == ["a", "b"]
    names = sorted(s.path.rsplit("/", 1)[-1] for split in scan.splits.values() for s in split)
    assert names == ["b1.jpeg", "b2.bmp", "one.JPG", "three.png", "two.PnG"]
    skipped = [(s.path.rsplit("/", 1)[-1], s.reason) for s in scan.skipped]
    assert skipped == [("stray.png", "not inside a class folder")]


def test_bad_files_are_skipped_with_reasons(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    for i in range(3):
        save_image(tmp_path / "good" / f"{i}.png")
        save_image(tmp_path / "other" / f"{i}.jpg", fmt="JPEG")
    bad = tmp_path / "good"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("hello, I am text")
    (bad / "cut.jpg").write_bytes(noise_bytes("JPEG")[:-400])
    png = noise_bytes("PNG")
    (bad / "cut.png").write_bytes(png[: len(png) // 2])
    save_image(bad / "bomb.png", size=(48, 48))  # 2304 pixels: in Pillow's warning range
    (bad / "notes.txt").write_text("labels are folder names")

    scan = scan_image_folder(tmp_path, progress=False)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in scan.skipped}
    assert reasons == {
        "empty.jpg": "empty file",
        "text.jpg": "not an image",
        "cut.jpg": "truncated or corrupt image",
        "cut.png": "truncated or corrupt image",
        "bomb.png": "decompression bomb (over Pillow's pixel limit)",
        "notes.txt": "not an image file extension",
    }
    assert sum(len(v) for v in scan.splits.values()) == 6
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    used = {s.path for v in scan.splits.values() for s in v}
    assert not used & {s.path for s in scan.skipped}

    record = scan.write_skipped(tmp_path / "run" / "skipped_files.csv")
    with open(record, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "reason"]
    assert sorted(r[1] for r in rows[1:]) == sorted(reasons.values())
    assert scan.summary() == (
        "6 images in 2 classes (train 4, val 2); skipped 6 files (see skipped_files.csv)"
    )


def test_progress_bar_on_stderr(tmp_path, monkeypatch, capsys):
    import tlkit.data

    monkeypatch.setattr(tlkit.data, "_PROGRESS_MIN_FILES", 2)
    make_flat(tmp_path, {"a": 2, "b": 2})
    scan_image_folder(tmp_path, progress=True)
    captured = capsys.readouterr()
    assert "Checking images" in captured.err and captured.out == ""
    scan_image_folder(tmp_path, progress=False)
    assert "Checking images" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.write_text("x"), "is not a directory"),
        (lambda root: root.mkdir(), "no class folders"),
        (lambda root: save_image(root / "a.png"), "move them into one subfolder per class"),
        (lambda root: make_flat(root, {"only": 4}), "only one class"),
        (lambda root: make_flat(root, {"a": 1, "b": 1}), "validation split .* is empty"),
        (lambda root: (make_flat(root, {"a": 3}), (root / "b").mkdir()), "class 'b' has no usable images"),
        (
            lambda root: (make_flat(root / "train", {"a": 2, "b": 2}), (root / "val/a").mkdir(parents=True)),
            "has no usable images",
        ),
    ],
    ids=["missing", "file", "empty", "loose-images", "one-class", "no-val", "empty-class", "empty-val"],
)
def test_scan_errors(tmp_path, setup, match):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(TlkitError, match=match) as info:
        scan_image_folder(root, progress=False)
    message = str(info.value)
    assert "\n" not in message and "data" in message  # one line that names the folder


def test_class_with_only_broken_files_is_an_error(tmp_path):
    make_flat(tmp_path, {"cat": 3})
    (tmp_path / "dog").mkdir()
    for i in range(3):
        (tmp_path / "dog" / f"{i}.jpg").write_bytes(b"broken")
    with pytest.raises(TlkitError, match=r"class 'dog' has no usable images \(3 skipped") as info:
        scan_image_folder(tmp_path, progress=False)
    assert "not an image" in str(info.value)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.2", True])
def test_val_split_must_be_a_fraction(tmp_path, bad):
    make_flat(tmp_path, {"a": 3, "b": 3})
    with pytest.raises(TlkitError, match="val-split"):
        scan_image_folder(tmp_path, val_split=bad, progress=False)


# --- datasets and the DataModule ---------------------------------------------------------------

TO_16 = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])


def test_image_dataset_returns_transformed_image_and_label(tmp_path):
    path = save_image(tmp_path / "x.png", size=(30, 20), color=(255, 0, 0))
    ds = ImageDataset([Sample(str(path), 3)], TO_16)
    image, label = ds[0]
    assert len(ds) == 1 and label == 3
    assert image.shape == (3, 16, 16) and torch.allclose(image[0], torch.ones(16, 16))
    raw, _ = ImageDataset([Sample(str(path), 0)])[0]
    assert isinstance(raw, Image.Image) and raw.size == (30, 20)


def test_datamodule_batches(tmp_path):
    make_flat(tmp_path / "train", {"a": 3, "b": 2}, size=(24, 20))
    make_flat(tmp_path / "val", {"a": 2, "b": 1}, size=(24, 20))
    scan = scan_image_folder(tmp_path, progress=False)
    dm = ImageFolderDataModule(scan, train_transform=TO_16, eval_transform=TO_16, batch_size=4)
    assert dm.num_classes == 2 and dm.class_names == ["a", "b"]
    assert dm.num_workers == 0  # few images: no worker processes
    assert dm.pin_memory == torch.cuda.is_available()
    dm.setup("fit")
    train = list(dm.train_dataloader())
    # 5 images in batches of 4 would end with a batch of 1, which BatchNorm cannot train on
    assert [len(y) for _, y in train] == [4]
    x, y = train[0]
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    val = list(dm.val_dataloader())
    assert [len(y) for _, y in val] == [3]
    assert sorted(val[0][1].tolist()) == [0, 0, 1]
    test = list(dm.test_dataloader())  # no test split: the val images
    assert torch.equal(test[0][1], val[0][1])
    assert [len(y) for _, y in dm.predict_dataloader()] == [3]


def test_datamodule_keeps_last_batch_larger_than_one(tmp_path):
    make_flat(tmp_path / "train", {"a": 3, "b": 3})
    make_flat(tmp_path / "val", {"a": 1, "b": 1})
    scan = scan_image_folder(tmp_path, progress=False)
    dm = ImageFolderDataModule(scan, train_transform=TO_16, eval_transform=TO_16, batch_size=4)
    assert sorted(len(y) for _, y in dm.train_dataloader()) == [2, 4]


def test_datamodule_uses_test_split_and_worker_defaults(tmp_path, monkeypatch):
    import tlkit.data

    fake = [Sample(f"img{i}.png", i % 2) for i in range(64)]
    scan = ScanResult(
        class_names=["a", "b"],
        splits={"train": fake, "val": fake[:4], "test": fake[:6]},
        skipped=[SkippedFile("x.txt", "not an image file extension")],
        layout="split",
    )
    monkeypatch.setattr(tlkit.data, "_available_cpus", lambda: 8)
    dm = ImageFolderDataModule(scan, train_transform=None, eval_transform=None)
    assert dm.num_workers == 4
    monkeypatch.setattr(tlkit.data, "_available_cpus", lambda: 2)
    dm = ImageFolderDataModule(scan, train_transform=None, eval_transform=None)
    assert dm.num_workers == 1
    loader = dm.test_dataloader()
    assert len(loader.dataset) == 6 and loader.persistent_workers
    explicit = ImageFolderDataModule(
        scan, train_transform=None, eval_transform=None, num_workers=0, pin_memory=True
    )
    assert explicit.num_workers == 0 and explicit.pin_memory is True


# --- sample data -------------------------------------------------------------------------------


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sample_dataset_is_deterministic_with_documented_layout(tmp_path):
    a = make_sample_dataset(tmp_path / "a", per_class=6, image_size=32, seed=1)
    b = make_sample_dataset(tmp_path / "b", per_class=6, image_size=32, seed=1)
    files_a, files_b = _tree_bytes(a), _tree_bytes(b)
    assert files_a == files_b
    assert "README.txt" in files_a
    for cls in SAMPLE_CLASSES:
        assert len([p for p in files_a if p.startswith(f"train/{cls}/")]) == 4  # 6 - round(6 * 0.25)
        assert len([p for p in files_a if p.startswith(f"val/{cls}/")]) == 2
    assert len(files_a) == 4 * 6 + 1
    other = _tree_bytes(make_sample_dataset(tmp_path / "c", per_class=6, image_size=32, seed=2))
    assert other.keys() == files_a.keys() and other != files_a

    scan = scan_image_folder(a, progress=False)
    assert scan.layout == "split" and scan.skipped == []
    assert scan.class_names == sorted(SAMPLE_CLASSES)
    image = load_rgb(scan.splits["train"][0].path)
    assert image.size == (32, 32)
    assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 2  # a shape on a background


def test_sample_shapes_differ_from_their_background(tmp_path):
    root = make_sample_dataset(tmp_path, per_class=4, image_size=48)
    for path in sorted(root.rglob("*.png")):
        arr = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        assert arr.max() - arr.min() > 60, path.name


def test_sample_data_dir_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_HOME", str(tmp_path / "home"))
    first = sample_data_dir()
    assert first == tmp_path / "home" / "sample_data" / "shapes-v1"  # the README names this folder
    pngs = sorted(first.rglob("*.png"))
    assert len(pngs) == 60 * len(SAMPLE_CLASSES)
    stamp = pngs[0].stat().st_mtime_ns
    assert sample_data_dir() == first and pngs[0].stat().st_mtime_ns == stamp  # not regenerated
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary folders left
    scan = scan_image_folder(first, progress=False)
    assert scan.summary() == "240 images in 4 classes (train 180, val 60)"
    assert sample_data_dir(tmp_path / "elsewhere").parent == tmp_path / "elsewhere"
