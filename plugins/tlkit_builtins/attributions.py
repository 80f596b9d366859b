"""Captum attributions: which pixels (or regions) of the image made the model choose a class.

- ``integrated_gradients``: gradients averaged along a straight path from a baseline (a black image)
  to the image, times the difference (Sundararajan et al. 2017). Signed: red for the class, blue
  against it.
- ``saliency``: the absolute input gradient, maximum over colour channels (Simonyan et al. 2014).
- ``occlusion``: how much the class score drops when a square patch is greyed out (Zeiler and Fergus
  2014). Signed.
- ``gradcam``: the layer's activations weighted by their average gradient, rectified and upsampled
  (Selvaraju et al. 2017); by default on the backbone's output, the last convolutional feature map.

Each returns ``arrays = {"attribution": (H, W) float32}`` at the input's resolution and draws it
over the image with a colour bar. Memory is bounded for large networks: integrated gradients runs
its path in batches of ``internal_batch_size`` images and occlusion evaluates
``perturbations_per_eval`` patches per forward pass.
"""

from tlkit import hookimpl


def integrated_gradients(*, n_steps: int = 32, internal_batch_size: int = 8, baseline: str = "black",
                         alpha: float = 0.85):
    """Integrated gradients from a ``black`` (or ``zeros``: the mean colour) baseline; ``n_steps``
    path points, ``internal_batch_size`` images per forward/backward pass."""
    n_steps, internal_batch_size = _positive(n_steps=n_steps, internal_batch_size=internal_batch_size)
    _choice("baseline", baseline, ("black", "zeros"))

    def compute(model, x, index, layer):
        from captum.attr import IntegratedGradients

        base = _black(model, x) if baseline == "black" else x.new_zeros(x.shape)
        attr = IntegratedGradients(model).attribute(x, baselines=base, target=index, n_steps=n_steps,
                                                    internal_batch_size=internal_batch_size)
        return attr[0].sum(dim=0), None

    return _interpreter("integrated_gradients", compute, signed=True, alpha=alpha,
                        note=f"{n_steps} steps from a {baseline} baseline")


def saliency(*, alpha: float = 0.85):
    """Absolute input gradient of the class score, maximum over colour channels."""

    def compute(model, x, index, layer):
        from captum.attr import Saliency

        attr = Saliency(model).attribute(x, target=index, abs=True)
        return attr[0].max(dim=0).values, None

    return _interpreter("saliency", compute, signed=False, alpha=alpha, note="|gradient|")


