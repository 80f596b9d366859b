"""The LightningModule that fine-tunes a :class:`~tlkit.models.TlkitModel`.

Freezing is decided from the epoch number alone (``tune`` and ``unfreeze_epoch``), never from state
that a callback builds up, so a run resumed from ``last.ckpt`` is frozen exactly as the original was
(the trap of Lightning issue 21901). A frozen backbone runs under ``torch.no_grad`` with its
BatchNorm layers in eval mode; in ``gradual`` mode its parameters keep ``requires_grad`` so that DDP
registers them from the start and all-reduces their gradients once they are unfrozen (the trap of
Lightning issue 20340); in ``head`` mode they are switched off for good.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pytorch_lightning as pl
from torchmetrics.classification import MulticlassAccuracy


class Classifier(pl.LightningModule):
    """Cross-entropy training of a backbone + head with AdamW and a cosine learning-rate schedule.

    Args:
        model: the network.
        tune: ``head`` (frozen backbone), ``full`` (train all) or ``gradual`` (head first, then all).
        lr: learning rate of the head; the backbone gets ``lr * backbone_lr_factor``.
        unfreeze_epoch: with ``gradual``, the first epoch in which the backbone trains.
        inputs: ``images``, or ``features`` when batches hold cached backbone features.
        channels_last: convert image batches to the channels_last memory format.
        compile: run the backbone and head through ``torch.compile``. The compiled callables are
            kept outside the module tree, so parameter names (checkpoints, best weights,
            ``model.safetensors``) stay those of the plain model.
    """

    def __init__(self, model, *, tune: str = "head", lr: float = 1e-3, backbone_lr_factor: float = 0.1,
                 weight_decay: float = 1e-4, epochs: int = 5, unfreeze_epoch: int | None = None,
                 inputs: str = "images", channels_last: bool = False, compile: bool = False):
        super().__init__()
        if tune not in {"head", "full", "gradual"}:
            raise ValueError(f"tune must be head, full or gradual, got {tune!r}")
        self.model = model
        self.tune = tune
        self.lr = float(lr)
        self.backbone_lr_factor = float(backbone_lr_factor)
        self.weight_decay = float(weight_decay)
        self.epochs = int(epochs)
        self.unfreeze_epoch = int(unfreeze_epoch if unfreeze_epoch is not None else max(1, epochs // 2))
        self.inputs = inputs
        self.channels_last = channels_last
        self._val_batches: list = []
        self._best_val_loss = float("inf")
        self.best_val_predictions = None
        # a plain dict is not registered as a submodule: no "_orig_mod." keys in any state dict
        self._compiled = ({"backbone": torch.compile(model.backbone), "head": torch.compile(model.head)}
                          if compile else None)
        num_classes = model.num_classes
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        if tune == "head":
            model.backbone.requires_grad_(False)

    # -- freezing --------------------------------------------------------------------------------
    def backbone_frozen(self, epoch: int | None = None) -> bool:
        """Whether the backbone is frozen in ``epoch`` (default: the current one)."""
        epoch = self.current_epoch if epoch is None else epoch
        return self.tune == "head" or (self.tune == "gradual" and epoch < self.unfreeze_epoch)

    def on_train_batch_start(self, batch, batch_idx):
        # Lightning switches the whole module to train mode after each validation; a frozen
        # backbone's BatchNorm must keep its running statistics.
        if self.inputs == "images" and self.backbone_frozen() and self.model.backbone.training:
            self.model.backbone.eval()

    # -- steps -----------------------------------------------------------------------------------
    def forward(self, x):
        backbone, head = ((self._compiled["backbone"], self._compiled["head"]) if self._compiled
                          else (self.model.backbone, self.model.head))
        if self.inputs == "features":
            return head(x.float())
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.training and self.backbone_frozen():
            with torch.no_grad():
                features = backbone(x)
            return head(features)
        return head(backbone(x))

    def _step(self, batch, metric, stage: str):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        predictions = logits.argmax(dim=1)
        metric(predictions, y)
        if stage == "val":
            self._val_batches.append((predictions.detach().cpu(), y.detach().cpu()))
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=y.shape[0], sync_dist=not on_step)
        self.log(f"{stage}_accuracy", metric, on_step=False, on_epoch=True, prog_bar=stage != "train",
                 batch_size=y.shape[0])
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_acc, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_acc, "val")

    # The validation predictions of the epoch with the lowest validation loss are kept (as
    # ``best_val_predictions = (epoch, predictions, labels)``), so that ``tlkit fit`` draws the
    # confusion matrix of the best model without running it over the validation images again.
    def on_validation_epoch_start(self):
        self._val_batches = []

    def on_validation_end(self):
        batches, self._val_batches = self._val_batches, []
        if self.trainer.sanity_checking or not batches:
            return
        loss = self.trainer.callback_metrics.get("val_loss")
        if loss is None or not float(loss) < self._best_val_loss:  # NaN never wins, as in BestWeights
            return
        self._best_val_loss = float(loss)
        self.best_val_predictions = (int(self.current_epoch), torch.cat([p for p, _ in batches]),
                                     torch.cat([y for _, y in batches]))

    def test_step(self, batch, batch_idx):
        self._step(batch, self.test_acc, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.softmax(self(x), dim=1)

    # -- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = [{"params": list(self.model.head.parameters()), "lr": self.lr, "name": "head"}]
        backbone_params = [p for p in self.model.backbone.parameters() if p.requires_grad]
        if self.tune != "head" and backbone_params:
            # In gradual mode the group exists from the start; its parameters get no gradient while
            # frozen, and AdamW leaves a parameter without gradient untouched (no decay either).
            groups.append({"params": backbone_params, "lr": self.lr * self.backbone_lr_factor,
                           "name": "backbone"})
        optimizer = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.epochs),
                                                               eta_min=self.lr * 0.01)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
