"""build_model: every registered backbone with every registered head, the lecture's parameter counts,
pretrained EfficientNet-Lite0 on a real photo, and loading --weights files safely."""

import pytest
import torch

from tlkit.errors import TlkitError, UnknownNameError
from tlkit.models import build_backbone, build_model
from tlkit.plugins import get_registry

# Smallest convenient input per backbone: inception_v3 needs 75 px, cats_cnn's four conv+pool
# stages need 46 px (48 leaves a 1x1 map), seed_cnn is the 28 px MNIST network.
IMAGE_SIZES = {"inception_v3": 75, "seed_cnn": 28, "cats_cnn": 48}
BACKBONES = get_registry("backbones").names()
HEADS = get_registry("heads").names()


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


_built_backbones = {}


@pytest.fixture
def backbone_built_once(monkeypatch):
    """Construct each backbone once and hand build_model a copy for every further head.

    Initialising Inception v3 or ResNet50 takes seconds on two cores; what the matrix checks is
    that build_model fits every head onto every backbone, so one construction per backbone is enough.
    """
    import copy

    from tlkit import models

    real = models.build_backbone

    def build_backbone(name, **kwargs):
        key = (name, repr(sorted(kwargs.items())))
        if key not in _built_backbones:
            _built_backbones[key] = real(name, **kwargs)
        return copy.deepcopy(_built_backbones[key])

    monkeypatch.setattr(models, "build_backbone", build_backbone)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_with_every_head_builds_and_runs(backbone, head, backbone_built_once):
    size = IMAGE_SIZES.get(backbone, 32)
    model = build_model(backbone, head, num_classes=3, image_size=size, pretrained=False).eval()
    images = torch.randn(2, 3, size, size)
    seen = []
    model.backbone.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        logits = model(images)
    features = seen[0]
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()
    assert features.ndim == 4
    assert features.shape == (2, model.backbone.num_features, *model.feature_size)
    assert model.num_features == features.shape[1] > 0
    assert (model.backbone_name, model.head_name, model.image_size) == (backbone, head, size)
    assert len(model.mean) == len(model.std) == 3
    assert model.config()["class_names"] == ["0", "1", "2"]


def test_the_registry_holds_the_lectures_components():
    assert {"seed_cnn", "cats_cnn", "vgg16", "inception_v3", "resnet50", "efficientnet_lite0"} <= set(BACKBONES)
    assert {"flatten", "gap", "dropout"} <= set(HEADS)


# -- the lecture's numbers ---------------------------------------------------------------------------
def test_seed_cnn_with_flatten_head_has_the_lectures_93898_parameters():
    model = build_model("seed_cnn", "flatten", num_classes=10, image_size=28)
    assert model.feature_size == (3, 3)  # 28 -> 26 -> 13 -> 11 -> 5 -> 3
    assert count(model.backbone) == 56_320
    assert count(model) == 93_898


def test_seed_cnn_with_gap_head_has_56970_parameters():
    assert count(build_model("seed_cnn", "gap", num_classes=10, image_size=28)) == 56_970


def test_seed_cnn_on_one_channel_mnist_images_has_the_lectures_93322_parameters():
    backbone = build_backbone("seed_cnn", in_channels=1)
    head = get_registry("heads").get("flatten").create(num_features=64, num_classes=10, feature_size=(3, 3))
    assert count(backbone) + count(head) == 93_322
    with torch.no_grad():
        assert head(backbone(torch.zeros(2, 1, 28, 28))).shape == (2, 10)


def test_cats_cnn_with_dropout_head_for_one_output_has_307393_parameters():
    model = build_model("cats_cnn", "dropout", num_classes=1, image_size=150)
    assert model.feature_size == (7, 7)  # 150 -> 148 -> 74 -> 72 -> 36 -> 34 -> 17 -> 15 -> 7
    assert count(model) == 307_393
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 150, 150)).shape == (2, 1)


def test_head_options_change_the_head():
    model = build_model("seed_cnn", "flatten", num_classes=10, image_size=28, head_options={"hidden": 32})
    assert count(model) == 56_320 + 576 * 32 + 32 + 32 * 10 + 10
    assert model.config()["head_options"] == {"hidden": 32}


def test_default_image_size_is_the_backbones_native_one():
    assert build_model("seed_cnn", "gap", num_classes=2).image_size == 28
    assert build_model("cats_cnn", "gap", num_classes=2).image_size == 150


# -- errors a user meets ----------------------------------------------------------------------------
def test_inception_v3_refuses_images_smaller_than_75_px():
    with pytest.raises(TlkitError) as caught:
        build_model("inception_v3", "gap", num_classes=2, image_size=64, pretrained=False)
    assert "75" in str(caught.value) and "inception_v3" in str(caught.value)


def test_too_small_images_for_a_from_scratch_cnn_say_so():
    with pytest.raises(TlkitError) as caught:
        build_model("cats_cnn", "gap", num_classes=2, image_size=32)
    assert "cats_cnn" in str(caught.value) and "--image-size" in str(caught.value)


def test_unknown_backbone_suggests_the_close_match():
    with pytest.raises(UnknownNameError) as caught:
        build_model("resnt50", "gap", num_classes=2)
    assert "Did you mean 'resnet50'?" in str(caught.value)


def test_unknown_head_suggests_the_close_match():
    with pytest.raises(UnknownNameError) as caught:
        build_model("seed_cnn", "flaten", num_classes=2)
    assert "Did you mean 'flatten'?" in str(caught.value)
    assert "dropout, flatten, gap" in str(caught.value)


