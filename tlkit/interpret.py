"""Explaining a model's prediction: the one Python API shared by ``tlkit explain`` and the demo.

:func:`explain` prepares a model and an image, looks the method up in the ``interpreters`` registry
and returns an :class:`Explanation`: the raw arrays plus a rendered matplotlib figure. Interpreters
are plugins (see ``tlkit.hookspecs.register_interpreters``); the builtin ones live in
``tlkit_builtins.feature_maps``, ``tlkit_builtins.filters`` and ``tlkit_builtins.attributions`` and
use the helpers here: :func:`resolve_layer` for layer names, :class:`FeatureRecorder` for forward
hooks, :func:`prepared` for a model that is safe to differentiate and restored afterwards.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``), never pyplot, so
that several threads of the demo can draw at once.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import TlkitError

if TYPE_CHECKING:  # heavy imports stay lazy: `tlkit --help` must not import torch or matplotlib
    import matplotlib.figure
    import torch
    from PIL import Image
    from torch import nn

SAVE_DPI = 110


@dataclass
class Explanation:
    """What an interpreter found out about one image.

    ``method`` is the interpreter's name, ``arrays`` its raw results (documented by each interpreter,
    e.g. ``{"attribution": (H, W)}``), ``figure`` the picture of them, ``target``/``label`` the class
    explained (None where the method does not depend on a class) and ``info`` anything else worth a
    line: ``probability``, ``layer``, ``note``.
    """

    method: str
    arrays: dict[str, np.ndarray]
    figure: "matplotlib.figure.Figure"
    target: int | None = None
    label: str | None = None
    info: dict = field(default_factory=dict)

    def save(self, path) -> Path:
        """Write the figure to ``path`` (PNG, or any format matplotlib knows by the suffix)."""
        from tlkit.figures import save_figure

        return save_figure(self.figure, path, dpi=SAVE_DPI)

    def to_image(self) -> "Image.Image":
        """The figure as a PIL RGB image (what Gradio's image component takes)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from PIL import Image

        canvas = FigureCanvasAgg(self.figure)
        canvas.draw()
        return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())

    def summary(self) -> str:
        """One line: target and probability, layer, and the method's own note."""
        parts = []
        if self.label is not None:
            probability = self.info.get("probability")
            p = f" (p={probability:.2f})" if probability is not None else ""
            parts.append(f"{self.info.get('target_kind', 'target')} {self.label!r}{p}")
        if self.info.get("layer"):
            parts.append(f"layer {self.info['layer']}")
        if self.info.get("note"):
            parts.append(str(self.info["note"]))
        return ", ".join(parts) or self.method


# -- the API ----------------------------------------------------------------------------------------
def explain(model, image, method: str, *, target=None, layer: str | None = None,
            options: dict | None = None) -> Explanation:
    """Explain ``model``'s view of ``image`` with the registered interpreter ``method``.

    ``model`` is a :class:`~tlkit.models.TlkitModel`. ``image`` is a PIL image, a path, or a
    normalised tensor ``(1, 3, H, W)`` (PIL images and paths are resized to ``model.image_size`` and
    normalised with the model's mean/std). ``target`` is a class index, a class label, or None for
    the predicted class. ``layer`` is a module name (see :func:`resolve_layer`; None: the method's
    default). ``options`` go to the interpreter's factory. The model's training mode, its parameters'
    ``requires_grad`` and its activations' ``inplace`` flags are restored afterwards.
    Raises TlkitError for unknown methods, labels or layers, and for options the method rejects.
    """
    from tlkit.plugins import get_registry

    entry = get_registry("interpreters").get(method)
    options = dict(options or {})
    try:
        interpreter = entry.create(**options)
    except TypeError as exc:
        raise TlkitError(f"interpreter {entry.name!r} rejected its options {sorted(options)}: {exc}") from exc
    except ValueError as exc:
        raise TlkitError(f"interpreter {entry.name!r}: {exc}") from exc
    tensor = image_tensor(model, image)
    with prepared(model):
        index = resolve_target(model, target) if target is not None else None
        explanation = interpreter(model, tensor, target=index, layer=layer)
    if not isinstance(explanation, Explanation):
        raise TlkitError(f"interpreter {entry.name!r} from plugin {entry.plugin!r} returned "
                         f"{type(explanation).__name__}, not a tlkit.interpret.Explanation")
    return explanation


