"""A well-behaved third-party plugin: one backbone (``tiny_cnn``, alias ``tiny``) and one head."""

from tlkit import hookimpl


def tiny_cnn(*, pretrained: bool = False, width: int = 4):
    """Tiny CNN for plugin tests: one 3x3 conv with stride 2 (8 channels by default)."""
    from torch import nn

    if pretrained:
        from tlkit.errors import WeightsUnavailableError

        raise WeightsUnavailableError("tiny_cnn has no pretrained weights; use --no-pretrained")
    model = nn.Sequential(nn.Conv2d(3, width, kernel_size=3, stride=2), nn.ReLU())
    model.num_features = width
    return model


def max_head(*, num_features: int, num_classes: int, feature_size=None):
    """Global max pooling, then the output layer."""
    from torch import nn

    return nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(num_features, num_classes))


tiny_cnn.has_pretrained = False


@hookimpl
def register_backbones(register):
    register("tiny_cnn", tiny_cnn, aliases=("tiny",))


@hookimpl
def register_heads(register):
    register("max", max_head)
