"""The ``filterbank_responses`` interpreter: each filter of the bank drawn above its response map."""

from __future__ import annotations

import math

import torch

from tlkit_filterbank.bank import FilterBank


def find_filterbank(model: torch.nn.Module, layer: str | None = None) -> FilterBank:
    """The ``FilterBank`` named ``layer`` in ``model``, or the first one in ``model.modules()``."""
    if layer is not None:
        modules = dict(model.named_modules())
        if not isinstance(modules.get(layer), FilterBank):
            banks = [name for name, m in modules.items() if isinstance(m, FilterBank)]
            raise ValueError(f"layer {layer!r} is not a filter bank of this model; "
                             f"filter banks: {', '.join(banks) or '(none)'}; omit --layer to use the first")
        return modules[layer]
    for module in model.modules():
        if isinstance(module, FilterBank):
            return module
    raise ValueError("filterbank_responses needs a model whose backbone is 'filterbank'; train one "
                     "with `tlkit fit --backbone filterbank`, or choose another interpreter")


def explain(model, image, *, target=None, layer=None, columns: int = 8):
    """Run the model's filter bank on ``image`` and draw every kernel above its response.

    ``model``: a module containing a ``FilterBank`` (``layer`` picks one by name); ``image``: the
    normalised float tensor ``(1, 3, H, W)``; ``target``: a class index, ``None`` for the predicted
    class (the responses do not depend on it; it is recorded in the explanation).

    Returns ``tlkit.interpret.Explanation(method="filterbank_responses", arrays=..., figure=...,
    target=..., label=...)`` with ``arrays["kernels"]`` ``(n_filters, k, k)``,
    ``arrays["responses"]`` ``(n_filters, h, w)`` (what the head sees; with ``colour=True`` the
    mean over the three colours), both in the order of ``FilterBank.filter_names``.
    """
    import numpy as np
    from matplotlib.figure import Figure
    from tlkit.interpret import Explanation  # imported here: only a running tlkit needs it

    bank = find_filterbank(model, layer)
    image = image.to(bank.filters.device, torch.float32)
    with torch.no_grad():
        if target is None:
            target = int(model(image).argmax(dim=1)[0])
        maps = bank(image)[0]
        if bank.colour:
            maps = maps.view(3, -1, *maps.shape[-2:]).mean(dim=0)
    kernels, responses = bank.filters[:, 0].cpu().numpy(), maps.cpu().numpy()
    names = bank.filter_names

    # A kernel row above a response row, wrapped after `columns` filters so big banks stay legible.
    cols = min(columns, len(names))
    blocks = math.ceil(len(names) / cols)
    figure = Figure(figsize=(1.6 * cols, 3.3 * blocks), layout="constrained")
    axes = figure.subplots(2 * blocks, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, name in enumerate(names):
        block, col = divmod(i, cols)
        limit = float(np.abs(kernels[i]).max()) or 1.0
        top, bottom = axes[2 * block, col], axes[2 * block + 1, col]
        top.imshow(kernels[i], cmap="RdBu_r", vmin=-limit, vmax=limit)  # white = 0, red > 0, blue < 0
        top.set_title(name, fontsize=7)
        bottom.imshow(responses[i], cmap="magma")
    class_names = getattr(model, "class_names", None)
    label = class_names[target] if class_names and 0 <= target < len(class_names) else None
    figure.suptitle(f"filter bank responses (class {label if label is not None else target})")
    return Explanation(method="filterbank_responses",
                       arrays={"kernels": kernels, "responses": responses},
                       figure=figure, target=target, label=label)
