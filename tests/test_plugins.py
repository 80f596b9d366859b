"""The plugin host: builtins as plugins, in-process plugins, entry-point discovery and its failures.

Installed distributions are faked in two ways (as pluggy's and pytest's own suites do): in memory,
by replacing ``tlkit.plugins._entry_points`` with ``DummyEntryPoint`` objects, and on disk, by
writing a minimal ``*.dist-info`` that a ``tlkit`` subprocess finds on its ``PYTHONPATH``. One
end-to-end test pip-installs the example plugin ``plugins/tlkit-filterbank`` for real.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plugin_fixtures.dists import entry_point, fixture_source, write_distribution
from tlkit import hookimpl, plugins
from tlkit.errors import NameClashError, PluginError, TlkitError
from tlkit.plugins import get_host, get_registry, plugin_infos

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_HOOKS = {
    "lecture_cnns": ["register_backbones"],
    "timm_backbones": ["register_backbones"],
    "efficientnet_lite0": ["register_backbones"],
    "heads": ["register_heads"],
    "augmentations": ["register_augmentations"],
    "feature_maps": ["register_interpreters"],
    "filters": ["register_interpreters"],
    "attributions": ["register_interpreters"],
}

GOOD = entry_point("tiny", "plugin_fixtures.tiny_backbone", dist="tlkit-tiny", version="1.2.3")
BROKEN = entry_point("broken", "plugin_fixtures.broken_import", dist="tlkit-broken", version="0.0.1")
RAISER = entry_point("raiser", "plugin_fixtures.raises_in_hook", dist="tlkit-raiser", version="0.2")


@pytest.fixture
def installed(monkeypatch):
    """``installed(*entry_points, only=None)``: a fresh host that sees these plugins as installed.

    ``only`` sets TLKIT_LOAD_PLUGINS; by default it is unset, so every installed plugin loads.
    """

    def install(*eps, only=None):
        monkeypatch.setattr(plugins, "_entry_points", lambda: list(eps))
        if only is None:
            monkeypatch.delenv("TLKIT_LOAD_PLUGINS", raising=False)
        else:
            monkeypatch.setenv("TLKIT_LOAD_PLUGINS", only)
        plugins.reset_host()
        return get_host()

    plugins.reset_host()
    yield install
    plugins.reset_host()


def infos_by_name():
    return {info.name: info for info in plugin_infos()}


# -- builtins ----------------------------------------------------------------------------------------
def test_builtins_are_registered_as_plugins_with_their_hooks(fresh_host):
    infos = infos_by_name()
    for name, hooks in BUILTIN_HOOKS.items():
        assert infos[name].source == "builtin"
        assert infos[name].hooks == hooks
    assert infos["lecture_cnns"].registered["backbones"] == ["seed_cnn", "cats_cnn"]
    assert infos["heads"].registered["heads"] == ["flatten", "gap", "dropout"]
    assert set(infos["augmentations"].registered["augmentations"]) == {
        "none", "lecture", "randaugment", "trivialaugment", "autoaugment"}
    assert set(infos["attributions"].registered["interpreters"]) >= {
        "integrated_gradients", "saliency", "occlusion", "gradcam"}


def test_every_builtin_plugin_loads_without_errors(fresh_host):
    failed = {info.name: info.errors for info in plugin_infos() if not info.ok}
    assert failed == {}


def test_builtins_load_even_in_strict_mode(monkeypatch, fresh_host):
    monkeypatch.setenv("TLKIT_STRICT_PLUGINS", "1")
    host = plugins.PluginHost(load_entry_points=False)
    host.load_all()
    assert "gradcam" in host.registry("interpreters")


def test_registries_come_from_the_plugin_that_registered_them():
    assert get_registry("backbones").get("seed_cnn").plugin == "lecture_cnns"
    assert get_registry("backbones").get("resnet50").plugin == "timm_backbones"
    assert get_registry("heads").get("gap").plugin == "heads"
    assert get_registry("interpreters").get("feature_maps").plugin == "feature_maps"


# -- in-process plugins ----------------------------------------------------------------------------
class TinyPlugin:
    """A plugin object written in a notebook: no package, no entry point."""

    @hookimpl
    def register_backbones(self, register):
        from plugin_fixtures.tiny_backbone import tiny_cnn

        register("notebook_cnn", tiny_cnn, description="registered in-process")


def test_register_a_plugin_object_in_process():
    from tlkit.models import build_model

    host = get_host()
    assert "notebook_cnn" not in get_registry("backbones")
    host.register(TinyPlugin(), name="notebook")
    try:
        entry = get_registry("backbones").get("notebook_cnn")
        assert entry.plugin == "notebook" and entry.description == "registered in-process"
        info = infos_by_name()["notebook"]
        assert info.hooks == ["register_backbones"] and info.registered["backbones"] == ["notebook_cnn"]
        model = build_model("notebook_cnn", "gap", num_classes=3, image_size=16, pretrained=False)
        assert model.num_features == 4
        assert model.feature_size == (7, 7)
        assert get_registry("backbones").get("seed_cnn").plugin == "lecture_cnns"  # builtins unaffected
    finally:
        host.unregister("notebook")
    assert "notebook_cnn" not in get_registry("backbones")
    assert "notebook" not in infos_by_name()


def test_register_a_plugin_module_in_process():
    import plugin_fixtures.tiny_backbone as module

    host = get_host()
    host.register(module, name="tiny_module")
    try:
        assert get_registry("backbones").get("tiny").name == "tiny_cnn"
        assert get_registry("heads").get("max").plugin == "tiny_module"
    finally:
        host.unregister("tiny_module")
    assert "tiny_cnn" not in get_registry("backbones") and "max" not in get_registry("heads")


def test_registering_in_process_twice_keeps_plugin_infos_exact(fresh_host):
    import plugin_fixtures.tiny_backbone as module

    before = {info.name: info.as_dict() for info in plugin_infos()}
    # each registration clears the registries, and load_all calls every hook again
    for plugin, name in [(module, "first"), (TinyPlugin(), "second"), (ClaimsSeedCnn(), "impostor"),
                         (type("NoHooks", (), {})(), "third")]:
        fresh_host.register(plugin, name=name)
        fresh_host.load_all()
    infos = infos_by_name()
    assert infos["lecture_cnns"].as_dict() == before["lecture_cnns"]
    assert infos["first"].registered == {"backbones": ["tiny_cnn"], "heads": ["max"]}
    assert len(infos["impostor"].errors) == 1
    for name in ("first", "second", "impostor", "third"):
        fresh_host.unregister(name)
    assert {info.name: info.as_dict() for info in plugin_infos()} == before


class ClaimsSeedCnn:
    @hookimpl
    def register_backbones(self, register):
        register("seed_cnn", lambda **kw: None)
        register("my_own_cnn", lambda **kw: None)


def test_two_plugins_registering_one_name_is_an_error_naming_both(fresh_host):
    fresh_host.register(ClaimsSeedCnn(), name="impostor")
    backbones = get_registry("backbones")
    with pytest.raises(NameClashError) as caught:
        backbones.get("seed_cnn")
    assert "'lecture_cnns'" in str(caught.value) and "'impostor'" in str(caught.value)
    assert backbones.get("cats_cnn").plugin == "lecture_cnns"  # the rest keeps working
    assert backbones.get("my_own_cnn").plugin == "impostor"
    info = infos_by_name()["impostor"]
    assert not info.ok and "lecture_cnns" in info.errors[0] and "impostor" in info.errors[0]


def test_a_clash_is_fatal_in_strict_mode(monkeypatch, fresh_host):
    monkeypatch.setenv("TLKIT_STRICT_PLUGINS", "1")
    fresh_host.register(ClaimsSeedCnn(), name="impostor")
    with pytest.raises(PluginError) as caught:
        get_registry("backbones")
    assert "impostor" in str(caught.value) and "lecture_cnns" in str(caught.value)


# -- entry points, faked in memory ------------------------------------------------------------------
def test_an_installed_plugin_is_discovered_with_its_version(installed):
    from tlkit.models import build_model

    installed(GOOD)
    info = infos_by_name()["tiny"]
    assert info.ok and info.version == "1.2.3" and "tlkit-tiny" in info.source
    assert info.hooks == ["register_backbones", "register_heads"]
    assert get_registry("backbones").get("tiny_cnn").plugin == "tiny"
    model = build_model("tiny_cnn", "max", num_classes=2, image_size=16)  # has_pretrained=False
    assert model.backbone_name == "tiny_cnn" and model.head_name == "max"


def test_broken_plugins_are_skipped_and_recorded_and_the_rest_keep_working(installed):
    installed(BROKEN, GOOD, RAISER)
    infos = infos_by_name()
    assert not infos["broken"].ok
    assert "ModuleNotFoundError" in infos["broken"].errors[0]
    assert "tlkit_dependency_that_is_not_installed" in infos["broken"].errors[0]
    assert infos["broken"].version == "0.0.1"
    assert not infos["raiser"].ok
    assert "register_heads raised RuntimeError" in infos["raiser"].errors[0]
    assert "broken on purpose" in infos["raiser"].errors[0]
    assert infos["tiny"].ok
    assert "tiny_cnn" in get_registry("backbones")
    assert {"max", "flatten", "gap", "dropout"} <= set(get_registry("heads").names())
    assert all(infos[name].ok for name in BUILTIN_HOOKS)


def test_import_failure_is_fatal_in_strict_mode(installed, monkeypatch):
    monkeypatch.setenv("TLKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as caught:
        installed(GOOD, BROKEN)
    assert "'broken'" in str(caught.value) and "TLKIT_STRICT_PLUGINS" in str(caught.value)
    assert isinstance(caught.value, TlkitError)


def test_hook_failure_is_fatal_in_strict_mode(installed, monkeypatch):
    monkeypatch.setenv("TLKIT_STRICT_PLUGINS", "1")
    installed(GOOD, RAISER)
    assert "tiny_cnn" in get_registry("backbones")  # only the failing hook's registry is affected
    with pytest.raises(PluginError) as caught:
        get_registry("heads")
    assert "'raiser'" in str(caught.value) and "broken on purpose" in str(caught.value)


def test_load_plugins_selects_installed_plugins_by_name(installed):
    installed(BROKEN, GOOD, RAISER, only="tiny")
    infos = infos_by_name()
    assert "tiny" in infos and "broken" not in infos and "raiser" not in infos
    assert all(info.ok for info in infos.values())


def test_load_plugins_empty_loads_no_installed_plugin(installed):
    installed(GOOD, only="")
    assert "tiny" not in infos_by_name()
    assert "tiny_cnn" not in get_registry("backbones")
    assert "seed_cnn" in get_registry("backbones")  # builtins always load


# -- entry points, faked on disk, through the command line -----------------------------------------
def tlkit(*args, env_extra=None, pythonpath=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in {"TLKIT_LOAD_PLUGINS", "TLKIT_STRICT_PLUGINS"}}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "tlkit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def site(tmp_path):
    """A folder with three installed distributions: one good, one that fails to import, one whose hook raises."""
    root = tmp_path / "site"
    write_distribution(root, "tlkit-tiny", "1.2.3", modules={"tlkit_fixture_tiny": fixture_source("tiny_backbone")},
                       entry_points={"tiny": "tlkit_fixture_tiny"})
    write_distribution(root, "tlkit-broken", "0.0.1",
                       modules={"tlkit_fixture_broken": fixture_source("broken_import")},
                       entry_points={"broken": "tlkit_fixture_broken"})
    write_distribution(root, "tlkit-raiser", "0.2",
                       modules={"tlkit_fixture_raiser": fixture_source("raises_in_hook")},
                       entry_points={"raiser": "tlkit_fixture_raiser"})
    return root


def test_tlkit_plugins_shows_broken_plugins_as_failed_and_exits_0(site):
    result = tlkit("plugins", pythonpath=site)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "tiny 1.2.3 [entry point (tlkit-tiny)] ok" in lines
    assert "broken 0.0.1 [entry point (tlkit-broken)] FAILED" in lines
    assert "raiser 0.2 [entry point (tlkit-raiser)] FAILED" in lines
    assert "lecture_cnns [builtin] ok" in lines
    assert "tlkit_dependency_that_is_not_installed" in result.stdout
    assert "broken on purpose" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert re.search(r"plugin\(s\) reported errors: .*broken.*raiser", result.stderr), result.stderr


def test_tlkit_plugins_json_and_list_with_broken_plugins_installed(site):
    result = tlkit("plugins", "--json", pythonpath=site)
    assert result.returncode == 0
    document = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert document["tiny"]["version"] == "1.2.3" and document["tiny"]["errors"] == []
    assert document["tiny"]["registered"] == {"backbones": ["tiny_cnn"], "heads": ["max"]}
    assert document["broken"]["errors"] and document["raiser"]["errors"]
    listed = tlkit("list", "backbones", "tiny*", pythonpath=site)
    assert listed.returncode == 0 and "tiny_cnn" in listed.stdout and "[tiny]" in listed.stdout


def test_strict_mode_on_the_command_line_exits_2_with_one_line(site):
    result = tlkit("list", "backbones", pythonpath=site, env_extra={"TLKIT_STRICT_PLUGINS": "1"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "plugin 'broken' failed" in result.stderr and "Traceback" not in result.stderr


def test_load_plugins_on_the_command_line(site):
    result = tlkit("plugins", "--json", pythonpath=site, env_extra={"TLKIT_LOAD_PLUGINS": "tiny"})
    names = {p["name"] for p in json.loads(result.stdout)["plugins"]}
    assert "tiny" in names and "broken" not in names and "raiser" not in names


# -- the example plugin, pip-installed for real ----------------------------------------------------
@pytest.mark.slow
def test_pip_installed_example_plugin_shows_up_in_tlkit(tmp_path):
    source = tmp_path / "tlkit-filterbank"
    # Build from a copy, so that setuptools' build/ and *.egg-info never land in the checkout.
    shutil.copytree(ROOT / "plugins" / "tlkit-filterbank", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                          "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(target),
                          str(source)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (target / "tlkit_filterbank-0.1.0.dist-info").is_dir()

    result = tlkit("list", "backbones", "--json", pythonpath=target)
    assert result.returncode == 0, result.stderr
    backbones = {b["name"]: b for b in json.loads(result.stdout)["backbones"]}
    assert backbones["filterbank"]["plugin"] == "filterbank"
    assert backbones["filterbank"]["aliases"] == ["sobel_gabor"]
    assert "seed_cnn" in backbones

    result = tlkit("list", "interpreters", pythonpath=target)
    assert result.returncode == 0 and "filterbank_responses" in result.stdout

    result = tlkit("plugins", pythonpath=target)
    assert "filterbank 0.1.0 [entry point (tlkit-filterbank)] ok" in result.stdout.splitlines()

    # and a model can be built from it
    result = tlkit("summary", "--backbone", "filterbank", "--head", "gap", "--image-size", "32",
                   "--num-classes", "2", pythonpath=target)
    assert result.returncode == 0, result.stderr
    assert "filterbank + gap, 2 classes, 32x32 input" in result.stdout
    assert "Total params: 22" in result.stdout  # fixed filters are buffers: only the head learns (10*2+2)
