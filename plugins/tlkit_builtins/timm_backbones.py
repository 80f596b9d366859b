"""The lecture's real-world networks through timm: VGG16, Inception v3, ResNet50 (and ResNet18).

Each returns the last unpooled feature map, so any head (flatten, GAP, dropout) can sit on top.
Pretrained weights come from timm's Hugging Face hub or its local cache.
"""

from functools import partial

from tlkit import hookimpl

# name -> (timm architecture, smallest input side, description)
ARCHITECTURES = {
    "vgg16": ("vgg16", 32, "VGG16: 13 3x3 convs in 5 blocks with max-pooling (timm, 512 channels)"),
    "inception_v3": ("inception_v3", 75, "Inception v3: parallel multi-scale branches (timm, 2048 channels)"),
    "resnet50": ("resnet50", 32, "ResNet50: bottleneck residual blocks (timm, 2048 channels)"),
    "resnet18": ("resnet18", 32, "ResNet18: basic residual blocks, small and fast (timm, 512 channels)"),
}


def make_timm_backbone(name, *, pretrained: bool = False, **options):
    """Create the timm backbone registered as ``name``."""
    from tlkit.backbones import TimmBackbone

    arch, min_size, _ = ARCHITECTURES[name]
    return TimmBackbone(arch, pretrained=pretrained, name=name, min_input_size=min_size, **options)


@hookimpl
def register_backbones(register):
    aliases = {"vgg16": ("vgg",), "inception_v3": ("inception", "inceptionv3"), "resnet50": ("resnet",)}
    for name, (_, _, description) in ARCHITECTURES.items():
        register(name, partial(make_timm_backbone, name), description=description,
                 aliases=aliases.get(name, ()))
