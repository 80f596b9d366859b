"""The lecture's three classifier heads.

- ``flatten``: flatten the feature map, a hidden dense layer with ReLU, the output layer.
  Keeps location information; costs ``C*h*w*hidden`` weights.
- ``gap``: global average pooling straight into the output layer (fewest weights).
- ``dropout``: global average pooling, hidden dense layer with ReLU, dropout, output layer
  (the lecture's regularised cats-vs-dogs head).
"""

from tlkit import hookimpl


def flatten_head(*, num_features: int, num_classes: int, feature_size, hidden: int = 64):
    """Flatten, hidden dense layer (default 64) with ReLU, output layer."""
    from torch import nn

    h, w = feature_size
    return nn.Sequential(nn.Flatten(), nn.Linear(num_features * h * w, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def gap_head(*, num_features: int, num_classes: int, feature_size=None):
    """Global average pooling, then the output layer."""
    from torch import nn

    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(num_features, num_classes))


def dropout_head(*, num_features: int, num_classes: int, feature_size=None, hidden: int = 512,
                 p: float = 0.5):
    """Global average pooling, hidden dense layer (default 512) with ReLU, dropout (0.5), output."""
    from torch import nn

    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p}")
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(num_features, hidden),
                         nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, num_classes))


@hookimpl
def register_heads(register):
    register("flatten", flatten_head, aliases=("dense",))
    register("gap", gap_head, aliases=("global_average_pooling",))
    register("dropout", dropout_head)
