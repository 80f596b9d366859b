"""The ``feature_maps`` interpreter: what each channel of one layer sees in the image (forward hooks).

As in the lecture: a forward hook on the layer records its output while the image runs through the
model; each channel is drawn as a small picture with its own colour scale, the input image first.
"""

from tlkit import hookimpl


def feature_maps(*, max_channels: int = 64, cmap: str = "viridis", columns: int | None = None):
    """Every channel's activation map of one layer (default: the first conv layer).

    Options: ``max_channels`` (grid cap, lowest channel indices first; default 64), ``cmap``,
    ``columns``. The interpreter returns ``arrays = {"activations": (C, h, w)}`` with all C channels.
    """
    max_channels = int(max_channels)
    if max_channels < 1:
        raise ValueError(f"max_channels must be at least 1, got {max_channels}")

    def interpret(model, image, *, target=None, layer=None):
        import torch

        from tlkit.errors import TlkitError
        from tlkit.figures import grid_shape, image_grid, new_figure
        from tlkit.interpret import (Explanation, FeatureRecorder, display_image, prepared,
                                     resolve_layer, target_info)

        name, module = resolve_layer(model, layer)
        with prepared(model), torch.no_grad():
            with FeatureRecorder([(name, module)], stop=True) as recorder:
                output = recorder.run(model, image)[name]
            index, label, probability = target_info(model, image, target)
        if output.ndim != 4:
            raise TlkitError(f"layer {name!r} outputs shape {tuple(output.shape)}; feature maps need a "
                             f"(1, C, h, w) output: choose a conv layer or a block of the backbone")
        activations = output[0].float().cpu().numpy()
        channels = activations.shape[0]
        shown = min(channels, max_channels)

        tiles = [display_image(model, image)] + [activations[c] for c in range(shown)]
        titles = ["input"] + [f"{c}" for c in range(shown)]
        rows, cols = grid_shape(len(tiles), columns)
        figure = new_figure(1.15 * cols, 1.15 * rows + 0.5)
        axes = image_grid(figure, tiles, titles, columns=cols, cmap=cmap, normalise_each=True)
        axes.flat[0].set_title("input", fontsize=7, pad=2, fontweight="bold")
        cap = f", first {shown} shown" if shown < channels else ""
        kind = "prediction" if target is None else "target"
        figure.suptitle(f"feature maps of {name} ({channels} channels{cap}, "
                        f"{activations.shape[1]}x{activations.shape[2]})\n"
                        f"{kind} {label!r} (p={probability:.2f})", fontsize=9)
        figure.tight_layout(rect=(0, 0, 1, 0.94), pad=0.3, h_pad=0.2, w_pad=0.2)
        return Explanation(
            method="feature_maps", arrays={"activations": activations}, figure=figure,
            target=index, label=label,
            info={"probability": probability, "layer": name, "target_kind": kind,
                  "note": f"{channels} channels" + (f" ({shown} shown)" if shown < channels else "")},
        )

    return interpret


@hookimpl
def register_interpreters(register):
    register("feature_maps", feature_maps, aliases=("activations",),
             description="Activation map of every channel of one layer, via forward hooks")
