"""Building blocks for backbone plugins: a timm model exposed as an unpooled feature extractor."""

from __future__ import annotations

from torch import nn

from tlkit.weights import load_matching, require_timm_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TimmBackbone(nn.Module):
    """A timm model without its classifier; ``forward`` returns ``forward_features`` (B, C, h, w).

    Args:
        model_name: timm architecture name, e.g. ``"resnet50"``.
        pretrained: load timm's default pretrained weights (from the Hugging Face cache or hub);
            raises WeightsUnavailableError within seconds when they cannot be had.
        name: the tlkit backbone name, for messages.
        min_input_size: smallest image side the architecture accepts.
        mean, std: override the normalisation of timm's pretrained config.
        **options: passed to ``timm.create_model`` (e.g. ``drop_rate``).
    """

    def __init__(self, model_name: str, *, pretrained: bool = False, name: str | None = None,
                 min_input_size: int = 32, mean=None, std=None, **options):
        super().__init__()
        import timm

        self.name = name or model_name
        if pretrained:
            require_timm_weights(model_name, self.name)
        self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **options)
        # VGG's fc6/fc7 live in a conv "pre_logits" block used only by forward_head: drop its
        # ~120M parameters, since tlkit heads work on the unpooled feature map.
        if hasattr(self.model, "pre_logits") and sum(p.numel() for p in self.model.pre_logits.parameters()):
            self.model.pre_logits = nn.Identity()
        self.num_features = int(self.model.num_features)
        self.min_input_size = min_input_size
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        self.data_config = {
            "input_size": tuple(cfg.get("input_size", (3, 224, 224))),
            "mean": tuple(mean or cfg.get("mean", IMAGENET_MEAN)),
            "std": tuple(std or cfg.get("std", IMAGENET_STD)),
        }

    def forward(self, x):
        return self.model.forward_features(x)

    def load_timm_state_dict(self, state: dict, *, source: str = "state dict") -> None:
        """Load weights in timm's layout for this architecture; classifier keys are ignored."""
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        classifier = cfg.get("classifier") or "fc"
        classifiers = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
        load_matching(self.model, state, what=f"backbone {self.name!r}", source=source,
                      ignore_prefixes=tuple(f"{c}." for c in classifiers) + ("pre_logits.", "head."))
