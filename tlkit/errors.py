"""Exceptions that the command line turns into a one-line message and exit status 2."""


class TlkitError(Exception):
    """Bad usage or bad input: the message names what was wrong and how to fix it."""


class UnknownNameError(TlkitError, KeyError):
    """A backbone, head, augmentation or interpreter name that no plugin registered."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0] if self.args else ""


class NameClashError(TlkitError):
    """Two plugins registered the same name (or alias) for one kind of component."""


class PluginError(TlkitError):
    """A plugin failed to load or raised inside a hook while TLKIT_STRICT_PLUGINS=1."""


class WeightsUnavailableError(TlkitError):
    """Pretrained weights were asked for but cannot be had."""
