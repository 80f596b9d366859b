"""tlkit: transfer learning for image classification, built from plugins.

Plugins write ``from tlkit import hookimpl``. Everything heavy (torch, Lightning, Gradio) is imported
lazily by the modules that need it, so ``import tlkit`` and ``tlkit --help`` stay fast.
"""

from tlkit.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

__all__ = ["hookimpl", "hookspec", "__version__", "build_model", "get_registry", "load_model"]


def __getattr__(name):
    # Convenience re-exports, imported on first use only.
    if name == "build_model":
        from tlkit.models import build_model

        return build_model
    if name == "load_model":
        from tlkit.runs import load_model

        return load_model
    if name == "get_registry":
        from tlkit.plugins import get_registry

        return get_registry
    raise AttributeError(f"module 'tlkit' has no attribute {name!r}")
