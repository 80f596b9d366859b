"""The plugin manager: builtin plugins first, then the ``tlkit`` entry-point group.

Entry points are loaded one at a time. A plugin that fails to import, or raises inside a hook, is
skipped and recorded in :func:`plugin_infos`; the others keep working. ``TLKIT_STRICT_PLUGINS=1``
turns such a failure into a :class:`~tlkit.errors.PluginError`. ``TLKIT_LOAD_PLUGINS`` limits which
installed plugins load: a comma-separated list of entry-point names, or empty for none (the test
suite sets it so that whatever happens to be installed cannot change its results).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import threading
import traceback
from dataclasses import dataclass, field

import pluggy

from tlkit import hookspecs
from tlkit.errors import NameClashError, PluginError
from tlkit.registry import KINDS, Registry

ENTRY_POINT_GROUP = "tlkit"

#: The builtin plugins: ordinary plugin modules, registered exactly like third-party ones.
DEFAULT_PLUGINS = (
    "tlkit_builtins.lecture_cnns",
    "tlkit_builtins.timm_backbones",
    "tlkit_builtins.efficientnet_lite0",
    "tlkit_builtins.heads",
    "tlkit_builtins.augmentations",
    "tlkit_builtins.feature_maps",
    "tlkit_builtins.filters",
    "tlkit_builtins.attributions",
)


@dataclass
class PluginInfo:
    """What tlkit knows about one plugin, for ``tlkit plugins``."""

    name: str
    source: str  # "builtin" or "entry point <dist>"
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "version": self.version,
            "hooks": self.hooks,
            "registered": self.registered,
            "errors": self.errors,
        }


class PluginHost:
    """Owns one pluggy manager and the four registries filled from it."""

    def __init__(self, *, load_entry_points: bool = True, builtins=DEFAULT_PLUGINS):
        self.pm = pluggy.PluginManager("tlkit")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] = {}
        self._lock = threading.RLock()
        for module_name in builtins:
            self._add_module(module_name, module_name.rsplit(".", 1)[-1], source="builtin")
        if load_entry_points:
            self._load_entry_points()

    # -- loading ---------------------------------------------------------------------------------
    @staticmethod
    def strict() -> bool:
        return os.environ.get("TLKIT_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None = None):
        if message not in info.errors:  # rebuilt registries call the hooks again
            info.errors.append(message)
        if self.strict():
            raise PluginError(f"plugin {info.name!r} failed: {message} "
                              f"(unset TLKIT_STRICT_PLUGINS to skip it instead)") from exc

    def _add_module(self, module_name: str, name: str, *, source: str, version=None):
        info = self.infos.setdefault(name, PluginInfo(name=name, source=source, version=version))
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure isolates this plugin only
            self._fail(info, f"import of {module_name} failed: {type(exc).__name__}: {exc}", exc)
            return
        self.register(module, name=name, info=info)

    def register(self, plugin, name: str | None = None, *, info: PluginInfo | None = None) -> str:
        """Register a plugin object in-process (tests, notebooks). Registries are rebuilt on next use."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        with self._lock:
            if info is None:
                info = self.infos.setdefault(name, PluginInfo(name=name, source="in-process"))
            try:
                self.pm.register(plugin, name=name)
            except Exception as exc:  # noqa: BLE001 - pluggy validation errors (bad hook names...)
                self._fail(info, f"registration failed: {type(exc).__name__}: {exc}", exc)
                return name
            info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            self._registries.clear()
        return name

    def unregister(self, name: str) -> None:
        with self._lock:
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                self.pm.unregister(plugin)
            self.infos.pop(name, None)
            self._registries.clear()

    def _load_entry_points(self):
        only = os.environ.get("TLKIT_LOAD_PLUGINS")
        wanted = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
        for ep in sorted(_entry_points(), key=lambda e: e.name):
            if wanted is not None and ep.name not in wanted:
                continue
            dist = getattr(ep, "dist", None)
            version = getattr(dist, "version", None)
            dist_name = getattr(dist, "name", None) or ep.value.split(":")[0]
            info = self.infos.setdefault(
                ep.name, PluginInfo(name=ep.name, source=f"entry point ({dist_name})", version=version))
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001
                self._fail(info, f"import of {ep.value} failed: {type(exc).__name__}: {exc}", exc)
                continue
            self.register(plugin, name=ep.name, info=info)

    # -- registries ------------------------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        """The registry of ``kind`` (one of ``backbones``, ``heads``, ``augmentations``, ``interpreters``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown registry kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        with self._lock:
            if kind not in self._registries:
                self._registries[kind] = self._build(kind)
            return self._registries[kind]

    def _build(self, kind: str) -> Registry:
        registry = Registry(kind)
        caller = getattr(self.pm.hook, f"register_{kind}")
        # Call each implementation on its own so that the provider of every name is known and a
        # plugin that raises loses only its own registrations.
        for impl in caller.get_hookimpls():  # first-registered first: builtins keep their names
            name = self.pm.get_name(impl.plugin)
            info = self.infos.setdefault(name, PluginInfo(name=name, source="in-process"))
            info.registered[kind] = []  # a rebuilt registry (after register/unregister) starts afresh

            def register(comp_name, factory, *, description="", aliases=(), _plugin=name, _info=info):
                try:
                    registry.add(comp_name, factory, plugin=_plugin, description=description,
                                  aliases=aliases)
                except NameClashError as exc:
                    self._fail(_info, str(exc), exc)
                    return
                _info.registered[kind].append(comp_name)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001
                last = traceback.extract_tb(exc.__traceback__)[-1]
                self._fail(info, f"register_{kind} raised {type(exc).__name__}: {exc} "
                                 f"({os.path.basename(last.filename)}:{last.lineno})", exc)
        return registry

    def load_all(self) -> None:
        """Build every registry now, so that every hook has been called (for ``tlkit plugins``)."""
        for kind in KINDS:
            self.registry(kind)


def _entry_points():
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


_host: PluginHost | None = None
_host_lock = threading.Lock()


def get_host() -> PluginHost:
    """The process-wide plugin host, created on first use."""
    global _host
    with _host_lock:
        if _host is None:
            _host = PluginHost()
        return _host


def reset_host() -> None:
    """Forget the plugin host so that the next use reloads every plugin (tests)."""
    global _host
    with _host_lock:
        _host = None


def get_registry(kind: str) -> Registry:
    """The registry of ``kind`` from the process-wide host."""
    return get_host().registry(kind)


def plugin_infos() -> list[PluginInfo]:
    host = get_host()
    host.load_all()
    return list(host.infos.values())
