"""The command line as a user meets it: fast help and listings, JSON on stdout, and bad usage answered
with exit status 2 and one line on stderr, never a traceback."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tlkit.cli import main

HEAVY = ("torch", "torchvision", "timm", "pytorch_lightning", "lightning", "gradio", "captum")


def run_tlkit(*args, env_extra=None, drop=(), timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "tlkit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_one_line_error(result_or_stderr, command="tlkit"):
    stderr = getattr(result_or_stderr, "stderr", result_or_stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(command) and "error" in lines[0]
    assert "Traceback" not in stderr
    return lines[0]


# -- startup stays light -----------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["--help"], ["fit", "--help"], ["list", "backbones"], ["list", "heads", "--json"], ["plugins"],
], ids=lambda args: " ".join(args))
def test_help_and_listings_do_not_import_torch_gradio_or_lightning(args, tmp_path):
    report = tmp_path / "modules.json"
    script = textwrap.dedent(f"""
        import json, sys
        from tlkit.cli import main
        try:
            code = main({args!r})
        except SystemExit as exc:
            code = exc.code
        heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
        with open({str(report)!r}, "w") as handle:
            json.dump({{"code": code, "heavy": heavy}}, handle)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(report.read_text())
    assert outcome == {"code": 0, "heavy": []}
    assert result.stdout.strip()


def test_help_lists_the_commands():
    result = run_tlkit("--help")
    assert result.returncode == 0
    for command in ("plugins", "list", "summary", "fit", "evaluate", "predict", "explain", "augment", "demo"):
        assert command in result.stdout


def test_version(capsys):
    import tlkit

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"tlkit {tlkit.__version__}"


# -- tlkit list ----------------------------------------------------------------------------------------
def test_list_backbones_json_is_pure_json_on_stdout():
    result = run_tlkit("list", "backbones", "--json")
    assert result.returncode == 0
    document = json.loads(result.stdout)  # nothing but the document on stdout
    names = [entry["name"] for entry in document["backbones"]]
    assert {"seed_cnn", "cats_cnn", "vgg16", "inception_v3", "resnet50", "efficientnet_lite0"} <= set(names)
    seed = next(entry for entry in document["backbones"] if entry["name"] == "seed_cnn")
    assert seed == {"name": "seed_cnn", "aliases": ["mnist_cnn"], "plugin": "lecture_cnns",
                    "description": seed["description"]}
    assert "32-64-64" in seed["description"]


