"""The ``filters`` interpreter: the input each filter of a layer responds to most (gradient ascent).

The lecture's recipe: start from a grey image with a little uniform noise (pixel values 150-180 of
255), let Adam (weight decay 1e-6) change the pixels so as to raise the mean activation of one
filter, read through a forward hook. Left alone, that ascent finds high-frequency noise the filter
happens to like; the regularisers below (each an option) steer it to patterns a person recognises:

- ``jitter``: roll the image by up to this many pixels each step, so a pattern must work at every
  offset (no pixel-exact noise);
- ``scale``: rescale by a random factor in ``1 +- scale`` each step, for the same reason across sizes;
- ``blur_every`` / ``blur_sigma``: blur the image every k steps, damping high frequencies;
- ``freq_penalty``: weight of a total-variation penalty (again against high frequencies);
- pixels are kept inside the valid 0..1 range after each step.

All filters of the grid are optimised together, one filter per batch element, and the forward pass
stops at the chosen layer, so the first layers cost almost nothing.
"""

from tlkit import hookimpl

# A conv layer is linear, so the raw mean of its output depends on the mean colour of the image
# only: an edge detector's mean stays near zero whatever the edges. The lecture's Keras layers include
# their ReLU; maximising the mean of a leaky-rectified output does the same while keeping a gradient
# for filters that start out negative everywhere.
RECTIFY_SLOPE = 0.1
# Larger images show more repeats of a deep filter's pattern but cost the square of the side on CPU.
DEFAULT_SIZE_CAP = 96


def filters(*, filters=None, steps: int = 40, lr: float = 0.08, size: int | None = None, jitter: int = 2,
            scale: float = 0.05, blur_every: int = 4, blur_sigma: float = 0.5, freq_penalty: float = 0.0,
            rectify: bool = True, seed: int = 0, progress=True, columns: int | None = None):
    """Gradient ascent in input space for a grid of filters of one layer (default: the first conv).

    Options: ``filters`` (channel indices, default the first 16), ``steps`` (default 40), ``lr``,
    ``size`` (image side, default the model's image size capped at 96), the regularisers ``jitter``,
    ``scale``, ``blur_every``, ``blur_sigma``, ``freq_penalty``, ``rectify`` (maximise the mean of the
    leaky-rectified activation, see RECTIFY_SLOPE; False: the raw mean), ``seed``, ``progress`` (True:
    a tqdm bar on an interactive stderr; False: none; a callable ``progress(step, total)``),
    ``columns``. The interpreter returns ``arrays = {"images": (F, S, S, 3) in [0, 1], "filters":
    (F,), "start_activation": (F,), "final_activation": (F,)}``, the activations being the objective
    (mean, rectified unless ``rectify=False``) on the start image and on the final one.
    """
    if filters is not None:
        if isinstance(filters, str):  # "--opt filters=3,7,9"
            filters = [part for part in filters.replace(" ", "").split(",") if part]
        elif isinstance(filters, int):
            filters = [filters]
        try:
            filters = [int(f) for f in filters]
        except (TypeError, ValueError):
            raise ValueError(f"filters must be channel indices such as [0, 3, 7], got {filters!r}") from None
        if not filters:
            raise ValueError("filters must name at least one channel index")
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if size is not None and int(size) < 8:
        raise ValueError(f"size must be at least 8 px, got {size}")
    settings = dict(steps=steps, lr=float(lr), size=None if size is None else int(size), jitter=int(jitter),
                    scale=float(scale), blur_every=int(blur_every), blur_sigma=float(blur_sigma),
                    freq_penalty=float(freq_penalty), rectify=bool(rectify), seed=int(seed), progress=progress)

    def interpret(model, image, *, target=None, layer=None):
        from tlkit.figures import grid_shape, image_grid, new_figure
        from tlkit.interpret import Explanation, prepared, resolve_layer

        name, module = resolve_layer(model, layer)
        with prepared(model):
            result = ascend(model, name, module, filters, **settings)
        images = result["images"]
        tiles = list(images)
        titles = [f"{c}: {a:.2g}->{b:.2g}" for c, a, b in
                  zip(result["filters"], result["start_activation"], result["final_activation"])]
        rows, cols = grid_shape(len(tiles), columns)
        figure = new_figure(1.5 * cols, 1.5 * rows + 0.5)
        image_grid(figure, [_stretch(t) for t in tiles], titles, columns=cols, fontsize=6.5)
        figure.suptitle(f"filters of {name}: inputs that maximise each filter's mean activation\n"
                        f"({settings['steps']} steps of gradient ascent at {images.shape[1]} px; "
                        f"title: filter: activation start->end)", fontsize=8.5)
        figure.tight_layout(rect=(0, 0, 1, 0.93), pad=0.3, h_pad=0.6, w_pad=0.2)
        gain = float((result["final_activation"] - result["start_activation"]).mean())
        return Explanation(
            method="filters", arrays=result, figure=figure, target=None, label=None,
            info={"layer": name, "note": f"{len(tiles)} filters, mean activation gain {gain:+.3g}"},
        )

    return interpret


