"""Names of components: natural order, wildcard and substring filters, aliases, clashes, typos."""

import pytest

from tlkit.errors import NameClashError, TlkitError, UnknownNameError
from tlkit.plugins import get_registry
from tlkit.registry import Registry


def factory():
    """A component for registry tests."""


def make_registry(*names, plugin="plugin_a"):
    registry = Registry("backbones")
    for name in names:
        registry.add(name, factory, plugin=plugin)
    return registry


def test_names_are_sorted_naturally():
    registry = make_registry("net2", "net10", "net1", "Net3", "alpha")
    assert registry.names() == ["alpha", "net1", "net2", "Net3", "net10"]


def test_builtin_backbones_are_listed_in_natural_order():
    names = get_registry("backbones").names()
    assert {"seed_cnn", "cats_cnn", "vgg16", "inception_v3", "resnet50", "efficientnet_lite0"} <= set(names)
    assert names.index("resnet18") < names.index("resnet50") < names.index("seed_cnn") < names.index("vgg16")


def test_wildcard_filter():
    backbones = get_registry("backbones")
    assert backbones.names("res*") == ["resnet18", "resnet50"]
    assert backbones.names("RES*") == ["resnet18", "resnet50"]  # case-insensitive, like timm
    assert backbones.names("*_cnn") == ["cats_cnn", "seed_cnn"]
    assert backbones.names("vgg1?") == ["vgg16"]
    assert backbones.names("nothing*") == []


def test_bare_word_filters_by_substring():
    assert get_registry("backbones").names("net") == ["efficientnet_lite0", "resnet18", "resnet50"]
    assert get_registry("heads").names("out") == ["dropout"]


def test_alias_lookup_returns_the_real_entry():
    backbones = get_registry("backbones")
    assert backbones.get("mnist_cnn").name == "seed_cnn"
    assert backbones.get("inception").name == "inception_v3"
    assert "mnist_cnn" in backbones
    assert get_registry("augmentations").get("classic").name == "lecture"


def test_filter_matches_aliases_and_lists_the_real_name():
    backbones = get_registry("backbones")
    assert backbones.names("mnist*") == ["seed_cnn"]
    assert backbones.names("effnet") == ["efficientnet_lite0"]
    entry = backbones.entries("mnist*")[0]
    assert entry.as_dict()["aliases"] == ["mnist_cnn"]


def test_unknown_name_lists_valid_names_and_suggests_a_close_match():
    with pytest.raises(UnknownNameError) as caught:
        get_registry("backbones").get("resnt50")
    message = str(caught.value)
    assert "Did you mean 'resnet50'?" in message
    assert "resnt50" in message
    for name in ("seed_cnn", "cats_cnn", "vgg16", "inception_v3", "resnet50", "efficientnet_lite0"):
        assert name in message


def test_unknown_name_without_close_match_still_lists_valid_names():
    with pytest.raises(UnknownNameError) as caught:
        get_registry("heads").get("zzzzzz")
    assert "Did you mean" not in str(caught.value)
    assert "dropout, flatten, gap" in str(caught.value)


def test_unknown_name_error_is_a_tlkit_error_and_a_key_error():
    with pytest.raises(TlkitError):
        get_registry("heads").get("nope")
    with pytest.raises(KeyError):  # code written against dict-like registries keeps working
        get_registry("heads").get("nope")
    assert issubclass(UnknownNameError, TlkitError)
    assert issubclass(NameClashError, TlkitError)


def test_clash_names_both_plugins():
    registry = make_registry("shared", "mine", plugin="plugin_a")
    with pytest.raises(NameClashError) as caught:
        registry.add("shared", factory, plugin="plugin_b")
    assert "'plugin_a'" in str(caught.value) and "'plugin_b'" in str(caught.value)
    assert "'shared'" in str(caught.value)


def test_clashing_name_is_unusable_but_other_names_still_work():
    registry = make_registry("shared", "mine", plugin="plugin_a")
    with pytest.raises(NameClashError):
        registry.add("shared", factory, plugin="plugin_b")
    registry.add("theirs", factory, plugin="plugin_b")
    with pytest.raises(NameClashError) as caught:
        registry.get("shared")  # no silent winner: the first plugin's entry is not used either
    assert "'plugin_a'" in str(caught.value) and "'plugin_b'" in str(caught.value)
    assert registry.get("mine").plugin == "plugin_a"
    assert registry.get("theirs").plugin == "plugin_b"


def test_an_alias_clashing_with_a_name_is_a_clash():
    registry = Registry("heads")
    registry.add("dense", factory, plugin="plugin_a")
    with pytest.raises(NameClashError) as caught:
        registry.add("mlp", factory, plugin="plugin_b", aliases=("dense",))
    assert "'plugin_a'" in str(caught.value) and "'plugin_b'" in str(caught.value)
    assert "mlp" not in registry  # nothing of the rejected registration is half-added
    with pytest.raises(NameClashError):
        registry.get("dense")


def test_bad_registrations_are_rejected():
    registry = Registry("heads")
    with pytest.raises(ValueError):
        registry.add("", factory, plugin="p")
    with pytest.raises(TypeError):
        registry.add("x", "not callable", plugin="p")


def test_description_defaults_to_first_docstring_line():
    registry = make_registry("documented")
    assert registry.get("documented").description == "A component for registry tests."
    assert get_registry("heads").get("gap").description.startswith("Global average pooling")
