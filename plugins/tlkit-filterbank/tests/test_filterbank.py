"""Tests of the example plugin: the backbone, its options, its hooks and its interpreter."""

import math
import sys
import types
from dataclasses import dataclass

import pytest
import torch

import tlkit_filterbank
from tlkit_filterbank import make_filterbank, make_filterbank_responses
from tlkit_filterbank.bank import FilterBank


def edge(vertical: bool, size: int = 32) -> torch.Tensor:
    """A (1, 3, size, size) image, dark on one side of a vertical or horizontal edge, bright on the other."""
    image = -torch.ones(1, 3, size, size)
    if vertical:
        image[..., size // 2:] = 1.0
    else:
        image[..., size // 2:, :] = 1.0
    return image


def grating(angle: float, frequency: float = 0.25, size: int = 48) -> torch.Tensor:
    """A (1, 3, size, size) sinusoidal grating whose stripes run across direction ``angle`` degrees."""
    r = torch.arange(size, dtype=torch.float32)
    y, x = torch.meshgrid(r, r, indexing="ij")
    theta = math.radians(angle)
    wave = torch.cos(2 * math.pi * frequency * (x * math.cos(theta) + y * math.sin(theta)))
    return wave.expand(1, 3, size, size)


def response(bank: FilterBank, image: torch.Tensor, name: str) -> float:
    """Mean response of filter ``name`` away from the border."""
    maps = bank(image)[0, bank.filter_names.index(name)]
    return maps[8:-8, 8:-8].mean().item()


@pytest.mark.parametrize("options, size, expected", [
    ({}, (64, 64), (2, 10, 32, 32)),
    ({"colour": True}, (64, 64), (2, 30, 32, 32)),
    ({"frequencies": (0.2,), "angles": (0, 90), "pool": 1}, (32, 32), (2, 4, 32, 32)),
    ({"frequencies": 0.3, "angles": 6, "kernel_size": 5, "pool": 4}, (64, 48), (2, 8, 16, 12)),
    ({"sigma": 2.0, "rectify": "relu", "kernel_size": 11, "colour": True}, (30, 30), (2, 30, 15, 15)),
])
def test_output_shape_and_num_features(options, size, expected):
    bank = make_filterbank(**options)
    out = bank(torch.randn(2, 3, *size))
    assert out.shape == expected
    assert bank.num_features == out.shape[1]
    assert bank.data_config == {"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3}


def test_filters_are_a_buffer_not_parameters():
    bank = make_filterbank()
    assert list(bank.parameters()) == []
    assert "filters" in dict(bank.named_buffers())
    assert bank.filters.shape == (10, 1, 7, 7)


def test_pretrained_builds_the_same_fixed_filters():
    assert torch.equal(make_filterbank(pretrained=True).filters, make_filterbank().filters)


def test_sobel_x_sees_vertical_edges_and_sobel_y_horizontal_ones():
    bank = make_filterbank(pool=1)
    vertical, horizontal = bank(edge(vertical=True))[0], bank(edge(vertical=False))[0]
    sobel_x, sobel_y = bank.filter_names.index("sobel_x"), bank.filter_names.index("sobel_y")
    assert vertical[sobel_x].max() > 0.5 and vertical[sobel_y].abs().max() < 1e-6
    assert horizontal[sobel_y].max() > 0.5 and horizontal[sobel_x].abs().max() < 1e-6


@pytest.mark.parametrize("angle", [0, 45, 90, 135])
def test_gabor_prefers_gratings_at_its_own_angle(angle):
    bank = make_filterbank(frequencies=(0.25,), angles=4, pool=1)
    name = f"gabor_f0.25_a{angle}"
    along, across = response(bank, grating(angle), name), response(bank, grating(angle + 90), name)
    assert along > 3 * across, (along, across)


@pytest.mark.parametrize("options, message", [
    ({"kernel_size": 6}, "odd int >= 3"),
    ({"kernel_size": 6}, "try 7"),
    ({"kernel_size": 1}, "kernel_size"),
    ({"frequencies": (0.1, -0.2)}, "(0, 0.5]"),
    ({"frequencies": (0,)}, "frequencies"),
    ({"frequencies": 0.7}, "0.5"),
    ({"frequencies": ()}, "non-empty"),
    ({"frequencies": "0.1"}, "frequencies"),
    ({"angles": 0}, "angles"),
    ({"angles": ("north",)}, "angles"),
    ({"sigma": -1}, "sigma"),
    ({"pool": 0}, "pool must be an int >= 1"),
    ({"colour": "yes"}, "colour must be True or False"),
    ({"rectify": "square"}, "'abs' or 'relu'"),
    ({"colur": True}, "unknown option 'colur'"),
    ({"colur": True}, "Did you mean 'colour'?"),
    ({"stride": 2}, "Valid options: frequencies, angles, kernel_size, sigma, colour, pool, rectify"),
])
def test_bad_options_raise_a_helpful_value_error(options, message):
    with pytest.raises(ValueError) as info:
        make_filterbank(**options)
    assert message in str(info.value)


def test_hook_registers_the_backbone_and_its_factory_builds_it():
    calls = []
    tlkit_filterbank.register_backbones(register=lambda *args, **kwargs: calls.append((args, kwargs)))
    assert len(calls) == 1
    (name, factory), kwargs = calls[0]
    assert name == "filterbank" and "sobel_gabor" in kwargs["aliases"] and kwargs["description"]
    assert isinstance(factory(pretrained=False), FilterBank)


def test_hook_registers_the_interpreter():
    calls = []
    tlkit_filterbank.register_interpreters(register=lambda *args, **kwargs: calls.append(args))
    assert [args[0] for args in calls] == ["filterbank_responses"]
    assert callable(calls[0][1]())


def test_plugin_host_serves_the_backbone_like_a_builtin():
    plugins = pytest.importorskip("tlkit.plugins")
    host = plugins.PluginHost(load_entry_points=False, builtins=())
    host.register(tlkit_filterbank, name="filterbank")
    backbones = host.registry("backbones")
    assert backbones.get("filterbank").plugin == "filterbank"
    assert backbones.get("sobel_gabor").name == "filterbank"
    assert backbones.names("filter*") == ["filterbank"]
    assert isinstance(backbones.get("filterbank").create(pretrained=True, angles=2), FilterBank)
    assert "filterbank_responses" in host.registry("interpreters")
    assert host.infos["filterbank"].errors == []


@pytest.fixture
def explanation_class(monkeypatch):
    """tlkit's Explanation, or a stand-in while tlkit.interpret is not written yet."""
    try:
        from tlkit.interpret import Explanation
    except ImportError:
        @dataclass
        class Explanation:
            method: str
            arrays: dict
            figure: object
            target: int | None = None
            label: str | None = None

        stand_in = types.ModuleType("tlkit.interpret")
        stand_in.Explanation = Explanation
        monkeypatch.setitem(sys.modules, "tlkit.interpret", stand_in)
    return Explanation


@pytest.mark.parametrize("options", [{}, {"colour": True, "angles": 8}])
def test_interpreter_draws_one_response_per_filter(explanation_class, options):
    bank = make_filterbank(**options)
    model = torch.nn.Sequential(bank, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(bank.num_features, 3)).eval()
    result = make_filterbank_responses(columns=6)(model, torch.randn(1, 3, 32, 32))
    n_filters = len(bank.filter_names)
    assert isinstance(result, explanation_class)
    assert result.method == "filterbank_responses"
    assert result.arrays["responses"].shape == (n_filters, 16, 16)
    assert result.arrays["kernels"].shape == (n_filters, 7, 7)
    assert result.target in range(3)
    assert len([ax for ax in result.figure.axes if ax.images]) == 2 * n_filters


def test_interpreter_explains_the_given_target(explanation_class):
    model = torch.nn.Sequential(make_filterbank(), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.zeros(1, 3, 32, 32))  # materialise the lazy layer
    assert make_filterbank_responses()(model, torch.randn(1, 3, 32, 32), target=2).target == 2


def test_interpreter_needs_a_filterbank_backbone(explanation_class):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    with pytest.raises(ValueError, match="needs a model whose backbone is 'filterbank'"):
        make_filterbank_responses()(model, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="layer '0' is not a filter bank"):
        make_filterbank_responses()(model, torch.randn(1, 3, 32, 32), layer="0")


def test_interpreter_rejects_unknown_options():
    with pytest.raises(ValueError, match="Valid options: columns"):
        make_filterbank_responses(colums=4)
