"""Receptive fields of convolution and pooling layers, found by tracing one forward pass.

For each layer the receptive field is how many input pixels one output unit sees (``size``) and how
many input pixels apart two neighbouring output units are (``jump``):

    size_out = size_in + (kernel - 1) * dilation * jump_in
    jump_out = jump_in * stride

Tensors are followed from layer to layer with forward hooks. Where a network combines tensors
outside modules (a residual ``+``, an Inception ``cat``) the trace continues from the largest field
seen so far, which is the field of the combined tensor along its deepest path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

POOLS = (nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class Field:
    """Receptive field size and jump (stride in input pixels), per axis (height, width)."""

    size: tuple[int, int]
    jump: tuple[int, int]
    is_global: bool = False

    def label(self) -> str:
        if self.is_global:
            return "global"
        size = str(self.size[0]) if self.size[0] == self.size[1] else f"{self.size[0]}x{self.size[1]}"
        jump = str(self.jump[0]) if self.jump[0] == self.jump[1] else f"{self.jump[0]}x{self.jump[1]}"
        return f"{size} / {jump}"


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _grow(field: Field, module: nn.Module) -> Field:
    kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    size = tuple(field.size[a] + (kernel[a] - 1) * dilation[a] * field.jump[a] for a in range(2))
    jump = tuple(field.jump[a] * stride[a] for a in range(2))
    return Field(size, jump)


def receptive_fields(model: nn.Module, image_size: int) -> dict[str, Field]:
    """Map each conv/pool layer name (as in ``named_modules``) to its receptive field at ``image_size``."""
    names = {module: name for name, module in model.named_modules()}
    fields: dict[int, Field] = {}
    alive: list[torch.Tensor] = []  # keep traced tensors alive so their ids stay unique
    largest = [Field((1, 1), (1, 1))]
    result: dict[str, Field] = {}

    def hook(module, inputs, output):
        known = [fields[id(t)] for t in inputs if isinstance(t, torch.Tensor) and id(t) in fields]
        field = max(known, key=lambda f: f.size) if known else largest[0]
        if isinstance(module, (nn.Conv2d, *POOLS)):
            field = _grow(field, module)
            result[names[module]] = field
        elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            result[names[module]] = Field(field.size, field.jump, is_global=True)
        if isinstance(output, torch.Tensor):
            fields[id(output)] = field
            alive.append(output)
        if field.size > largest[0].size:
            largest[0] = field

    leaves = [m for m in model.modules() if not any(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    image = torch.zeros(1, 3, image_size, image_size)
    fields[id(image)] = largest[0]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return result
