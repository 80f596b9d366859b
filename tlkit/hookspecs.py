"""The extension points of tlkit: this module is the reference for plugin authors.

A plugin is a module (or any object) with functions marked ``@tlkit.hookimpl`` whose names are the
hooks below. tlkit calls every hook once per process, the first time a registry is needed, and hands
it a ``register`` callable::

    register(name, factory, *, description="", aliases=())

``name`` and each alias must be unique within a kind across all plugins: tlkit owns the names, and a
second plugin claiming one is reported as a clash naming both plugins. Plugins never see or mutate the
registries directly.
"""

import pluggy

hookspec = pluggy.HookspecMarker("tlkit")
hookimpl = pluggy.HookimplMarker("tlkit")


@hookspec
def register_backbones(register):
    """Register feature extractors.

    Called once, when the backbone registry is first used. Each factory has the signature
    ``factory(*, pretrained: bool = False, **options) -> torch.nn.Module``. The module maps float
    images ``(B, 3, H, W)`` to an unpooled feature map ``(B, C, h, w)`` and has an attribute
    ``num_features == C``. It may carry ``data_config = {"input_size": (3, H, W), "mean": (...),
    "std": (...)}`` (ImageNet mean/std are assumed otherwise) and ``min_input_size: int``. With
    ``pretrained=True`` the factory must either load real weights or raise
    ``tlkit.errors.WeightsUnavailableError`` saying how to get them; never fall back silently (a
    backbone of fixed, non-learned filters has nothing to load and may ignore the flag). A factory
    attribute ``has_pretrained = False`` makes "pretrained unless told otherwise" mean random weights.
    """


@hookspec
def register_heads(register):
    """Register classifier heads.

    Called once, when the head registry is first used. Each factory has the signature
    ``factory(*, num_features: int, num_classes: int, feature_size: tuple[int, int], **options)
    -> torch.nn.Module`` mapping a feature map ``(B, num_features, *feature_size)`` to logits
    ``(B, num_classes)``.
    """


@hookspec
def register_augmentations(register):
    """Register training-time augmentation policies.

    Called once, when the augmentation registry is first used. Each factory has the signature
    ``factory(*, image_size: int, **options)`` and returns a torchvision transform that takes a PIL
    RGB image and returns a PIL image (or tensor) of ``image_size x image_size``. tlkit appends the
    tensor conversion and the backbone's normalisation itself.
    """


@hookspec
def register_interpreters(register):
    """Register interpreters: ways of explaining what a model sees.

    Called once, when the interpreter registry is first used. Each factory has the signature
    ``factory(**options) -> interpreter`` where ``interpreter(model, image, *, target=None,
    layer=None) -> tlkit.interpret.Explanation``. ``model`` is a ``tlkit.models.TlkitModel`` in eval
    mode, ``image`` a normalised float tensor ``(1, 3, H, W)``, ``target`` a class index (``None``:
    the predicted class) and ``layer`` a module name from ``model.named_modules()`` (``None``: the
    interpreter's default). The returned ``Explanation`` holds the raw arrays and a rendered figure.
    """