def test_list_heads(capsys):
    assert main(["list", "heads"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()]
    assert names == ["dropout", "flatten", "gap"]
    assert "[heads]" in out


def test_list_with_a_pattern(capsys):
    assert main(["list", "backbones", "res*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["resnet18", "resnet50"]
    assert main(["list", "augmentations", "augment"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "autoaugment", "randaugment", "trivialaugment"]


def test_list_with_a_pattern_that_matches_nothing_says_what_is_valid(capsys):
    assert main(["list", "heads", "zzz*"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no heads match 'zzz*'" in captured.err and "flatten" in captured.err


def test_list_interpreters_shows_the_builtins(capsys):
    assert main(["list", "interpreters", "--json"]) == 0
    names = {entry["name"] for entry in json.loads(capsys.readouterr().out)["interpreters"]}
    assert {"feature_maps", "filters", "integrated_gradients", "saliency", "occlusion", "gradcam"} <= names


def test_list_of_an_unknown_kind_exits_2_with_one_line():
    result = run_tlkit("list", "nope")
    assert result.returncode == 2
    line = assert_one_line_error(result)
    assert "'nope'" in line and "backbones" in line and "interpreters" in line
    assert result.stdout == ""


# -- tlkit summary -----------------------------------------------------------------------------------
def test_summary_prints_the_lectures_parameter_count():
    tlkit = shutil.which("tlkit") or pytest.skip("the tlkit script is not on PATH")
    result = subprocess.run([tlkit, "summary", "--backbone", "seed_cnn", "--head", "flatten",
                             "--image-size", "28", "--num-classes", "10"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Total params: 93,898" in result.stdout
    assert "18 / 4" in result.stdout  # conv3's receptive field


def test_summary_with_an_unknown_backbone_suggests_the_close_match(capsys):
    assert main(["summary", "--backbone", "resnt50", "--head", "gap"]) == 2
    captured = capsys.readouterr()
    line = assert_one_line_error(captured.err, "tlkit summary")
    assert "Did you mean 'resnet50'?" in line
    assert captured.out == ""


# -- tlkit fit: bad usage --------------------------------------------------------------------------
@pytest.fixture
def data(image_folder):
    """A tiny train/val image folder (conftest's ``image_folder``)."""
    return image_folder


def fit_error(capsys, tmp_path, *args):
    """Run `tlkit fit ARGS --out RUN` in-process; return its one-line error."""
    code = main(["fit", *args, "--out", str(tmp_path / "run"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    return assert_one_line_error(captured.err, "tlkit fit")


def test_fit_with_zero_epochs(capsys, tmp_path, data):
    assert "--epochs must be at least 1, got 0" in fit_error(capsys, tmp_path, str(data), "--epochs", "0")


def test_fit_with_a_missing_data_folder(capsys, tmp_path):
    line = fit_error(capsys, tmp_path, str(tmp_path / "no_such_folder"), "--backbone", "seed_cnn")
    assert "no_such_folder" in line and "does not exist" in line


def test_fit_with_an_unknown_backbone(capsys, tmp_path, data):
    line = fit_error(capsys, tmp_path, str(data), "--backbone", "nope", "--no-pretrained")
    assert "unknown backbone 'nope'" in line and "seed_cnn" in line


def test_fit_with_an_image_too_small_for_inception(capsys, tmp_path, data):
    line = fit_error(capsys, tmp_path, str(data), "--backbone", "inception_v3", "--image-size", "64",
                     "--no-pretrained", "--epochs", "1")
    assert "75" in line


def test_fit_with_pretrained_and_weights_together(capsys, tmp_path, data):
    line = fit_error(capsys, tmp_path, str(data), "--pretrained", "--weights", str(tmp_path / "w.pth"))
    assert "--pretrained" in line and "--weights" in line


def test_fit_with_an_unreadable_config(capsys, tmp_path, data):
    config = tmp_path / "options.yaml"
    config.write_text("epochs: 1\nno_such_option: 3\n")
    with pytest.raises(SystemExit) as caught:
        main(["fit", str(data), "--config", str(config), "--out", str(tmp_path / "run")])
    assert caught.value.code == 2
    line = assert_one_line_error(capsys.readouterr().err, "tlkit fit")
    assert "no_such_option" in line


def test_fit_with_a_bad_flag_value_is_argparse_usage(tmp_path, data):
    result = run_tlkit("fit", str(data), "--tune", "sideways", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    line = assert_one_line_error(result)
    assert "sideways" in line and "head" in line


def test_fit_pretrained_without_weights_offline_exits_2_fast(tmp_path, data):
    """No cached weights and no network: say how to get weights, within seconds, and never fall back."""
    started = time.monotonic()
    result = run_tlkit("fit", str(data), "--backbone", "resnet50", "--pretrained", "--epochs", "1",
                       "--out", str(tmp_path / "run"), "--quiet",
                       env_extra={"HF_HOME": str(tmp_path / "hf_home"), "TLKIT_HOME": str(tmp_path / "home")},
                       drop=("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"), timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    line = assert_one_line_error(result, "tlkit fit")
    assert "--no-pretrained" in line and "--weights" in line and "resnet50" in line
    # torch + Lightning imports take seconds; the hub check adds at most 3 s, not a download retry loop
    assert elapsed < 40
    assert not (tmp_path / "run" / "model.safetensors").exists()


# -- other commands on things that are not runs -------------------------------------------------------
def test_predict_on_a_folder_that_is_not_a_run(capsys, tmp_path, data):
    image = next((data / "train" / "cat").iterdir())
    assert main(["predict", str(data), str(image)]) == 2
    line = assert_one_line_error(capsys.readouterr().err, "tlkit predict")
    assert "not a finished tlkit run" in line


def test_evaluate_on_a_folder_that_is_not_a_run(capsys, tmp_path, data):
    assert main(["evaluate", str(tmp_path / "nothing_here"), str(data)]) == 2
    assert_one_line_error(capsys.readouterr().err, "tlkit evaluate")


def test_a_missing_command_is_usage_error():
    result = run_tlkit()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "COMMAND" in result.stderr
