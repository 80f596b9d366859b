"""Fine-tuning end to end: fit -> evaluate -> predict on tiny generated folders, like a user would."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tlkit.cli import main

TINY = ["--backbone", "seed_cnn", "--image-size", "32", "--batch-size", "8", "--quiet"]


def run_cli(*args):
    """Run the real console entry point in a subprocess; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items()}
    return subprocess.run([sys.executable, "-m", "tlkit.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, folder_factory):
    """One small run shared by the evaluate/predict tests."""
    root = tmp_path_factory.mktemp("fit")
    data = folder_factory(root / "data", classes=("red", "green", "blue"), per_class=12, size=32)
    run = root / "run"
    assert main(["fit", str(data), "--out", str(run), *TINY, "--tune", "full", "--epochs", "6",
                 "--lr", "0.01"]) == 0
    return data, run


def test_fit_writes_the_run_directory(trained_run):
    data, run = trained_run
    for name in ("model.safetensors", "config.json", "metrics.json", "curves.png", "confusion_matrix.png",
                 "config.yaml", "skipped_files.csv", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(6))
    for epoch in metrics["epochs"]:
        assert {"train_loss", "val_loss", "val_accuracy"} <= set(epoch)
    best = metrics["best"]
    assert best["epoch"] == min(metrics["epochs"], key=lambda e: e["val_loss"])["epoch"]
    assert best["val_accuracy"] >= 0.8  # three colours are easy
    config = json.loads((run / "config.json").read_text())
    assert config["class_names"] == ["blue", "green", "red"]
    assert config["image_size"] == 32 and config["backbone"] == "seed_cnn"
    assert config["mean"] == [0.5, 0.5, 0.5]


def test_evaluate_and_predict(trained_run, capsys):
    data, run = trained_run
    assert main(["evaluate", str(run), str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_images"] == 18  # the val split: 6 per class
    assert report["accuracy"] >= 0.8
    assert set(report["per_class"]) == {"red", "green", "blue"}
    assert sum(map(sum, report["confusion_matrix"])) == 18

    images = sorted((data / "val" / "red").glob("*.png"))[:2]
    assert main(["predict", str(run), *map(str, images), "--top-k", "2", "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert [p["image"] for p in predictions] == [str(i) for i in images]
    for item in predictions:
        assert len(item["predictions"]) == 2
        assert item["predictions"][0]["label"] == "red"
        assert item["predictions"][0]["probability"] >= item["predictions"][1]["probability"]


def test_predict_reports_a_bad_image_and_keeps_the_others(trained_run, tmp_path, capsys):
    data, run = trained_run
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    good = next((data / "val" / "blue").glob("*.png"))
    assert main(["predict", str(run), str(good), str(broken), "--json"]) == 2
    results = json.loads(capsys.readouterr().out)
    assert results[0]["predictions"][0]["label"] == "blue"
    assert "error" in results[1] and "predictions" not in results[1]


def test_config_yaml_replays_the_run(trained_run, tmp_path):
    _, run = trained_run
    replay = tmp_path / "replay"
    assert main(["fit", "--config", str(run / "config.yaml"), "--out", str(replay), "--epochs", "1"]) == 0
    config = json.loads((replay / "config.json").read_text())
    assert config["backbone"] == "seed_cnn" and config["image_size"] == 32
    assert len(json.loads((replay / "metrics.json").read_text())["epochs"]) == 1


def _fit_module(data, tune, epochs, backbone="seed_cnn", unfreeze_epoch=None):
    """Train a Classifier directly and return (initial state, final state, module)."""
    import pytorch_lightning as pl

    from tlkit.data import ImageFolderDataModule, scan_image_folder
    from tlkit.lightning_module import Classifier
    from tlkit.models import build_model
    from tlkit.transforms import eval_transform

    scan = scan_image_folder(data, progress=False)
    model = build_model(backbone, "gap", num_classes=scan.num_classes, image_size=32, pretrained=False)
    transform = eval_transform(32, model.mean, model.std)
    datamodule = ImageFolderDataModule(scan, train_transform=transform, eval_transform=transform,
                                       batch_size=4, num_workers=0)
    module = Classifier(model, tune=tune, lr=0.05, epochs=epochs, unfreeze_epoch=unfreeze_epoch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    return before, model.state_dict(), module


def _changed(before, after, prefix):
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("tune", ["head", "full"])
def test_tune_modes_change_exactly_their_parameters(image_folder, tune):
    before, after, _ = _fit_module(image_folder, tune, epochs=1, backbone="resnet18")
    head_changed = _changed(before, after, "head.")
    backbone_changed = _changed(before, after, "backbone.")
    assert head_changed == {k for k in before if k.startswith("head.")}
    if tune == "head":
        # weights and BatchNorm running statistics of a frozen backbone stay as they were
        assert backbone_changed == set()
    else:
        assert any(k.endswith("conv1.weight") for k in backbone_changed)
        assert any(k.endswith("running_mean") for k in backbone_changed)


def test_gradual_trains_the_head_first_then_everything(image_folder):
    before, after_frozen, _ = _fit_module(image_folder, "gradual", epochs=1, backbone="resnet18",
                                          unfreeze_epoch=1)
    assert _changed(before, after_frozen, "backbone.") == set()
    assert _changed(before, after_frozen, "head.")
    before, after, module = _fit_module(image_folder, "gradual", epochs=2, backbone="resnet18",
                                        unfreeze_epoch=1)
    assert any(k.endswith("conv1.weight") for k in _changed(before, after, "backbone."))
    assert module.backbone_frozen(0) and not module.backbone_frozen(1)


def test_feature_cache_makes_later_epochs_cheap_and_is_reused(image_folder, tmp_path, monkeypatch):
    from tlkit import feature_cache

    calls = []
    real = feature_cache.extract_features
    monkeypatch.setattr(feature_cache, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    common = [str(image_folder), *TINY, "--tune", "head", "--epochs", "3"]
    assert main(["fit", *common, "--out", str(tmp_path / "a")]) == 0
    assert len(calls) == 2  # train and val, once each for three epochs
    assert main(["fit", *common, "--out", str(tmp_path / "b")]) == 0
    assert len(calls) == 2  # a second run with the same backbone and files reuses them
    # a changed file invalidates the cached features of its split
    image = next((image_folder / "train" / "cat").glob("*.png"))
    image.write_bytes(image.read_bytes())
    os.utime(image, (time.time() + 5, time.time() + 5))
    assert main(["fit", *common, "--out", str(tmp_path / "c")]) == 0
    assert len(calls) == 3


def test_random_augmentation_bypasses_the_feature_cache(image_folder, tmp_path, monkeypatch):
    from tlkit import feature_cache

    monkeypatch.setattr(feature_cache, "cached_features",
                        lambda *a, **k: pytest.fail("features must not be cached with random augmentation"))
    assert main(["fit", str(image_folder), *TINY, "--tune", "head", "--augment", "lecture",
                 "--epochs", "1", "--out", str(tmp_path / "run")]) == 0


def test_broken_and_odd_files_are_skipped_and_recorded(tmp_path, folder_factory):
    from PIL import Image

    data = folder_factory(tmp_path / "data", per_class=6)
    (data / "train" / "cat" / "empty.jpg").write_bytes(b"")
    (data / "train" / "cat" / "text.jpg").write_text("hello")
    png = next((data / "train" / "dog").glob("*.png")).read_bytes()
    (data / "train" / "dog" / "truncated.png").write_bytes(png[: len(png) // 2])
    Image.new("RGBA", (20, 20), (255, 0, 0, 128)).save(data / "train" / "cat" / "alpha.PNG")
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(data / "train" / "dog" / "cmyk.JPG")
    run = tmp_path / "run"
    result = run_cli("fit", data, "--out", run, *TINY, "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "skipped 3 files" in result.stderr + result.stdout
    skipped = (run / "skipped_files.csv").read_text()
    assert "empty.jpg" in skipped and "text.jpg" in skipped and "truncated.png" in skipped
    assert "alpha.PNG" not in skipped and "cmyk.JPG" not in skipped


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs"),
    (["--backbone", "seed_cn"], "Did you mean 'seed_cnn'"),
    (["--augment", "nope"], "augmentation"),
    (["--head", "flaten"], "Did you mean 'flatten'"),
    (["--val-split", "1.5"], "--val-split"),
])
def test_bad_arguments_exit_2_with_one_line(image_folder, tmp_path, args, message):
    result = run_cli("fit", image_folder, "--out", tmp_path / "run", "--quiet", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_data_dirs_exit_2(tmp_path):
    assert run_cli("fit", tmp_path / "missing", "--quiet").returncode == 2
    (tmp_path / "empty").mkdir()
    result = run_cli("fit", tmp_path / "empty", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_pretrained_without_weights_exits_2_fast(image_folder, tmp_path):
    started = time.time()
    result = run_cli("fit", image_folder, "--out", tmp_path / "run", "--backbone", "resnet50", "--pretrained",
                     "--quiet")
    assert result.returncode == 2
    assert "--no-pretrained" in result.stderr and "--weights" in result.stderr
    assert time.time() - started < 60  # no minutes-long wait on an unreachable hub


def test_weights_file_in_timm_layout(image_folder, tmp_path):
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("resnet18", pretrained=False)  # with its fc classifier
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    run = tmp_path / "run"
    assert main(["fit", str(image_folder), "--out", str(run), "--backbone", "resnet18", "--weights", str(path),
                 "--image-size", "32", "--epochs", "1", "--quiet"]) == 0
    from tlkit.runs import load_model

    model = load_model(run)  # head mode: the backbone still holds the given weights
    assert torch.equal(model.backbone.model.conv1.weight, reference.conv1.weight)


def test_refuses_to_overwrite_a_run(trained_run, capsys):
    data, run = trained_run
    assert main(["fit", str(data), "--out", str(run), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_after_kill(tmp_path, folder_factory):
    data = folder_factory(tmp_path / "data", per_class=24, size=32)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "tlkit.cli", "fit", str(data), "--out", str(run), "--backbone", "seed_cnn",
            "--image-size", "32", "--tune", "full", "--epochs", "8", "--batch-size", "4", "--quiet"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            metrics = run / "metrics.json"
            if (run / "checkpoints" / "last.ckpt").is_file() and metrics.is_file():
                if len(json.loads(metrics.read_text())["epochs"]) >= 2:
                    break
            time.sleep(0.05)
        assert process.poll() is None, "the run finished before it could be killed; make it longer"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    done = len(json.loads((run / "metrics.json").read_text())["epochs"])
    assert 2 <= done < 8
    result = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(8))


def test_distributed_data_parallel_on_two_cpu_processes(image_folder, tmp_path):
    run = tmp_path / "run"
    result = run_cli("fit", image_folder, "--out", run, *TINY, "--tune", "gradual", "--unfreeze-epoch", "1",
                     "--epochs", "2", "--devices", "2", "--accelerator", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert [e["backbone_frozen"] for e in metrics["epochs"]] == [True, False]
    assert (run / "model.safetensors").is_file()
    assert result.stdout.count("run directory:") == 1  # only rank 0 reports
