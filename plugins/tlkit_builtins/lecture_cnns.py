"""The lecture's two small CNNs trained from scratch: ``seed_cnn`` (MNIST) and ``cats_cnn`` (cats vs dogs).

Both are 3x3 convolutions without padding, each followed by ReLU; ``seed_cnn`` max-pools after its
first two convolutions, ``cats_cnn`` after each of its four. They return the unpooled feature map;
the head decides how to pool or flatten it.
"""

from tlkit import hookimpl


def _conv_stack(widths, pool_after, in_channels=3):
    from torch import nn

    layers = []
    for index, width in enumerate(widths):
        layers += [nn.Conv2d(in_channels, width, kernel_size=3), nn.ReLU()]
        if index in pool_after:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        in_channels = width
    return layers


def _make(widths, pool_after, input_size, in_channels):
    from torch import nn

    model = nn.Sequential(*_conv_stack(widths, pool_after, in_channels))
    model.num_features = widths[-1]
    model.data_config = {"input_size": (3, input_size, input_size), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    return model


def seed_cnn(*, pretrained: bool = False, widths=(32, 64, 64), in_channels: int = 3):
    """Lecture MNIST CNN: 3x3 convs 32-64-64, 2x2 max-pooling after the first two (28 px -> 3x3)."""
    _no_weights("seed_cnn", pretrained)
    widths = tuple(int(w) for w in widths)
    return _make(widths, pool_after=set(range(len(widths) - 1)), input_size=28, in_channels=in_channels)


def cats_cnn(*, pretrained: bool = False, widths=(32, 64, 128, 128), in_channels: int = 3):
    """Lecture cats-vs-dogs CNN: 3x3 convs 32-64-128-128, 2x2 max-pooling after each (150 px -> 7x7)."""
    _no_weights("cats_cnn", pretrained)
    widths = tuple(int(w) for w in widths)
    return _make(widths, pool_after=set(range(len(widths))), input_size=150, in_channels=in_channels)


def _no_weights(name, pretrained):
    if pretrained:
        from tlkit.errors import WeightsUnavailableError

        raise WeightsUnavailableError(
            f"backbone {name!r} is trained from scratch and has no pretrained weights; "
            f"use --no-pretrained (or --weights FILE from an earlier run)"
        )


@hookimpl
def register_backbones(register):
    register("seed_cnn", seed_cnn, aliases=("mnist_cnn",))
    register("cats_cnn", cats_cnn)


# Tells the model factory that "pretrained unless told otherwise" means random weights here.
seed_cnn.has_pretrained = False
cats_cnn.has_pretrained = False