def ascend(model, name, module, channels, *, steps, lr, size, jitter, scale, blur_every, blur_sigma,
           freq_penalty, rectify, seed, progress):
    """Run the ascent for ``channels`` of ``module`` (named ``name``); returns the arrays (numpy)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from tlkit.errors import TlkitError
    from tlkit.interpret import FeatureRecorder, model_device

    side = size or min(int(model.image_size), DEFAULT_SIZE_CAP)
    min_side = int(getattr(model.backbone, "min_input_size", 1))
    if side < min_side:
        raise TlkitError(f"filters: size {side} is too small for backbone {model.backbone_name!r}; "
                         f"use --opt size={min_side} or more")
    device = model_device(model)
    mean = torch.tensor(model.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same pictures on any device

    with FeatureRecorder([(name, module)], detach=False, stop=True) as recorder:
        def activations(x):
            out = recorder.run(model, x)[name]
            if out.ndim != 4:
                raise TlkitError(f"layer {name!r} outputs shape {tuple(out.shape)}; filters need a "
                                 f"(B, C, h, w) output: choose a conv layer or a block of the backbone")
            return out

        with torch.no_grad():
            available = activations(torch.zeros(1, 3, side, side, device=device)).shape[1]
        chosen = list(range(min(16, available))) if channels is None else list(channels)
        bad = [c for c in chosen if not 0 <= c < available]
        if bad:
            raise TlkitError(f"filters {bad} do not exist: layer {name!r} has {available} filters "
                             f"(0..{available - 1})")
        index = torch.tensor(chosen, device=device)
        rows = torch.arange(len(chosen), device=device)

        def filter_means(x):
            chosen_maps = activations(x)[rows, index].float()
            if rectify:
                chosen_maps = F.leaky_relu(chosen_maps, RECTIFY_SLOPE)
            return chosen_maps.mean(dim=(1, 2))

        start = (torch.rand(len(chosen), 3, side, side, generator=generator) * (30 / 255) + 150 / 255).to(device)
        pixels = ((start - mean) / std).requires_grad_(True)
        low, high = (0 - mean) / std, (1 - mean) / std
        with torch.no_grad():
            start_activation = filter_means(pixels).cpu().numpy()
        optimizer = torch.optim.Adam([pixels], lr=lr, weight_decay=1e-6)
        report = _progress(progress, steps, f"filters of {name}")
        try:
            for step in range(steps):
                x = pixels
                if jitter:
                    dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
                    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
                if scale:
                    factor = 1 + (float(torch.rand((), generator=generator)) * 2 - 1) * scale
                    new_side = max(min_side, int(round(side * factor)))
                    if new_side != side:
                        x = F.interpolate(x, size=(new_side, new_side), mode="bilinear", align_corners=False)
                loss = -filter_means(x).sum()
                if freq_penalty:
                    loss = loss + freq_penalty * len(chosen) * _total_variation(pixels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    if blur_every and (step + 1) % blur_every == 0 and step + 1 < steps:
                        pixels.copy_(_blur(pixels, blur_sigma))
                    pixels.copy_(torch.maximum(torch.minimum(pixels, high), low))
                report(step + 1)
        finally:
            report(None)
        with torch.no_grad():
            final_activation = filter_means(pixels).cpu().numpy()
    images = (pixels.detach() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return {"images": images.astype(np.float32), "filters": np.asarray(chosen),
            "start_activation": start_activation.astype(np.float32),
            "final_activation": final_activation.astype(np.float32)}


def _total_variation(x):
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def _blur(x, sigma):
    from torchvision.transforms.functional import gaussian_blur

    radius = max(1, int(round(2 * sigma)))
    return gaussian_blur(x, kernel_size=2 * radius + 1, sigma=sigma)


def _stretch(image, min_range=0.25):
    """Spread an image's 1st..99th percentile over 0..1, so that faint patterns are visible.

    A range narrower than ``min_range`` is widened around its middle: the nearly flat image of a
    filter that never woke up must stay flat, not become amplified noise.
    """
    import numpy as np

    lo, hi = (float(v) for v in np.percentile(image, [1, 99]))
    if hi - lo < min_range:  # a window of min_range inside 0..1: solid black stays black
        lo = min(max((hi + lo - min_range) / 2, 0.0), 1.0 - min_range)
        hi = lo + min_range
    return np.clip((image - lo) / (hi - lo), 0, 1)


def _progress(progress, total, description):
    """A ``report(step)`` function: calls ``progress(step, total)``, drives tqdm, or does nothing.

    ``report(None)`` closes the bar.
    """
    if callable(progress):
        def report(step):
            if step is not None:
                progress(step, total)

        return report
    if not progress:
        return lambda step: None
    from tqdm.auto import tqdm

    # disable=None: a bar on an interactive stderr only, not in logs
    bar = tqdm(total=total, desc=description, leave=False, disable=None)

    def report(step):
        if step is None:
            bar.close()
        else:
            bar.update(1)

    return report


@hookimpl
def register_interpreters(register):
    register("filters", filters, aliases=("gradient_ascent", "filter_patterns"),
             description="Inputs that maximise each filter of a layer, by gradient ascent (lecture recipe)")