def explain_file(run_dir, image_path, *, method: str, target=None, layer: str | None = None,
                 options: dict | None = None) -> Explanation:
    """Load the trained model of ``run_dir`` and :func:`explain` the image file ``image_path``."""
    from tlkit.images import load_rgb
    from tlkit.plugins import get_registry
    from tlkit.runs import load_model

    get_registry("interpreters").get(method)  # a typo should not wait for the model to load
    image = load_rgb(image_path)  # ImageError is a TlkitError naming the file and the reason
    model = load_model(run_dir)
    return explain(model, image, method, target=target, layer=layer, options=options)


# -- images and targets -----------------------------------------------------------------------------
def image_tensor(model, image) -> "torch.Tensor":
    """A normalised ``(1, 3, H, W)`` float tensor from a PIL image, a path or a tensor."""
    import torch
    from PIL import Image

    if isinstance(image, (str, Path)):
        from tlkit.images import load_rgb

        image = load_rgb(image)
    if isinstance(image, Image.Image):
        from tlkit.transforms import eval_transform

        image = eval_transform(model.image_size, model.mean, model.std)(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if isinstance(image, torch.Tensor):
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise TlkitError(f"an image tensor must have shape (1, 3, H, W), got {tuple(image.shape)}")
        return image.detach().float().to(model_device(model))
    raise TlkitError(f"cannot explain a {type(image).__name__}; pass a PIL image, a path or a (1, 3, H, W) tensor")


def model_device(model) -> "torch.device":
    """Where the model's parameters live (CPU for a model without any)."""
    import torch

    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def resolve_target(model, target) -> int:
    """A class index from an index or a label of ``model.class_names``."""
    names = list(model.class_names)
    if isinstance(target, str):
        if target in names:
            return names.index(target)
        if target.strip().lstrip("-").isdigit():  # `--target 3` on a model whose labels are words
            target = int(target)
        else:
            close = difflib.get_close_matches(target, names, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TlkitError(f"unknown target label {target!r}.{hint} Valid labels: {', '.join(names)}")
    try:
        index = int(target)
    except (TypeError, ValueError):
        raise TlkitError(f"target must be a class index or label, got {target!r}") from None
    if not 0 <= index < len(names):
        raise TlkitError(f"target index {index} is out of range: the model has {len(names)} classes "
                         f"(0..{len(names) - 1}: {', '.join(names)})")
    return index


def predict(model, image: "torch.Tensor") -> np.ndarray:
    """Class probabilities ``(num_classes,)`` of one normalised image."""
    import torch

    with torch.no_grad():
        return torch.softmax(model(image).float(), dim=1)[0].cpu().numpy()


def target_info(model, image: "torch.Tensor", target: int | None) -> tuple[int, str, float]:
    """``(index, label, probability)`` of ``target``, or of the predicted class when it is None."""
    probs = predict(model, image)
    index = int(probs.argmax()) if target is None else resolve_target(model, target)
    return index, str(model.class_names[index]), float(probs[index])


def display_image(model, image: "torch.Tensor") -> np.ndarray:
    """Undo the normalisation of a ``(1, 3, H, W)`` tensor: an ``(H, W, 3)`` array in [0, 1] to draw."""
    mean = np.asarray(model.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(model.std, dtype=np.float32)[:, None, None]
    array = image.detach()[0].cpu().float().numpy() * std + mean
    return np.clip(array.transpose(1, 2, 0), 0.0, 1.0)


# -- layers ---------------------------------------------------------------------------------------
def conv_layers(model) -> list[tuple[str, "nn.Module"]]:
    """``(name, module)`` of every Conv2d of ``model`` in definition order."""
    from torch import nn

    return [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def last_conv_layer(model) -> tuple[str, "nn.Module"]:
    """The last Conv2d of ``model`` (raises TlkitError when there is none)."""
    layers = conv_layers(model)
    if not layers:
        raise TlkitError(f"{type(model).__name__} has no Conv2d layer; pass a layer name explicitly")
    return layers[-1]


def resolve_layer(model, name: str | None, *, kinds=None, default=None) -> tuple[str, "nn.Module"]:
    """The module called ``name`` in ``model.named_modules()``, as ``(name, module)``.

    ``kinds`` restricts the accepted module types (e.g. ``(nn.Conv2d,)``; the default, None, takes
    any module, such as ``backbone`` for the final feature map). A name relative to the backbone
    (``0`` for ``backbone.0``) is accepted too. ``name=None`` returns ``default`` (a name, or a
    callable ``model -> (name, module)``), else the first conv layer. A wrong name raises TlkitError
    listing the conv layers and the closest match.
    """
    from torch import nn

    if name is None or name == "":
        if default is None:
            layers = conv_layers(model)
            if not layers:
                raise TlkitError(f"{type(model).__name__} has no Conv2d layer; pass a layer name explicitly")
            return layers[0]
        if callable(default):
            return default(model)
        name = default
    modules = dict(model.named_modules())
    kinds = tuple(kinds) if kinds else (nn.Module,)
    for candidate in (name, f"backbone.{name}"):
        module = modules.get(candidate)
        if module is not None and isinstance(module, kinds):
            return candidate, module
    valid = [n for n, _ in conv_layers(model)]
    if kinds == (nn.Module,):
        pool = list(modules)
        also = " (any module name of model.named_modules() works too, e.g. 'backbone' for the final feature map)"
    else:
        pool = [n for n, m in modules.items() if isinstance(m, kinds)]
        valid = pool
        also = ""
    close = difflib.get_close_matches(str(name), pool, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    if name in modules:
        what = f"layer {name!r} is a {type(modules[name]).__name__}, not a {'/'.join(k.__name__ for k in kinds)}."
    else:
        what = f"unknown layer {name!r}."
    raise TlkitError(f"{what}{hint} Valid conv layers: {', '.join(valid) or '(none)'}{also}")


class StopForward(Exception):
    """Raised by a :class:`FeatureRecorder` hook to skip the rest of the network (``stop=True``)."""


class FeatureRecorder:
    """Record the outputs of named modules with forward hooks, for the duration of a ``with`` block.

    ``modules`` is a dict or a list of ``(name, module)``. Outputs land in ``recorder.outputs[name]``
    as clones (an in-place ReLU after a conv would otherwise change the recorded tensor afterwards,
    captum issue 156), detached unless ``detach=False`` (gradient ascent needs the graph). With
    ``stop=True`` the hook raises :class:`StopForward` once every module has been seen, so that
    ``recorder.run(model, x)`` does not compute layers nobody reads. Hooks are always removed on
    exit, also when the block raises.
    """

    def __init__(self, modules, *, detach: bool = True, stop: bool = False):
        self.modules = list(modules.items()) if isinstance(modules, dict) else list(modules)
        self.detach = detach
        self.stop = stop
        self.outputs: dict[str, Any] = {}
        self._handles = []

    def _hook(self, name):
        def hook(module, inputs, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            tensor = tensor.detach() if self.detach else tensor
            self.outputs[name] = tensor.clone()
            if self.stop and len(self.outputs) == len(self.modules):
                raise StopForward

        return hook

    def __enter__(self):
        try:
            for name, module in self.modules:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info):
        self.remove()
        return False

    def remove(self) -> None:
        """Remove every hook this recorder registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def run(self, model, images):
        """Run ``model`` on ``images`` and return the recorded outputs (stopping early with ``stop``)."""
        self.outputs.clear()
        try:
            model(images)
        except StopForward:
            pass
        missing = [name for name, _ in self.modules if name not in self.outputs]
        if missing:
            raise TlkitError(f"layer(s) {', '.join(missing)} took no part in the forward pass; "
                             f"choose a layer that does (e.g. a conv layer of the backbone)")
        return self.outputs


# -- preparing the model --------------------------------------------------------------------------
_locks: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _model_lock(model) -> threading.RLock:
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def prepared(model):
    """Eval mode, frozen parameters and no in-place activations, restored on exit.

    Gradients are wanted with respect to the input only, so parameters stop asking for them (less
    memory). In-place activations are switched off because they overwrite outputs that hooks and
    Captum's layer methods hold on to. One thread at a time per model: the demo serves several.
    """
    import torch

    with _model_lock(model):
        training = {module: module.training for module in model.modules()}
        grads = {param: param.requires_grad for param in model.parameters()}
        inplace = {module: module.inplace for module in model.modules()
                   if isinstance(getattr(module, "inplace", None), bool)}
        try:
            model.eval()
            for param in grads:
                param.requires_grad_(False)
            for module in inplace:
                module.inplace = False
            with torch.enable_grad():
                yield model
        finally:
            for module, mode in training.items():
                module.training = mode
            for param, flag in grads.items():
                param.requires_grad_(flag)
            for module, flag in inplace.items():
                module.inplace = flag
