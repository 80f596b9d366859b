"""Interpreters: every method on a small trained model and on every registered backbone, the sanity
checks of Adebayo et al. (2018), hooks and model state left as found, and the error messages of the
API and of ``tlkit explain``.

The trained model is the lecture's ``seed_cnn`` with a GAP head, taught in a few seconds to tell
noise images with a bright square in the top-left quadrant (class "square") from plain noise
("empty"). So we know where the evidence is, and can check that the explanations find it.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tlkit.errors import TlkitError, UnknownNameError
from tlkit.interpret import (Explanation, FeatureRecorder, conv_layers, explain, last_conv_layer,
                             resolve_layer)
from tlkit.models import build_model
from tlkit.plugins import get_registry

SIZE = 32
METHODS = ["feature_maps", "filters", "integrated_gradients", "saliency", "occlusion", "gradcam"]
ATTRIBUTIONS = ["integrated_gradients", "saliency", "occlusion", "gradcam"]
# Small settings so that every method runs in well under a second on a tiny model.
FAST = {
    "feature_maps": {"max_channels": 8},
    "filters": {"filters": [0, 1, 2], "steps": 2, "progress": False},
    "integrated_gradients": {"n_steps": 4, "internal_batch_size": 4},
    "saliency": {},
    "occlusion": {"window": 8, "stride": 8},
    "gradcam": {},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP threads
    # spinning against each other make them an order of magnitude slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def square_batch(n, generator, label=None):
    """Normalised noise images; class 1 has an 8x8 white square somewhere in the top-left quadrant."""
    x = torch.rand(n, 3, SIZE, SIZE, generator=generator) * 0.6
    y = torch.randint(0, 2, (n,), generator=generator) if label is None else torch.full((n,), label)
    for i in range(n):
        if y[i] == 1:
            r, c = torch.randint(0, SIZE // 2 - 8 + 1, (2,), generator=generator).tolist()
            x[i, :, r:r + 8, c:c + 8] = 1.0
    return (x - 0.5) / 0.5, y  # seed_cnn normalises with mean = std = 0.5


def new_seed_cnn(seed):
    torch.manual_seed(seed)
    return build_model("seed_cnn", "gap", num_classes=2, image_size=SIZE, pretrained=False,
                       class_names=["empty", "square"])


@pytest.fixture(scope="module")
def trained():
    model = new_seed_cnn(0)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(50):
        x, y = square_batch(32, generator)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def randomised():
    """The same architecture with fresh random weights (Adebayo et al.'s model randomisation test)."""
    return new_seed_cnn(1).eval()


@pytest.fixture(scope="module")
def squares():
    return square_batch(4, torch.Generator().manual_seed(123), label=1)[0]


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def top_left_mass(attribution):
    """Share of |attribution| in the top-left quadrant (a quarter of the image)."""
    magnitude = np.abs(attribution)
    return float(magnitude[: SIZE // 2, : SIZE // 2].sum() / magnitude.sum())


def test_the_trained_model_has_learned_the_square(trained):
    x, y = square_batch(200, torch.Generator().manual_seed(7))
    with torch.no_grad():
        accuracy = (trained(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.95


@pytest.mark.parametrize("method", METHODS)
def test_every_interpreter_explains_the_trained_model(trained, squares, method, tmp_path):
    hooks = hook_count(trained)
    explanation = explain(trained, squares[:1], method, options=FAST[method])

    assert isinstance(explanation, Explanation) and explanation.method == method
    assert hook_count(trained) == hooks
    for array in explanation.arrays.values():
        assert np.isfinite(array).all()
    if method == "feature_maps":
        assert explanation.arrays["activations"].shape == (32, SIZE - 2, SIZE - 2)  # first conv, no padding
    elif method == "filters":
        assert explanation.arrays["images"].shape == (3, SIZE, SIZE, 3)
        assert 0.0 <= explanation.arrays["images"].min() and explanation.arrays["images"].max() <= 1.0
    else:
        assert explanation.arrays["attribution"].shape == (SIZE, SIZE)
        assert np.abs(explanation.arrays["attribution"]).sum() > 0
        assert explanation.label == "square" and explanation.target == 1
        assert 0.5 < explanation.info["probability"] <= 1.0
    summary = explanation.summary()
    assert summary and "\n" not in summary
    out = explanation.save(tmp_path / "deep" / f"{method}.png")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 200
    picture = explanation.to_image()
    assert picture.mode == "RGB" and np.asarray(picture).std() > 5  # something is drawn


def backbone_sizes():
    sizes = {"inception_v3": 75, "cats_cnn": 64}
    return [pytest.param(name, sizes.get(name, SIZE), id=name) for name in get_registry("backbones").names()]


_models = {}


def small_model(name, size):
    if name not in _models:
        _models.clear()  # keep one big model in memory at a time
        torch.manual_seed(0)
        _models[name] = build_model(name, "gap", num_classes=3, image_size=size, pretrained=False).eval()
    return _models[name]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backbone,size", backbone_sizes())
def test_every_interpreter_runs_on_every_backbone(backbone, size, method):
    model = small_model(backbone, size)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    hooks = hook_count(model)
    explanation = explain(model, x, method, options=FAST[method])
    assert hook_count(model) == hooks
    arrays = explanation.arrays
    if method == "feature_maps":
        first_conv = conv_layers(model)[0][1]
        assert arrays["activations"].shape[0] == first_conv.out_channels
    elif method == "filters":
        assert arrays["images"].shape == (3, size, size, 3)
        assert arrays["start_activation"].shape == arrays["final_activation"].shape == (3,)
    else:
        assert arrays["attribution"].shape == (size, size)
        assert np.isfinite(arrays["attribution"]).all()
        assert 0 <= explanation.target < 3


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "occlusion", "gradcam"])
def test_attributions_find_the_square_and_not_with_random_weights(trained, randomised, squares, method):
    """Adebayo et al. 2018: an explanation must depend on what the model learned.

    The square covers part of the top-left quadrant (a quarter of the image). The trained model's
    attributions put most of their mass there; those of the same network with random weights do
    not. (Rank correlation of |saliency| between the two stays around 0.7 here, as Adebayo et al.
    found for gradients: both light up the square's edges, so the mass test is the telling one.)
    """
    options = {"integrated_gradients": {"n_steps": 16}, "occlusion": {"window": 4, "stride": 4}}.get(method, {})
    trained_mass = np.mean([top_left_mass(explain(trained, x[None], method, target="square",
                                                  options=options).arrays["attribution"]) for x in squares])
    random_mass = np.mean([top_left_mass(explain(randomised, x[None], method, target="square",
                                                 options=options).arrays["attribution"]) for x in squares])
    assert trained_mass > 0.5, f"{method}: only {trained_mass:.0%} of the attribution on the square's quadrant"
    assert trained_mass > random_mass + 0.2, (method, trained_mass, random_mass)


def test_gradcam_of_random_weights_is_uncorrelated(trained, randomised, squares):
    def ranks(a):
        return np.argsort(np.argsort(np.abs(a).ravel()))

    x = squares[:1]
    a = explain(trained, x, "gradcam", target="square").arrays["attribution"]
    b = explain(randomised, x, "gradcam", target="square").arrays["attribution"]
    assert np.corrcoef(ranks(a), ranks(b))[0, 1] < 0.5


@pytest.mark.parametrize("layer", ["backbone.0", "backbone.3"])
def test_gradient_ascent_raises_the_filters_activation(trained, layer):
    explanation = explain(trained, torch.zeros(1, 3, SIZE, SIZE), "filters", layer=layer,
                          options={"steps": 30, "progress": False})
    start, final = explanation.arrays["start_activation"], explanation.arrays["final_activation"]
    assert len(start) == 16
    alive = start > 0.05  # filters that respond to the grey start image at all
    assert alive.sum() >= 4
    assert (final[alive] > 2 * start[alive]).all(), (start, final)
    assert (final - start).mean() > 0.5
    # The winners moved well away from the grey start image (150-180 of 255).
    moved = np.abs(explanation.arrays["images"] - 165 / 255).mean(axis=(1, 2, 3))
    assert (moved[alive] > 0.1).all(), moved


def test_filters_calls_the_progress_callback(trained):
    calls = []
    explain(trained, torch.zeros(1, 3, SIZE, SIZE), "filters",
            options={"steps": 3, "filters": [0], "progress": lambda step, total: calls.append((step, total))})
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_filters_rejects_a_filter_index_out_of_range(trained):
    with pytest.raises(TlkitError, match=r"layer 'backbone.0' has 32 filters \(0..31\)"):
        explain(trained, torch.zeros(1, 3, SIZE, SIZE), "filters", options={"filters": [40], "steps": 1})


def test_explain_restores_training_mode_grad_flags_and_inplace_activations():
    torch.manual_seed(0)
    model = build_model("resnet18", "gap", num_classes=2, image_size=SIZE, pretrained=False)
    model.train()
    for p in model.backbone.parameters():
        p.requires_grad_(False)  # a frozen backbone, as after `--tune head`
    inplace = {n: m.inplace for n, m in model.named_modules() if isinstance(getattr(m, "inplace", None), bool)}
    assert any(inplace.values())  # timm's ResNet uses in-place ReLU
    x = torch.randn(1, 3, SIZE, SIZE)
    for method in METHODS:
        explain(model, x, method, options=FAST[method])
        assert all(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.backbone.parameters())
        assert all(p.requires_grad for p in model.head.parameters())
        assert {n: m.inplace for n, m in model.named_modules() if n in inplace} == inplace
        assert hook_count(model) == 0


@pytest.mark.parametrize("method", METHODS)
def test_hooks_and_state_are_restored_when_the_model_raises(trained, method, monkeypatch):
    def boom(*args):
        raise RuntimeError("broken layer")

    # The first conv fails after the recorder's and Captum's hooks are registered.
    monkeypatch.setattr(trained.backbone[0], "forward", boom)
    hooks = hook_count(trained)
    trained.train()
    try:
        with pytest.raises(RuntimeError, match="broken layer"):
            explain(trained, torch.zeros(1, 3, SIZE, SIZE), method, options=FAST[method])
        assert hook_count(trained) == hooks
        assert trained.training
        assert all(p.requires_grad for p in trained.parameters())
    finally:
        trained.eval()


def test_feature_recorder_clones_before_an_inplace_relu_and_always_unhooks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
    with FeatureRecorder([("conv", net[0])]) as recorder:
        net(torch.randn(1, 3, 8, 8))
    assert recorder.outputs["conv"].min() < 0  # recorded before the ReLU overwrote it
    assert len(net[0]._forward_hooks) == 0

    with pytest.raises(ValueError):
        with FeatureRecorder({"conv": net[0]}):
            assert len(net[0]._forward_hooks) == 1
            raise ValueError("interrupted")
    assert len(net[0]._forward_hooks) == 0


def test_target_by_label_and_by_index_agree(trained, squares):
    by_label = explain(trained, squares[:1], "saliency", target="square")
    by_index = explain(trained, squares[:1], "saliency", target=1)
    by_digit = explain(trained, squares[:1], "saliency", target="1")
    assert by_label.target == by_index.target == by_digit.target == 1
    np.testing.assert_allclose(by_label.arrays["attribution"], by_index.arrays["attribution"])
    other = explain(trained, squares[:1], "saliency", target="empty")
    assert other.label == "empty" and other.info["predicted"] == "square"


def test_pil_images_are_resized_and_normalised(trained):
    image = Image.new("RGB", (90, 60), (255, 255, 255))
    explanation = explain(trained, image, "saliency")
    assert explanation.arrays["attribution"].shape == (SIZE, SIZE)


def test_an_unknown_method_lists_the_valid_ones(trained):
    with pytest.raises(UnknownNameError) as info:
        explain(trained, torch.zeros(1, 3, SIZE, SIZE), "salency")
    message = str(info.value)
    assert "Did you mean 'saliency'?" in message
    for name in METHODS:
        assert name in message


def test_an_unknown_layer_lists_the_conv_layers(trained):
    with pytest.raises(TlkitError) as info:
        explain(trained, torch.zeros(1, 3, SIZE, SIZE), "feature_maps", layer="backbone.33")
    message = str(info.value)
    assert "unknown layer 'backbone.33'" in message and "Did you mean 'backbone.3'?" in message
    assert "backbone.0, backbone.3, backbone.6" in message


def test_a_layer_without_a_feature_map_is_refused(trained):
    with pytest.raises(TlkitError, match="outputs shape .1, 2.; feature maps need"):
        explain(trained, torch.zeros(1, 3, SIZE, SIZE), "feature_maps", layer="head.2")
    with pytest.raises(TlkitError, match="takes no layer"):
        explain(trained, torch.zeros(1, 3, SIZE, SIZE), "saliency", layer="backbone.0")


def test_unknown_target_labels_and_indices_are_refused(trained):
    with pytest.raises(TlkitError, match="unknown target label 'cat'.*Valid labels: empty, square"):
        explain(trained, torch.zeros(1, 3, SIZE, SIZE), "saliency", target="cat")
    with pytest.raises(TlkitError, match="out of range"):
        explain(trained, torch.zeros(1, 3, SIZE, SIZE), "saliency", target=5)


def test_bad_options_name_the_interpreter(trained):
    with pytest.raises(TlkitError, match="interpreter 'occlusion' rejected its options"):
        explain(trained, torch.zeros(1, 3, SIZE, SIZE), "occlusion", options={"windw": 4})
    with pytest.raises(TlkitError, match="steps must be at least 1"):
        explain(trained, torch.zeros(1, 3, SIZE, SIZE), "filters", options={"steps": 0})


def test_save_refuses_unknown_formats_and_writes_exactly_the_path(trained, tmp_path):
    explanation = explain(trained, torch.zeros(1, 3, SIZE, SIZE), "gradcam")
    with pytest.raises(TlkitError, match="unknown picture format 'xyz'; use a .png file"):
        explanation.save(tmp_path / "x.xyz")
    assert explanation.save(tmp_path / "plain") == tmp_path / "plain"
    with Image.open(tmp_path / "plain") as png:
        assert png.format == "PNG"


def test_resolve_layer(trained):
    assert resolve_layer(trained, "0")[0] == "backbone.0"  # relative to the backbone
    assert resolve_layer(trained, None)[0] == "backbone.0"  # default: the first conv
    assert resolve_layer(trained, "backbone")[1] is trained.backbone
    assert last_conv_layer(trained)[0] == "backbone.6"
    with pytest.raises(TlkitError, match="'backbone.1' is a ReLU, not a Conv2d"):
        resolve_layer(trained, "backbone.1", kinds=(nn.Conv2d,))


# -- the command line -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(trained, tmp_path_factory):
    from tlkit.runs import save_model

    folder = tmp_path_factory.mktemp("explain") / "run"
    save_model(trained, folder)
    return folder


@pytest.fixture(scope="module")
def square_png(squares, tmp_path_factory):
    pixels = ((squares[0] * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("images") / "square.png"
    Image.fromarray(pixels).save(path)
    return path


def run_cli(capsys, *args):
    from tlkit.cli import main

    code = main(["explain", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_explain_writes_the_picture(run_dir, square_png, tmp_path, capsys):
    out = tmp_path / "gradcam.png"
    code, stdout, _ = run_cli(capsys, run_dir, square_png, "--method", "gradcam", "--out", out)
    assert code == 0
    assert "target 'square'" in stdout and str(out) in stdout
    with Image.open(out) as png:
        assert png.format == "PNG"


def test_cli_explain_passes_target_layer_and_options(run_dir, square_png, tmp_path, capsys):
    out = tmp_path / "filters.png"
    code, stdout, _ = run_cli(capsys, run_dir, square_png, "--method", "filters", "--layer", "backbone.3",
                              "--opt", "steps=2", "--opt", "filters=[0,1]", "--out", out)
    assert code == 0 and "layer backbone.3, 2 filters" in stdout and out.is_file()
    code, stdout, _ = run_cli(capsys, run_dir, square_png, "--method", "saliency", "--target", "empty",
                              "--out", out)
    assert code == 0 and "target 'empty'" in stdout


def test_cli_explain_unknown_method_exits_2_listing_valid_names(run_dir, square_png, tmp_path, capsys):
    code, _, stderr = run_cli(capsys, run_dir, square_png, "--method", "nope", "--out", tmp_path / "x.png")
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1
    for name in METHODS:
        assert name in stderr
    assert not (tmp_path / "x.png").exists()


def test_cli_explain_bad_layer_label_or_image_exit_2(run_dir, square_png, tmp_path, capsys):
    out = tmp_path / "x.png"
    code, _, stderr = run_cli(capsys, run_dir, square_png, "--method", "feature_maps", "--layer", "conv9",
                              "--out", out)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "backbone.0, backbone.3" in stderr
    code, _, stderr = run_cli(capsys, run_dir, square_png, "--method", "saliency", "--target", "dog",
                              "--out", out)
    assert code == 2 and "Valid labels: empty, square" in stderr
    code, _, stderr = run_cli(capsys, run_dir, tmp_path / "missing.png", "--method", "saliency", "--out", out)
    assert code == 2 and "missing.png" in stderr and len(stderr.strip().splitlines()) == 1


def test_plugin_modules_do_not_import_torch_or_matplotlib():
    code = ("import sys, tlkit.interpret, tlkit.augment, tlkit.figures, tlkit_builtins.feature_maps, "
            "tlkit_builtins.filters, tlkit_builtins.attributions\n"
            "from tlkit.plugins import get_registry\n"
            "assert set(get_registry('interpreters').names()) >= {'feature_maps', 'filters', 'gradcam', "
            "'integrated_gradients', 'occlusion', 'saliency'}\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'captum') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    env = {**os.environ, "TLKIT_LOAD_PLUGINS": ""}  # only the builtins: installed plugins may import torch
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
