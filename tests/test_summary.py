"""The per-layer summary and its receptive-field column, checked against the lecture's numbers."""

import json

import pytest
from torch import nn

from tlkit.cli import main
from tlkit.models import build_model
from tlkit.receptive_field import receptive_fields
from tlkit.summary import summarize


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def seed_model():
    return build_model("seed_cnn", "flatten", num_classes=10, image_size=28)


@pytest.fixture(scope="module")
def resnet18():
    return build_model("resnet18", "gap", num_classes=2, image_size=64, pretrained=False)


def fields_in_order(model, image_size):
    """(layer type, size, jump) of every conv/pool layer, in the order of the network."""
    fields = receptive_fields(model, image_size)
    return [(type(module).__name__, fields[name].size[0], fields[name].jump[0])
            for name, module in model.named_modules() if name in fields]


def test_receptive_fields_of_the_lecture_mnist_cnn(seed_model):
    assert fields_in_order(seed_model, 28) == [
        ("Conv2d", 3, 1), ("MaxPool2d", 4, 2), ("Conv2d", 8, 2), ("MaxPool2d", 10, 4), ("Conv2d", 18, 4),
    ]


def test_vgg16_last_pool_sees_212_pixels_whatever_the_input_size():
    model = build_model("vgg16", "gap", num_classes=2, image_size=64, pretrained=False)
    pools = [name for name, module in model.backbone.named_modules(prefix="backbone")
             if isinstance(module, nn.MaxPool2d)]
    assert len(pools) == 5
    at_64, at_32 = receptive_fields(model, 64), receptive_fields(model, 32)
    assert at_64[pools[-1]].label() == "212 / 32"
    assert [at_64[p].size[0] for p in pools] == [6, 16, 44, 100, 212]
    assert at_32 == at_64  # a receptive field is a property of the layers, not of the image
    assert at_64["head.0"].label() == "global"  # the GAP head sees the whole image


def test_resnet18_follows_the_deepest_path_through_residual_blocks(resnet18):
    fields = receptive_fields(resnet18, 64)
    assert fields["backbone.model.conv1"].label() == "7 / 2"
    assert fields["backbone.model.maxpool"].label() == "11 / 4"
    assert fields["backbone.model.layer4.1.conv2"].label() == "435 / 32"  # the published value
    # the 1x1 shortcut sees what its block's input saw
    assert fields["backbone.model.layer2.0.downsample.0"].label() == "43 / 8"


def test_summary_totals_are_the_models_parameters(seed_model):
    summary = summarize(seed_model, 28)
    assert summary.total_params == summary.trainable_params == count(seed_model) == 93_898
    assert summary.input_size == [1, 3, 28, 28]
    convs = [row for row in summary.rows if row.label.startswith("Conv2d")]
    assert [row.params for row in convs] == [896, 18_496, 36_928]
    assert [row.output_shape for row in convs] == [[1, 32, 26, 26], [1, 64, 11, 11], [1, 64, 3, 3]]
    assert [row.receptive_field for row in convs] == ["3 / 1", "8 / 2", "18 / 4"]
    assert convs[0].mult_adds == 26 * 26 * 32 * (27 + 1)  # torchinfo counts the bias as one more


def test_summary_table_reads_like_the_lectures(seed_model):
    table = summarize(seed_model, 28).table()
    assert "Total params: 93,898" in table
    assert "Trainable params: 93,898" in table
    assert "Non-trainable params: 0" in table
    assert "Layer (type:depth-idx)" in table and "RF size / jump" in table
    assert "36,928" in table  # conv3 and the hidden dense layer


@pytest.mark.parametrize("depth", [1, 3])
def test_summary_rows_add_up_to_the_totals_at_any_depth(resnet18, depth):
    summary = summarize(resnet18, 64, depth=depth)
    assert summary.total_params == count(resnet18)
    assert sum(row.params or 0 for row in summary.rows) == summary.total_params
    assert sum(row.mult_adds for row in summary.rows) == summary.total_mult_adds
    assert max(row.depth for row in summary.rows) == depth


def test_frozen_layers_are_counted_as_non_trainable(seed_model):
    import copy

    model = copy.deepcopy(seed_model)
    model.backbone.requires_grad_(False)
    summary = summarize(model, 28)
    assert summary.total_params == 93_898
    assert summary.trainable_params == 93_898 - 56_320
    assert "Non-trainable params: 56,320" in summary.table()


def test_summary_command_prints_the_lecture_total(capsys):
    assert main(["summary", "--backbone", "seed_cnn", "--head", "flatten", "--image-size", "28",
                 "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed_cnn + flatten, 10 classes, 28x28 input")
    assert "Total params: 93,898" in out


def test_summary_json_has_rows_with_receptive_fields(capsys):
    assert main(["summary", "--backbone", "seed_cnn", "--head", "gap", "--image-size", "28",
                 "--num-classes", "10", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["backbone"] == "seed_cnn" and document["head"] == "gap"
    assert document["total_params"] == 56_970
    fields = [row["receptive_field"] for row in document["rows"] if row["receptive_field"]]
    assert fields == ["3 / 1", "4 / 2", "8 / 2", "10 / 4", "18 / 4", "global"]
    assert {"name", "label", "depth", "output_shape", "params", "mult_adds"} <= set(document["rows"][0])