def test_bad_options_and_class_counts_are_tlkit_errors():
    with pytest.raises(TlkitError, match="num_classes"):
        build_model("seed_cnn", "gap", num_classes=0)
    with pytest.raises(TlkitError, match="rejected its options"):
        build_model("seed_cnn", "gap", num_classes=2, backbone_options={"no_such_option": 1})
    with pytest.raises(TlkitError, match="no pretrained weights"):
        build_model("seed_cnn", "gap", num_classes=2, pretrained=True)


# -- pretrained EfficientNet-Lite0 (weights packaged, no network) --------------------------------------
def test_efficientnet_lite0_loads_its_packaged_imagenet_weights():
    from tlkit_builtins import efficientnet_lite0 as lite0

    pretrained = build_model("efficientnet_lite0", "gap", num_classes=2)  # pretrained by default
    random = build_model("efficientnet_lite0", "gap", num_classes=2, image_size=32, pretrained=False)
    assert pretrained.mean == pretrained.std == (0.5, 0.5, 0.5)
    assert pretrained.image_size == 224
    stem = pretrained.backbone.model.conv_stem.weight
    assert not torch.equal(stem, random.backbone.model.conv_stem.weight)
    packaged = lite0.timm_state_from_package(lite0.packaged_weights_path())
    assert torch.equal(stem, packaged["conv_stem.weight"])


IMAGENET_BUILDINGS = {
    437: "beacon", 442: "bell cote", 449: "boathouse", 483: "castle", 497: "church", 538: "dome",
    663: "monastery", 668: "mosque", 698: "palace", 832: "stupa", 975: "lakeside",
}


@pytest.mark.slow
def test_efficientnet_lite0_recognises_the_temple_in_a_real_photo():
    datasets = pytest.importorskip("sklearn.datasets")
    import numpy as np
    import timm
    from PIL import Image
    from tlkit_builtins import efficientnet_lite0 as lite0

    classifier = timm.create_model("efficientnet_lite0", pretrained=False)
    classifier.load_state_dict(lite0.timm_state_from_package(lite0.packaged_weights_path()))
    classifier.eval()

    photo = Image.fromarray(datasets.load_sample_image("china.jpg"))  # a Chinese temple by a lake
    width, height = photo.size
    scale = 256 / min(width, height)  # ImageNet evaluation: short side 256, centre crop 224
    photo = photo.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
    left, top = (photo.width - 224) // 2, (photo.height - 224) // 2
    photo = photo.crop((left, top, left + 224, top + 224))
    pixels = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255
    images = ((pixels - 0.5) / 0.5).unsqueeze(0)

    with torch.no_grad():
        probabilities = classifier(images).softmax(-1)[0]
    top5 = probabilities.topk(5)
    top5_classes = [int(i) for i in top5.indices]
    assert top5_classes[0] in IMAGENET_BUILDINGS, top5_classes
    assert float(top5.values[0]) > 0.2
    assert sum(c in IMAGENET_BUILDINGS for c in top5_classes) >= 3, top5_classes

    # tlkit's backbone is exactly that network without its classifier
    model = build_model("efficientnet_lite0", "gap", num_classes=2).eval()
    with torch.no_grad():
        assert torch.allclose(model.features(images), classifier.forward_features(images), atol=1e-5)


# -- --weights FILE ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet18_state():
    """A resnet18 state dict in timm's layout, classifier (fc.*) included, as a user would save it."""
    import timm

    torch.manual_seed(0)
    return {k: v.clone().contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}


def assert_backbone_holds(model, state):
    own = model.backbone.model.state_dict()
    assert "fc.weight" in state and "fc.weight" not in own  # the classifier was ignored
    assert set(own) == set(state) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(own[k], state[k]) for k in own)


def test_weights_from_safetensors(tmp_path, resnet18_state):
    from safetensors.torch import save_file

    path = tmp_path / "resnet18.safetensors"
    save_file(resnet18_state, str(path))
    assert_backbone_holds(build_model("resnet18", "gap", num_classes=2, image_size=32, weights=path),
                          resnet18_state)


def test_weights_from_pth(tmp_path, resnet18_state):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state, path)
    assert_backbone_holds(build_model("resnet18", "gap", num_classes=2, image_size=32, weights=str(path)),
                          resnet18_state)


def test_weights_for_another_architecture_are_refused(tmp_path):
    import timm

    path = tmp_path / "lite0.pth"
    torch.save(timm.create_model("efficientnet_lite0").state_dict(), path)
    with pytest.raises(TlkitError) as caught:
        build_model("resnet18", "gap", num_classes=2, image_size=32, weights=path)
    assert "missing keys" in str(caught.value) and "resnet18" in str(caught.value)


def test_weights_with_wrong_shapes_are_refused(tmp_path, resnet18_state):
    path = tmp_path / "resnet18.pth"
    torch.save({**resnet18_state, "conv1.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(TlkitError) as caught:
        build_model("resnet18", "gap", num_classes=2, image_size=32, weights=path)
    assert "shape mismatch" in str(caught.value) and "conv1.weight" in str(caught.value)


def test_missing_weights_file_is_a_tlkit_error(tmp_path):
    with pytest.raises(TlkitError, match="does not exist"):
        build_model("resnet18", "gap", num_classes=2, image_size=32, weights=tmp_path / "nope.pth")


class Exploit:
    """Unpickling this opens (creates) a file: a stand-in for arbitrary code in a .pth file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickled_code_in_a_pth_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": Exploit(marker)}, path)
    with pytest.raises(TlkitError) as caught:
        build_model("resnet18", "gap", num_classes=2, image_size=32, weights=path)
    assert "cannot read weights file" in str(caught.value)
    assert not marker.exists()
    # the file really was dangerous: an unsafe load runs the payload
    torch.load(path, weights_only=False)
    assert marker.exists()
