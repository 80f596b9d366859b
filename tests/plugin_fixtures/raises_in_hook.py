"""A plugin whose hook raises: tlkit must skip it (or stop, with TLKIT_STRICT_PLUGINS=1)."""

from tlkit import hookimpl


@hookimpl
def register_heads(register):
    raise RuntimeError("this plugin's head hook is broken on purpose")
