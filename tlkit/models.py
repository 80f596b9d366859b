"""The model factory: a backbone and a head, chosen by name from the registries.

>>> model = build_model("seed_cnn", "flatten", num_classes=10, image_size=28)
>>> model(torch.zeros(2, 3, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tlkit.errors import TlkitError
from tlkit.plugins import get_registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_HEAD = "gap"


class TlkitModel(nn.Module):
    """A backbone followed by a head, knowing its names, image size and normalisation.

    ``forward(images)`` maps normalised images ``(B, 3, S, S)`` to logits ``(B, num_classes)``;
    ``features(images)`` returns the backbone's feature map.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, *, backbone_name: str, head_name: str,
                 num_classes: int, image_size: int, mean, std, feature_size,
                 class_names=None, backbone_options=None, head_options=None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_name = backbone_name
        self.head_name = head_name
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.feature_size = tuple(int(v) for v in feature_size)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.backbone_options = dict(backbone_options or {})
        self.head_options = dict(head_options or {})

    def forward(self, images):
        return self.head(self.backbone(images))

    def features(self, images):
        return self.backbone(images)

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def config(self) -> dict[str, Any]:
        """What is needed to rebuild this model (without weights): stored as a run's config.json."""
        return {
            "backbone": self.backbone_name,
            "head": self.head_name,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "backbone_options": self.backbone_options,
            "head_options": self.head_options,
        }


def backbone_has_pretrained(name: str) -> bool:
    """Whether ``name`` offers pretrained weights (factories may say ``has_pretrained = False``)."""
    return bool(getattr(get_registry("backbones").get(name).factory, "has_pretrained", True))


def build_backbone(name: str, *, pretrained: bool = False, weights=None, **options) -> nn.Module:
    """Create a backbone by registry name, then load ``weights`` (a file in timm's layout) if given."""
    entry = get_registry("backbones").get(name)
    try:
        backbone = entry.create(pretrained=bool(pretrained), **options)
    except TlkitError:
        raise
    except TypeError as exc:
        raise TlkitError(f"backbone {name!r} rejected its options {sorted(options)}: {exc}") from exc
    if not hasattr(backbone, "num_features"):
        raise TlkitError(f"backbone {name!r} from plugin {entry.plugin!r} has no num_features attribute")
    if weights is not None:
        load_backbone_weights(backbone, weights, name=name)
    return backbone


def load_backbone_weights(backbone: nn.Module, path, *, name: str) -> None:
    """Load a state dict file into ``backbone``; classifier keys in it are ignored."""
    from tlkit.weights import load_matching, read_state_dict

    state = read_state_dict(path)
    # A tlkit run's model.safetensors stores the backbone under "backbone.": accept that too.
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if hasattr(backbone, "load_timm_state_dict"):
        if all(k.startswith("model.") for k in state):  # TimmBackbone's own layout
            state = {k[len("model."):]: v for k, v in state.items()}
        backbone.load_timm_state_dict(state, source=str(path))
        return
    load_matching(backbone, state, what=f"backbone {name!r}", source=str(path))


def build_model(backbone: str = DEFAULT_BACKBONE, head: str = DEFAULT_HEAD, *, num_classes: int,
                image_size: int | None = None, pretrained: bool | None = None, weights=None,
                class_names=None, backbone_options: dict | None = None,
                head_options: dict | None = None) -> TlkitModel:
    """Build ``backbone`` + ``head`` for ``num_classes`` classes at ``image_size`` pixels.

    ``pretrained=None`` means pretrained weights where the backbone has them. ``weights`` is a state
    dict file in timm's layout for the backbone (it replaces ``pretrained``). ``image_size=None``
    takes the backbone's native input size. Raises TlkitError for unknown names, sizes the backbone
    cannot take, or weights that cannot be had.
    """
    if int(num_classes) < 1:
        raise TlkitError(f"num_classes must be at least 1, got {num_classes}")
    head_entry = get_registry("heads").get(head)  # fail on a bad head before building the backbone
    if pretrained is None:
        pretrained = weights is None and backbone_has_pretrained(backbone)
    net = build_backbone(backbone, pretrained=bool(pretrained) and weights is None, weights=weights,
                         **(backbone_options or {}))
    cfg = dict(getattr(net, "data_config", None) or {})
    size = int(image_size or cfg.get("input_size", (3, 224, 224))[-1])
    min_size = int(getattr(net, "min_input_size", 1))
    if size < min_size:
        raise TlkitError(f"backbone {backbone!r} needs images of at least {min_size} px, "
                         f"got --image-size {size}; use --image-size {min_size} or more")
    feature_size = probe_feature_size(net, size, backbone)
    try:
        head_module = head_entry.create(num_features=int(net.num_features), num_classes=int(num_classes),
                                        feature_size=feature_size, **(head_options or {}))
    except TypeError as exc:
        raise TlkitError(f"head {head!r} rejected its options {sorted(head_options or {})}: {exc}") from exc
    return TlkitModel(net, head_module, backbone_name=backbone, head_name=head_entry.name,
                      num_classes=num_classes, image_size=size,
                      mean=cfg.get("mean", IMAGENET_MEAN), std=cfg.get("std", IMAGENET_STD),
                      feature_size=feature_size, class_names=class_names,
                      backbone_options=backbone_options, head_options=head_options)


def probe_feature_size(backbone: nn.Module, image_size: int, name: str) -> tuple[int, int]:
    """Run one blank image through ``backbone`` to learn its feature-map size (h, w)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError as exc:
        if "channels" in str(exc):
            raise TlkitError(f"backbone {name!r} does not take 3-channel input ({str(exc).splitlines()[0]}); "
                             f"tlkit feeds RGB images, so build it with 3 input channels") from exc
        raise TlkitError(f"backbone {name!r} cannot take {image_size} px images ({str(exc).splitlines()[0]}); "
                         f"use a larger --image-size") from exc
    finally:
        backbone.train(was_training)
    if out.ndim != 4 or out.shape[1] != backbone.num_features:
        raise TlkitError(f"backbone {name!r} returned shape {tuple(out.shape)}; a backbone must return "
                         f"(B, num_features={backbone.num_features}, h, w)")
    if out.shape[-1] < 1 or out.shape[-2] < 1:
        raise TlkitError(f"backbone {name!r} leaves no feature map at {image_size} px; use a larger --image-size")
    return int(out.shape[-2]), int(out.shape[-1])
