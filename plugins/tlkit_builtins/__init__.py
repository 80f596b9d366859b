"""tlkit's builtin plugins.

Each module here is an ordinary plugin: it implements hooks with ``@tlkit.hookimpl`` and is
registered by the plugin manager exactly like a third-party plugin (see ``tlkit.plugins``).
"""