def occlusion(*, window: int | None = None, stride: int | None = None, perturbations_per_eval: int = 16,
              alpha: float = 0.7):
    """Score drop when a ``window``-px square (default 1/8 of the image side) is set to the mean
    colour, sliding by ``stride`` (default half the window); ``perturbations_per_eval`` per pass."""
    (perturbations_per_eval,) = _positive(perturbations_per_eval=perturbations_per_eval)
    if window is not None:
        _positive(window=window)
    if stride is not None:
        _positive(stride=stride)

    def compute(model, x, index, layer):
        from captum.attr import Occlusion

        side = min(x.shape[-2:])
        size = int(window or max(1, round(side / 8)))
        step = int(stride or max(1, size // 2))
        # Baseline 0 in normalised space is the data set's mean colour: "nothing to see here".
        attr = Occlusion(model).attribute(x, sliding_window_shapes=(3, size, size), strides=(3, step, step),
                                          baselines=0.0, target=index,
                                          perturbations_per_eval=perturbations_per_eval)
        return attr[0].mean(dim=0), f"{size} px window, stride {step}"

    return _interpreter("occlusion", compute, signed=True, alpha=alpha, note=None)


def gradcam(*, alpha: float = 0.5, interpolate_mode: str = "bilinear"):
    """Grad-CAM on ``layer`` (default ``backbone``: the last convolutional feature map), ReLU,
    upsampled to the image size."""
    _choice("interpolate_mode", interpolate_mode, ("bilinear", "nearest", "bicubic"))

    def compute(model, x, index, layer):
        from captum.attr import LayerAttribution, LayerGradCam

        from tlkit.interpret import resolve_layer

        name, module = resolve_layer(model, layer, default="backbone" if hasattr(model, "backbone") else None)
        cam = LayerGradCam(model, module).attribute(x, target=index, relu_attributions=True)
        if cam.ndim != 4:
            from tlkit.errors import TlkitError

            raise TlkitError(f"layer {name!r} gives Grad-CAM of shape {tuple(cam.shape)}; Grad-CAM needs "
                             f"a (B, C, h, w) feature map: choose a conv layer or 'backbone'")
        small = tuple(cam.shape[-2:])
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode=interpolate_mode)
        return cam[0, 0].clamp_min(0), {"layer": name, "note": f"{small[0]}x{small[1]} map upsampled"}

    # Grad-CAM is coarse and smooth: the classic look, a uniform wash of "jet", reads best.
    return _interpreter("gradcam", compute, signed=False, alpha=alpha, note=None, cmap="jet", fade=False,
                        takes_layer=True)


# -- shared machinery ---------------------------------------------------------------------------------
def _interpreter(method, compute, *, signed, alpha, note, cmap=None, fade=True, takes_layer=False):
    """Wrap ``compute(model, x, index, layer) -> (attribution (H, W), extra)`` into an interpreter."""

    def interpret(model, image, *, target=None, layer=None):
        from tlkit.figures import new_figure, overlay
        from tlkit.interpret import Explanation, display_image, predict, prepared, resolve_target

        if layer is not None and not takes_layer:
            from tlkit.errors import TlkitError

            raise TlkitError(f"{method} attributes to the input pixels and takes no layer; drop --layer "
                             f"(gradcam, feature_maps and filters take one)")
        with prepared(model):
            probs = predict(model, image)
            index = int(probs.argmax()) if target is None else resolve_target(model, target)
            x = image.detach().clone().requires_grad_(True)
            attribution, extra = compute(model, x, index, layer)
        attribution = attribution.detach().float().cpu().numpy()
        label, probability = str(model.class_names[index]), float(probs[index])
        info = {"probability": probability, "predicted": str(model.class_names[int(probs.argmax())])}
        if isinstance(extra, dict):
            info.update(extra)
        elif extra:
            info["note"] = extra
        if note and "note" not in info:
            info["note"] = note

        picture = display_image(model, image)
        figure = new_figure(7.4, 3.6)
        left, right = figure.subplots(1, 2)
        left.imshow(picture)
        left.set_axis_off()
        left.set_title("input", fontsize=9)
        overlay(figure, right, picture, attribution, signed=signed, alpha=alpha, cmap=cmap, label=method,
                fade=fade)
        where = f" on {info['layer']}" if info.get("layer") else ""
        right.set_title(f"{method}{where}", fontsize=9)
        figure.suptitle(f"{method}: target {label!r} (p={probability:.2f})"
                        + (f", predicted {info['predicted']!r}" if info["predicted"] != label else ""),
                        fontsize=10)
        figure.tight_layout(rect=(0, 0, 1, 0.93))
        return Explanation(method=method, arrays={"attribution": attribution}, figure=figure,
                           target=index, label=label, info=info)

    interpret.method = method
    return interpret


def _black(model, x):
    """A black image in the model's normalised space."""
    import torch

    mean = torch.tensor(model.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (torch.zeros_like(x) - mean) / std


def _positive(**values):
    out = []
    for name, value in values.items():
        value = int(value)
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
        out.append(value)
    return out


def _choice(name, value, valid):
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}, got {value!r}")


@hookimpl
def register_interpreters(register):
    register("integrated_gradients", integrated_gradients, aliases=("ig",),
             description="Integrated gradients (Captum): path-integrated input gradients, signed")
    register("saliency", saliency, aliases=("gradients",),
             description="Saliency (Captum): absolute input gradient of the class score")
    register("occlusion", occlusion,
             description="Occlusion (Captum): score drop when a sliding patch is greyed out, signed")
    register("gradcam", gradcam, aliases=("grad_cam",),
             description="Grad-CAM (Captum LayerGradCam) on the last conv feature map, upsampled")
