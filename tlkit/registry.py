"""Registries of named components (backbones, heads, augmentations, interpreters).

A registry maps names and aliases to factories and remembers which plugin provided each one. It
lists names with shell-style wildcards in natural order (``resnet18`` before ``resnet101``) and turns
an unknown name into an error that lists the valid names and the closest match.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from tlkit.errors import NameClashError, UnknownNameError

KINDS = ("backbones", "heads", "augmentations", "interpreters")
SINGULAR = {
    "backbones": "backbone",
    "heads": "head",
    "augmentations": "augmentation policy",
    "interpreters": "interpreter",
}


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers numerically: ``vgg11 < vgg16 < vgg116``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    name: str
    factory: Callable[..., Any]
    kind: str
    plugin: str
    description: str = ""
    aliases: tuple[str, ...] = ()

    def create(self, **options):
        """Call the factory with keyword options."""
        return self.factory(**options)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "plugin": self.plugin,
        }


@dataclass
class Registry:
    """Names, aliases and factories of one kind of component."""

    kind: str
    _entries: dict[str, Entry] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)
    # name -> plugins that claimed it after the first; such a name is unusable until resolved
    clashes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def singular(self) -> str:
        return SINGULAR.get(self.kind, self.kind)

    def _owner(self, name: str) -> str | None:
        if name in self._entries:
            return self._entries[name].plugin
        if name in self._aliases:
            return self._entries[self._aliases[name]].plugin
        return None

    def add(self, name: str, factory: Callable, *, plugin: str, description: str = "",
            aliases=()) -> Entry:
        """Register ``factory`` under ``name``; raise NameClashError if another plugin owns a name."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.singular} name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise TypeError(f"the factory for {self.singular} {name!r} is not callable: {factory!r}")
        aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)
        for claimed in (name, *aliases):
            owner = self._owner(claimed)
            if owner is not None:
                self.clashes.setdefault(claimed, [owner]).append(plugin)
                raise NameClashError(
                    f"{self.singular} name {claimed!r} is registered by both plugin {owner!r} and "
                    f"plugin {plugin!r}; uninstall one of them or rename the component"
                )
        entry = Entry(name=name, factory=factory, kind=self.kind, plugin=plugin,
                      description=description or _first_doc_line(factory), aliases=aliases)
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def get(self, name: str) -> Entry:
        """The entry for ``name`` or one of its aliases."""
        if name in self.clashes:
            owners = " and ".join(repr(p) for p in self.clashes[name])
            raise NameClashError(
                f"{self.singular} {name!r} is registered by several plugins ({owners}); "
                f"uninstall all but one of them"
            )
        if name in self._entries:
            return self._entries[name]
        if name in self._aliases:
            return self._entries[self._aliases[name]]
        raise UnknownNameError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        valid = self.names()
        close = difflib.get_close_matches(str(name), valid + list(self._aliases), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(valid) if valid else "(none registered)"
        return f"unknown {self.singular} {name!r}.{hint} Valid {self.kind}: {listed}"

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str | None = None) -> list[str]:
        """Names matching ``pattern`` (shell wildcards, or a bare substring; aliases count), naturally sorted."""
        return [entry.name for entry in self.entries(pattern)]

    def entries(self, pattern: str | None = None) -> list[Entry]:
        if pattern is not None and not any(ch in pattern for ch in "*?["):
            pattern = f"*{pattern}*"  # a bare word filters by substring, like `grep`
        found = []
        for entry in self._entries.values():
            if pattern is None or any(fnmatch.fnmatchcase(n.lower(), pattern.lower())
                                      for n in (entry.name, *entry.aliases)):
                found.append(entry)
        return sorted(found, key=lambda e: natural_key(e.name))


def _first_doc_line(obj) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""
