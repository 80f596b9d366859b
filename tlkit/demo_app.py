"""The Gradio app behind ``tlkit demo``: one trained run, seen from every side.

Tabs: Predict, Explain, Feature maps, Filters, Augmentations, Model (summary with receptive fields,
metrics, learning curves, confusion matrix) and Train (fine-tune a new model in the browser; when it
finishes, every tab switches to it).

The app talks to tlkit only through its public API and its registries: the menus of backbones, heads,
augmentation policies and interpreters are read from the registries when the app is built, so a
freshly installed plugin shows up without a change here, and every interpreter gets its own named API
endpoint ``explain_<name>`` next to ``predict`` (see demo/README.md for a ``gradio_client`` example).

Serving choices, and why:

- Uploads are read with :func:`tlkit.images.load_rgb`, so a corrupt, truncated or non-image file, or
  a decompression bomb, becomes a one-line message in the page instead of a traceback.
- Predictions and explanations use two separate copies of the model: interpreters put forward hooks
  on their model, which must never fire inside a concurrent prediction.
- Pictures from the run directory are handed to Gradio as images, and examples are copied into a
  temporary folder, so the server needs no ``allowed_paths`` at all: nothing of the run directory,
  the data or the rest of the disk is served, only what Gradio itself cached.
- ``--share`` checks within seconds whether a share link can be made; if not, it prints one line
  saying why and keeps serving locally.
"""

from __future__ import annotations

import atexit
import functools
import html
import itertools
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import traceback
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from tlkit.errors import TlkitError

#: Largest upload the server accepts (an image, or a zip of an image folder for the Train tab).
MAX_FILE_SIZE = "100mb"
#: Requests waiting in the queue before new ones are turned away.
QUEUE_SIZE = 64
#: Requests of one kind that run at once (predictions; augmentation previews).
CONCURRENCY = 2
#: Example images shown on the Predict tab.
EXAMPLES_PER_CLASS = 2
MAX_EXAMPLES = 12
EXAMPLE_SIDE = 256
#: Zip uploads: limits on what is unpacked (a zip bomb must not fill the disk).
ZIP_MAX_MEMBERS = 50_000
ZIP_MAX_MEMBER_BYTES = 64 * 2**20
ZIP_MAX_TOTAL_BYTES = 2 * 2**30
#: Seconds each share-link check may take before it counts as failed.
SHARE_CHECK_TIMEOUT = float(os.environ.get("TLKIT_SHARE_TIMEOUT", "5"))
MAX_FILTERS = 64

PREDICTED = "predicted"
DEFAULT_LAYER = "default"
SAMPLE = "sample"
ZIP = "zip"

CSS = """
.tlkit-mono textarea, .tlkit-mono pre {font-family: ui-monospace, SFMono-Regular, Menlo, monospace !important;}
#tlkit-header p {margin: 0.1em 0;}
"""


# -- the current run --------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    """One run directory, loaded: what every tab works on."""

    run_dir: Path
    predictor: object  # tlkit.predict.Predictor
    model: object  # a second copy of the model, for the interpreters (they put hooks on it)
    config: dict
    metrics: dict | None
    conv_layers: list[str]
    summary_rows: list[list]
    summary_totals: str
    examples: list[tuple[str, str]] = field(default_factory=list)  # (image path, true class)

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.class_names)

    @property
    def image_size(self) -> int:
        return int(self.config.get("image_size") or self.model.image_size)


class ModelHolder:
    """The run every tab works on, replaced as a whole when training finishes (thread-safe).

    Requests in flight keep the :class:`LoadedRun` they started with; new requests see the new one.
    """

    def __init__(self, examples_root: Path):
        self._lock = threading.Lock()
        self._run: LoadedRun | None = None
        self._examples_root = Path(examples_root)
        self._loads = 0
        self.training = threading.Lock()  # one training run at a time

    @property
    def current(self) -> LoadedRun | None:
        with self._lock:
            return self._run

    def require(self) -> LoadedRun:
        run = self.current
        if run is None:
            raise TlkitError("no model is loaded yet: train one on the Train tab, or start "
                             "'tlkit demo RUN_DIR' with a run directory")
        return run

    def load(self, run_dir) -> LoadedRun:
        """Load ``run_dir`` (outside the lock: it takes a while) and make it the current run."""
        with self._lock:
            self._loads += 1
            number = self._loads
        run = load_run(run_dir, self._examples_root / f"run{number}")
        with self._lock:
            self._run = run
        return run


def load_run(run_dir, examples_dir: Path) -> LoadedRun:
    """Everything the tabs show about ``run_dir``; raises TlkitError when it is not a finished run."""
    from tlkit.interpret import conv_layers
    from tlkit.predict import Predictor
    from tlkit.runs import load_model, read_config, read_metrics

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    predictor = Predictor.from_run(run_dir)
    model = load_model(run_dir)
    rows, totals = _summary(model, int(config.get("image_size") or model.image_size))
    return LoadedRun(run_dir=run_dir, predictor=predictor, model=model, config=config,
                     metrics=read_metrics(run_dir), conv_layers=[name for name, _ in conv_layers(model)],
                     summary_rows=rows, summary_totals=totals,
                     examples=collect_examples(config, examples_dir))


def _summary(model, image_size: int) -> tuple[list[list], str]:
    """Rows for the Model tab's table. Runs before the model is shared: torchinfo hooks every layer."""
    from tlkit.summary import summarize

    try:
        summary = summarize(model, image_size)
    except Exception as exc:  # noqa: BLE001 - a summary must not stop the demo from serving
        return [], f"no summary: {type(exc).__name__}: {exc}"
    rows = []
    for row in summary.rows:
        indent = "\u2003" * max(0, row.depth - 1) + ("\u2514 " if row.depth else "")
        rows.append([indent + row.label, row.name or "(model)", " x ".join(map(str, row.output_shape)),
                     "--" if row.params is None else f"{row.params:,}",
                     f"{row.mult_adds:,}" if row.mult_adds else "--", row.receptive_field or ""])
    totals = (f"**{summary.total_params:,}** parameters ({summary.trainable_params:,} trainable), "
              f"{summary.total_mult_adds / 1e6:,.2f} M mult-adds for one "
              f"{' x '.join(map(str, summary.input_size[1:]))} image. "
              f"RF: receptive field of one output unit in input pixels / distance between units.")
    return rows, totals


# -- examples ---------------------------------------------------------------------------------------
def collect_examples(config: dict | None, out_dir: Path) -> list[tuple[str, str]]:
    """A few images per class, copied (as small PNGs) into ``out_dir``: ``[(path, class), ...]``.

    They come from the run's validation folder (``val/<class>``, else ``test/`` or the class folders
    of the data it was trained on), or from the built-in sample data when the run was trained on it or
    there is no run. The copies are what the page shows, so the data folder itself is never served.
    """
    from tlkit.sample_data import SAMPLE_CLASSES, sample_data_dir

    classes = list((config or {}).get("class_names") or [])
    data_dir = ((config or {}).get("tlkit_fit") or {}).get("data_dir")
    if data_dir and Path(data_dir).is_dir():
        picked = _pick_examples(Path(data_dir), classes)
        if picked:
            return _copy_examples(picked, out_dir)
    if not config or sorted(classes) == sorted(SAMPLE_CLASSES):
        try:
            return _copy_examples(_pick_examples(sample_data_dir(), classes), out_dir)
        except (TlkitError, OSError):
            return []
    return []


def _pick_examples(root: Path, classes: list[str]) -> list[tuple[Path, str]]:
    """The last few image files of each class under ``root/val`` (or ``test/``, or ``root`` itself)."""
    from tlkit.images import is_image_file

    for part in ("val", "validation", "test", ""):
        base = root / part if part else root
        if not base.is_dir():
            continue
        names = classes or sorted(p.name for p in base.iterdir()
                                  if p.is_dir() and p.name not in {"train", "val", "validation", "test"})
        per_class = []
        for name in names:
            folder = base / name
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    files = sorted(e.name for e in entries if e.is_file() and is_image_file(e.name))
                # twice as many as needed: unreadable ones are dropped when copying
                per_class.append([(folder / f, name) for f in files[-2 * EXAMPLES_PER_CLASS:]])
        if any(per_class):
            # round robin over the classes, so that a short list still shows every class
            return [item for group in itertools.zip_longest(*per_class) for item in group if item]
    return []


def _copy_examples(picked, out_dir: Path) -> list[tuple[str, str]]:
    from tlkit.images import load_rgb

    out_dir.mkdir(parents=True, exist_ok=True)
    examples, per_class = [], {}
    for path, name in picked:
        if len(examples) >= MAX_EXAMPLES or per_class.get(name, 0) >= EXAMPLES_PER_CLASS:
            continue
        try:
            image = load_rgb(path)
        except (TlkitError, OSError):
            continue
        image.thumbnail((EXAMPLE_SIDE, EXAMPLE_SIDE))
        target = out_dir / f"{len(examples):02d}_{_safe_name(name)}.png"
        image.save(target)
        examples.append((str(target), name))
        per_class[name] = per_class.get(name, 0) + 1
    return examples


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "x"


# -- reading user input -----------------------------------------------------------------------------
def load_upload(path) -> "object":
    """The uploaded image as PIL RGB, or a TlkitError naming the file and what is wrong with it."""
    from tlkit.images import ImageError, load_rgb

    if not path:
        raise TlkitError("no image: upload one (or click an example on the Predict tab)")
    try:
        return load_rgb(path)
    except ImageError as exc:
        raise TlkitError(f"cannot read the uploaded file {Path(str(path)).name!r}: {exc.reason}") from None


def guard_image_input(component: gr.Image) -> gr.Image:
    """Make Gradio's own decoding of an upload fail with tlkit's one-line reason.

    ``gr.Image`` opens every upload with Pillow before our function runs; a text file named ``.png``
    or a decompression bomb would fail there with Pillow's message (and the server's temp path).
    """
    original = component.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001 - any decoding failure is the upload's fault
            from tlkit.images import check_image

            path = getattr(payload, "path", None)
            name = getattr(payload, "orig_name", None) or (Path(path).name if path else "upload")
            reason = (check_image(path) if path else None) or "not an image"
            raise gr.Error(f"cannot read the uploaded file {name!r}: {reason}", print_exception=False) from None

    component.preprocess = preprocess
    return component


def parse_filters(text) -> list[int] | None:
    """Filter indices from ``"0-15"``, ``"0,3,7"`` or ``"0-3, 8"``; empty: None (the interpreter's default)."""
    text = str(text or "").strip()
    if not text:
        return None
    chosen = []
    for part in re.split(r"[,\s]+", text):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise TlkitError(f"filter indices look like '0-15' or '0,3,7', got {text!r}")
        start, stop = int(match.group(1)), int(match.group(2) or match.group(1))
        if stop < start:
            raise TlkitError(f"the range {part!r} runs backwards; write it as {stop}-{start}")
        if stop - start + 1 + len(chosen) > MAX_FILTERS:
            raise TlkitError(f"at most {MAX_FILTERS} filters at a time (one grid), got more in {text!r}")
        chosen += [i for i in range(start, stop + 1) if i not in chosen]
    return chosen


def parse_options(text) -> dict:
    """Interpreter options from ``"key=value; key=value"`` (values read as YAML) or a YAML/JSON mapping."""
    import yaml

    text = str(text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            options = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TlkitError(f"options {text!r} are not a valid mapping: {str(exc).splitlines()[0]}") from None
        if not isinstance(options, dict):
            raise TlkitError(f"options must be a mapping like {{steps: 20}}, got {text!r}")
        return {str(k): v for k, v in options.items()}
    options = {}
    for item in re.split(r"[;\n]+", text):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TlkitError(f"options look like 'key=value; key=value', got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(value.strip()) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value.strip()
    return options


def parse_auth(auth):
    """``"USER:PASS"`` -> ``(user, password)``; tuples, lists and callables pass through."""
    if auth is None or callable(auth) or isinstance(auth, (tuple, list)):
        return auth
    user, sep, password = str(auth).partition(":")
    if not sep or not user or not password:
        raise TlkitError("--auth must be USER:PASS with a non-empty user name and password "
                         "(e.g. --auth admin:s3cret)")
    return (user, password)


# -- zip uploads ------------------------------------------------------------------------------------
def extract_zip(archive_path, dest) -> tuple[Path, int, int]:
    """Unpack the image files of a zip archive into ``dest``, safely; ``(data folder, images, skipped)``.

    Only files with an image extension are written. Entries with absolute paths, ``..`` parts,
    drive letters, symbolic links, hidden or ``__MACOSX`` parts are skipped, as are entries that are
    too large, encrypted or damaged; the whole archive is refused when it holds too many entries or
    unpacks to more than :data:`ZIP_MAX_TOTAL_BYTES`. Bad images inside are left to the data scan,
    which skips and counts them. The data folder is ``dest`` or, for an archive of one top folder,
    that folder.
    """
    from tlkit.images import IMAGE_EXTENSIONS, is_image_file

    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise TlkitError(f"the upload is not a readable zip archive ({exc}); zip a folder that holds "
                         f"one subfolder of images per class") from None
    written = images = skipped = 0
    with archive:
        members = archive.infolist()
        if len(members) > ZIP_MAX_MEMBERS:
            raise TlkitError(f"the zip holds {len(members):,} entries, more than the demo unpacks "
                             f"({ZIP_MAX_MEMBERS:,}); train on it with 'tlkit fit' instead")
        for info in members:
            if info.is_dir():
                continue
            name = info.filename.replace("\\", "/")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            mode = info.external_attr >> 16
            if (not parts or name.startswith("/") or ".." in parts or ":" in name
                    or stat.S_ISLNK(mode) or any(p.startswith(".") or p == "__MACOSX" for p in parts)
                    or not is_image_file(parts[-1]) or info.file_size > ZIP_MAX_MEMBER_BYTES):
                skipped += 1
                continue
            target = dest.joinpath(*parts)
            if not target.resolve().is_relative_to(dest):
                skipped += 1
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                out = open(target, "xb")  # noqa: SIM115 - "x": a duplicate entry never overwrites
            except OSError:  # a duplicate, or a file where a folder should be
                skipped += 1
                continue
            try:
                with out, archive.open(info) as source:
                    size = 0
                    while chunk := source.read(1 << 16):
                        size += len(chunk)
                        written += len(chunk)
                        if written > ZIP_MAX_TOTAL_BYTES:
                            raise TlkitError(f"the zip unpacks to more than {ZIP_MAX_TOTAL_BYTES // 2**20} MB; "
                                             f"train on it with 'tlkit fit' instead")
                        if size > ZIP_MAX_MEMBER_BYTES:  # the header lied about the size
                            raise ValueError("entry too large")
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError, EOFError,
                    zlib.error, TlkitError) as exc:
                target.unlink(missing_ok=True)
                if isinstance(exc, TlkitError):
                    raise
                skipped += 1  # damaged, encrypted or oversized entry: leave it out
                continue
            images += 1
    if not images:
        raise TlkitError(f"the zip holds no image files (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                         f"zip a folder with one subfolder of images per class")
    root = dest
    while True:
        entries = list(root.iterdir())
        folders = [p for p in entries if p.is_dir()]
        if (len(folders) == 1 and len(entries) == 1 and folders[0].name.lower() not in {"train", "val", "test"}
                and any(p.is_dir() for p in folders[0].iterdir())):
            root = folders[0]  # the archive of one top folder: its class folders are inside
        else:
            return root, images, skipped


# -- the pictures and tables of a run ---------------------------------------------------------------
def _run_image(run: LoadedRun, name: str):
    from tlkit.images import load_rgb

    path = run.run_dir / name
    if not path.is_file():
        return None
    try:
        return load_rgb(path)
    except TlkitError:
        return None


def header_markdown(run: LoadedRun | None) -> str:
    if run is None:
        return ("## tlkit demo\nNo model is loaded yet: train one on the **Train** tab "
                "(or start `tlkit demo RUN_DIR`).")
    names = run.class_names
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    cfg = run.config
    return (f"## tlkit demo\n**{cfg.get('backbone')}** + **{cfg.get('head')}** at {run.image_size} px, "
            f"{len(names)} classes: {html.escape(shown)} &nbsp;&middot;&nbsp; run `{run.run_dir}`")


def train_markdown(run: LoadedRun | None, runs_root) -> str:
    return (("**No model yet.** " if run is None else "")
            + f"Fine-tune a model here; when training finishes every tab switches to it. The run is "
              f"written under `{runs_root}/`. Backbones without pretrained weights train best with "
              f"fine-tuning 'full'.")


def model_markdown(run: LoadedRun | None) -> str:
    if run is None:
        return "No model loaded."
    cfg = run.config
    fit = cfg.get("tlkit_fit") or {}
    lines = [f"**Run directory**: `{run.run_dir}`",
             f"**Backbone**: `{cfg.get('backbone')}` {cfg.get('backbone_options') or ''} &nbsp; "
             f"**Head**: `{cfg.get('head')}` {cfg.get('head_options') or ''}",
             f"**Input**: {run.image_size} x {run.image_size} px, mean {tuple(cfg.get('mean', ()))}, "
             f"std {tuple(cfg.get('std', ()))}",
             f"**Classes** ({len(run.class_names)}): {html.escape(', '.join(run.class_names))}"]
    if fit:
        lines.append(f"**Training**: tune `{fit.get('tune')}`, augmentation `{fit.get('augment')}`, "
                     f"{fit.get('epochs')} epoch{'' if fit.get('epochs') == 1 else 's'}, lr {fit.get('lr')}, "
                     f"batch {fit.get('batch_size')}, "
                     f"pretrained {fit.get('pretrained')}")
    return "  \n".join(lines)


def metrics_markdown(run: LoadedRun | None) -> str:
    metrics = run.metrics if run else None
    if not metrics:
        return "No metrics.json in this run." if run else ""
    epochs = metrics.get("epochs") or []
    best = metrics.get("best") or {}
    lines = []
    if best:
        lines.append(f"**Best epoch: {best.get('epoch')}** (of {len(epochs)}, counted from 0): validation accuracy "
                     f"**{_pct(best.get('val_accuracy'))}**, validation loss {_num(best.get('val_loss'))}"
                     f" (weights of this epoch are in model.safetensors)")
    if metrics.get("test_accuracy") is not None:
        lines.append(f"Test accuracy: **{_pct(metrics['test_accuracy'])}**")
    if epochs:
        lines += ["", "| epoch | train loss | train acc. | val loss | val acc. |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {e.get('epoch')} | {_num(e.get('train_loss'))} | {_pct(e.get('train_accuracy'))} | "
                  f"{_num(e.get('val_loss'))} | {_pct(e.get('val_accuracy'))} |" for e in epochs]
    return "\n".join(lines)


def _pct(value) -> str:
    return "--" if value is None else f"{100 * float(value):.1f} %"


def _num(value) -> str:
    return "--" if value is None else f"{float(value):.4f}"


SUMMARY_HEADERS = ["Layer (type: depth-idx)", "Module", "Output shape", "Parameters", "Mult-adds", "RF size / jump"]


def summary_frame(run: LoadedRun | None):
    import pandas as pd

    return pd.DataFrame(run.summary_rows if run else [], columns=SUMMARY_HEADERS)


def layer_choices(run: LoadedRun | None) -> list[str]:
    return [DEFAULT_LAYER, *(run.conv_layers if run else [])]


# -- the app ----------------------------------------------------------------------------------------
def user_errors(fn):
    """Show TlkitError (and any other failure) as a message in the page; the server keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except TlkitError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not take the page down
            traceback.print_exc()
            raise gr.Error(f"{type(exc).__name__}: {exc}", title="Internal error", print_exception=False) from None

    return wrapper


def registry_names(kind: str) -> list[str]:
    """Usable names of a registry (a name two plugins claim is left out until one is uninstalled)."""
    from tlkit.plugins import get_registry

    registry = get_registry(kind)
    return [name for name in registry.names() if name not in registry.clashes]


def endpoint_name(method: str) -> str:
    return "explain_" + re.sub(r"\W+", "_", method).strip("_").lower()


def build_app(run_dir=None, runs_root="runs") -> gr.Blocks:
    """Build the demo for ``run_dir`` (default: the latest finished run under ``runs_root``).

    Without any run the app opens on the Train tab. Raises TlkitError when ``run_dir`` is given but is
    not a finished run. The returned Blocks has its queue configured; launch it with :func:`launch`
    (or ``demo.launch()`` yourself; it needs no ``allowed_paths``).
    """
    from tlkit.plugins import get_registry
    from tlkit.runs import latest_run

    if run_dir is None:
        run_dir = latest_run(runs_root)
    scratch = Path(tempfile.mkdtemp(prefix="tlkit-demo-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    holder = ModelHolder(scratch / "examples")
    run = holder.load(run_dir) if run_dir is not None else None
    sample_examples = [] if run else collect_examples(None, scratch / "examples" / "sample")

    interpreters = registry_names("interpreters")
    interpreter_entries = {name: get_registry("interpreters").get(name) for name in interpreters}
    backbones, heads, policies = (registry_names(k) for k in ("backbones", "heads", "augmentations"))

    def prefer(names, *wanted):
        return next((w for w in wanted if w in names), names[0] if names else None)

    with gr.Blocks(title="tlkit demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        demo.tlkit_holder = holder  # for tests and embedding
        demo.tlkit_scratch = scratch
        header = gr.Markdown(header_markdown(run), elem_id="tlkit-header")
        with gr.Tabs(selected="predict" if run else "train"):
            # -- Predict --------------------------------------------------------------------------
            with gr.Tab("Predict", id="predict"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        image = guard_image_input(gr.Image(type="filepath", image_mode=None, label="Image",
                                                           sources=["upload", "clipboard"], height=300,
                                                           elem_id="predict-image"))
                        with gr.Row():
                            top_k = gr.Slider(1, 10, value=3, step=1, label="Top k", scale=2)
                            predict_button = gr.Button("Predict", variant="primary", scale=1,
                                                       elem_id="predict-button")
                    with gr.Column(scale=1):
                        label = gr.Label(label="Prediction", elem_id="predict-label")
                shown_examples = run.examples if run else sample_examples
                with gr.Column(visible=bool(shown_examples)) as examples_box:
                    gr.Markdown("**Examples**: click one to predict it (captions: the true class)")
                    examples = gr.Gallery(value=shown_examples or None, label="Examples", show_label=False,
                                          columns=8, height=200, allow_preview=False, object_fit="contain",
                                          interactive=False, elem_id="examples")

            # -- Explain --------------------------------------------------------------------------
            with gr.Tab("Explain", id="explain"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        ex_image = guard_image_input(gr.Image(type="filepath", image_mode=None, label="Image",
                                                              sources=["upload", "clipboard"], height=240))
                        first = prefer(interpreters, "gradcam", "integrated_gradients", "saliency")
                        method = gr.Dropdown(interpreters, value=first, label="Method",
                                             info=interpreter_entries[first].description if first else None)
                        target = gr.Dropdown([PREDICTED, *(run.class_names if run else [])], value=PREDICTED,
                                             allow_custom_value=True, label="Target class",
                                             info="the class to explain; 'predicted' explains the model's answer")
                        layer = gr.Dropdown(layer_choices(run), value=DEFAULT_LAYER, allow_custom_value=True,
                                            label="Layer", info="for gradcam, feature_maps and filters; "
                                                                "'default' lets the method choose")
                        with gr.Accordion("Method options", open=False):
                            options = gr.Textbox("", label="Options", placeholder="n_steps=16; alpha=0.5",
                                                 info="key=value pairs separated by ';' (values read as YAML)")
                        explain_button = gr.Button("Explain", variant="primary")
                    with gr.Column(scale=2):
                        ex_output = gr.Image(label="Explanation", type="pil", format="png", interactive=False,
                                             height=520, buttons=["download", "fullscreen"])
                        ex_summary = gr.Textbox(label="Summary", lines=2, interactive=False, elem_id="explain-summary")

            # -- Feature maps ---------------------------------------------------------------------
            with gr.Tab("Feature maps", id="feature_maps"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        fm_image = guard_image_input(gr.Image(type="filepath", image_mode=None, label="Image",
                                                              sources=["upload", "clipboard"], height=240))
                        fm_layer = gr.Dropdown(run.conv_layers if run else [],
                                               value=(run.conv_layers[0] if run and run.conv_layers else None),
                                               allow_custom_value=True, label="Layer",
                                               info="a conv layer of the model (hooked on its forward pass)")
                        fm_channels = gr.Slider(1, 256, value=64, step=1, label="Channels shown (at most)")
                        fm_button = gr.Button("Show feature maps", variant="primary")
                    with gr.Column(scale=2):
                        fm_output = gr.Image(label="Feature maps", type="pil", format="png", interactive=False,
                                             height=560, buttons=["download", "fullscreen"])
                        fm_summary = gr.Textbox(label="Summary", lines=1, interactive=False)

            # -- Filters --------------------------------------------------------------------------
            with gr.Tab("Filters", id="filters"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        gr.Markdown("The input each filter responds to most, found by gradient ascent in "
                                    "input space (the lecture's recipe, with jitter and blur).")
                        fl_layer = gr.Dropdown(run.conv_layers if run else [],
                                               value=(run.conv_layers[0] if run and run.conv_layers else None),
                                               allow_custom_value=True, label="Layer")
                        fl_filters = gr.Textbox(value="0-15", label="Filters",
                                                info=f"indices like 0-15 or 0,3,7 (at most {MAX_FILTERS})")
                        fl_steps = gr.Slider(1, 300, value=40, step=1, label="Gradient ascent steps")
                        fl_button = gr.Button("Visualise filters", variant="primary")
                    with gr.Column(scale=2):
                        fl_output = gr.Image(label="Filter patterns", type="pil", format="png", interactive=False,
                                             height=560, buttons=["download", "fullscreen"])
                        fl_summary = gr.Textbox(label="Summary", lines=1, interactive=False)

            # -- Augmentations --------------------------------------------------------------------
            with gr.Tab("Augmentations", id="augmentations"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        aug_image = guard_image_input(gr.Image(type="filepath", image_mode=None, label="Image",
                                                               sources=["upload", "clipboard"], height=240))
                        policy = gr.Dropdown(policies, value=prefer(policies, "lecture"), label="Policy")
                        aug_n = gr.Slider(1, 64, value=16, step=1, label="Samples")
                        aug_size = gr.Slider(16, 512, value=run.image_size if run else 224, step=8,
                                             label="Image size (px)")
                        aug_seed = gr.Number(value=0, precision=0, label="Seed")
                        aug_button = gr.Button("Show samples", variant="primary")
                    with gr.Column(scale=2):
                        aug_gallery = gr.Gallery(label="Augmented samples (what the model trains on)",
                                                 columns=6, height="auto", object_fit="contain", interactive=False)

            # -- Model ----------------------------------------------------------------------------
            with gr.Tab("Model", id="model"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        model_info = gr.Markdown(model_markdown(run))
                    with gr.Column(scale=2):
                        metrics_info = gr.Markdown(metrics_markdown(run))
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        gr.Markdown("**Learning curves**")
                        curves = gr.Image(_run_image(run, "curves.png") if run else None, label="Learning curves",
                                          show_label=False, type="pil", format="png", interactive=False,
                                          height=360, buttons=["download", "fullscreen"])
                    with gr.Column(scale=1):
                        gr.Markdown("**Confusion matrix** (validation images, best epoch)")
                        confusion = gr.Image(_run_image(run, "confusion_matrix.png") if run else None,
                                             label="Confusion matrix", show_label=False, type="pil", format="png",
                                             interactive=False, height=360, buttons=["download", "fullscreen"])
                summary_table = gr.Dataframe(summary_frame(run), label="Layers (receptive field: size / jump "
                                             "in input pixels)", interactive=False, wrap=False,
                                             max_height=520, elem_classes=["tlkit-mono"])
                summary_totals = gr.Markdown(run.summary_totals if run else "")

            # -- Train ----------------------------------------------------------------------------
            with gr.Tab("Train", id="train"):
                train_intro = gr.Markdown(train_markdown(run, runs_root))
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        source = gr.Radio([("built-in sample data (coloured shapes, 4 classes)", SAMPLE),
                                           ("a zip of my image folder", ZIP)], value=SAMPLE, label="Data")
                        upload = gr.File(label="Zip of an image folder: <class>/* or train/<class>/* + "
                                               "val/<class>/*", file_types=[".zip"], type="filepath", height=150)
                    with gr.Column(scale=1):
                        with gr.Row():
                            backbone = gr.Dropdown(backbones, value=prefer(backbones, "efficientnet_lite0"),
                                                   label="Backbone")
                            head = gr.Dropdown(heads, value=prefer(heads, "gap"), label="Head")
                            augment = gr.Dropdown(policies, value=prefer(policies, "none"), label="Augmentation")
                        tune = gr.Radio([("head only (frozen backbone)", "head"), ("full", "full"),
                                         ("gradual", "gradual")], value="head", label="Fine-tuning")
                        with gr.Row():
                            epochs = gr.Slider(1, 50, value=5, step=1, label="Epochs")
                            image_size = gr.Number(value=0, precision=0, minimum=0, label="Image size (px)",
                                                   info="0: the backbone's own")
                            lr = gr.Number(value=1e-3, label="Learning rate")
                        pretrained = gr.Checkbox(value=True, label="Start from pretrained weights where the "
                                                                   "backbone has them")
                train_button = gr.Button("Train", variant="primary", elem_id="train-button")
                train_status = gr.Textbox(label="Progress", lines=10, max_lines=20, interactive=False,
                                          autoscroll=True, elem_classes=["tlkit-mono"])

        # one button per interpreter, hidden: their events are the API endpoints explain_<name>
        with gr.Row(visible=False):
            api_buttons = {name: gr.Button(name) for name in interpreters}

        # -- wiring ---------------------------------------------------------------------------------
        view_outputs = [header, train_intro, examples_box, examples, target, layer, fm_layer, fl_layer, aug_size,
                        model_info, metrics_info, curves, confusion, summary_table, summary_totals]

        def view_updates(run: LoadedRun | None) -> list:
            conv = run.conv_layers if run else []
            shown = run.examples if run else sample_examples
            return [header_markdown(run), train_markdown(run, runs_root), gr.Column(visible=bool(shown)),
                    gr.Gallery(value=shown or None),
                    gr.Dropdown(choices=[PREDICTED, *(run.class_names if run else [])], value=PREDICTED),
                    gr.Dropdown(choices=layer_choices(run), value=DEFAULT_LAYER),
                    gr.Dropdown(choices=conv, value=conv[0] if conv else None),
                    gr.Dropdown(choices=conv, value=conv[0] if conv else None),
                    gr.Slider(value=run.image_size if run else 224),
                    model_markdown(run), metrics_markdown(run),
                    _run_image(run, "curves.png") if run else None,
                    _run_image(run, "confusion_matrix.png") if run else None,
                    summary_frame(run), run.summary_totals if run else ""]

        def refresh():
            return view_updates(holder.current)

        demo.load(refresh, outputs=view_outputs, api_visibility="private", queue=False)

        @user_errors
        def predict(image, top_k=3):
            """Top-k labels of an image: {label: probability}."""
            run = holder.require()
            picture = load_upload(image)
            k = max(1, min(int(top_k or 3), len(run.class_names)))
            return {p["label"]: p["probability"] for p in run.predictor.top_k(picture, k)}

        predict_event = dict(fn=predict, inputs=[image, top_k], outputs=label, concurrency_id="predict",
                             concurrency_limit=CONCURRENCY)
        predict_button.click(**predict_event, api_name="predict",
                             api_description="Top-k labels of an image: {label, confidences}")

        def pick_example(evt: gr.SelectData):
            value = evt.value or {}
            path = (value.get("image") or {}).get("path") if isinstance(value, dict) else None
            if path is None:
                current = holder.current
                items = current.examples if current else sample_examples
                path = items[evt.index][0] if 0 <= evt.index < len(items) else None
            return path

        examples.select(pick_example, outputs=image, api_visibility="private", queue=False).then(
            **predict_event, api_visibility="private")
        # the picture chosen on the Predict tab is the one the other tabs start from
        image.change(lambda path: (path, path, path), inputs=image, outputs=[ex_image, fm_image, aug_image],
                     api_visibility="private", queue=False, show_progress="hidden")

        def explain_with(method_name, image_path, target_label, layer_name, option_text, progress):
            from tlkit.interpret import explain

            run = holder.require()
            entry = get_registry("interpreters").get(method_name)
            opts = parse_options(option_text)
            if entry.name == "filters":
                if isinstance(opts.get("filters"), str):  # "filters=0-15" as on the Filters tab
                    opts["filters"] = parse_filters(opts["filters"])
                opts.setdefault("progress", lambda step, total: progress(
                    step / total, desc=f"gradient ascent, step {step} of {total}"))
            if image_path:
                picture = load_upload(image_path)
            elif entry.name == "filters":  # starts from grey noise: the image is not used
                from PIL import Image

                picture = Image.new("RGB", (run.image_size, run.image_size), (128, 128, 128))
            else:
                raise TlkitError(f"{entry.name} explains an image: upload one first")
            target_value = None if target_label in (None, "", PREDICTED) else target_label
            layer_value = None if layer_name in (None, "", DEFAULT_LAYER) else layer_name
            explanation = explain(run.model, picture, entry.name, target=target_value, layer=layer_value,
                                  options=opts)
            return explanation.to_image(), f"{entry.name}: {explanation.summary()}"

        @user_errors
        def explain_selected(method_name, image_path, target_label, layer_name, option_text,
                             progress=gr.Progress()):
            return explain_with(method_name, image_path, target_label, layer_name, option_text, progress)

        heavy = dict(concurrency_id="explain", concurrency_limit=1)  # one model copy: one at a time
        explain_button.click(explain_selected, inputs=[method, ex_image, target, layer, options],
                             outputs=[ex_output, ex_summary], api_visibility="private", **heavy)
        method.change(lambda name: gr.Dropdown(info=interpreter_entries[name].description
                                               if name in interpreter_entries else None),
                      inputs=method, outputs=method, api_visibility="private", queue=False,
                      show_progress="hidden")

        def endpoint(method_name):
            @user_errors
            def explain_endpoint(image, target=PREDICTED, layer=DEFAULT_LAYER, options="", progress=gr.Progress()):
                return explain_with(method_name, image, target, layer, options, progress)

            return explain_endpoint

        for name, button in api_buttons.items():
            description = interpreter_entries[name].description
            button.click(endpoint(name), inputs=[ex_image, target, layer, options], outputs=[ex_output, ex_summary],
                         api_name=endpoint_name(name), api_description=f"{name}: {description} "
                         f"-> (picture, one-line summary)", **heavy)

        @user_errors
        def feature_maps(image_path, layer_name, channels, progress=gr.Progress()):
            return explain_with("feature_maps", image_path, PREDICTED, layer_name,
                                f"max_channels={int(channels)}", progress)

        fm_button.click(feature_maps, inputs=[fm_image, fm_layer, fm_channels], outputs=[fm_output, fm_summary],
                        api_visibility="private", **heavy)

        @user_errors
        def filters(layer_name, filter_text, steps, progress=gr.Progress()):
            chosen = parse_filters(filter_text)
            text = f"steps={int(steps)}" + (f"; filters={chosen}" if chosen is not None else "")
            return explain_with("filters", None, PREDICTED, layer_name, text, progress)

        fl_button.click(filters, inputs=[fl_layer, fl_filters, fl_steps], outputs=[fl_output, fl_summary],
                        api_visibility="private", **heavy)

        @user_errors
        def augmentations(image_path, policy_name, n, size, seed):
            from tlkit.augment import augmentation_samples

            picture = load_upload(image_path)
            samples = augmentation_samples(picture, policy_name, n=int(n), image_size=int(size),
                                           seed=int(seed or 0))
            return [(sample, f"#{i + 1}") for i, sample in enumerate(samples)]

        aug_button.click(augmentations, inputs=[aug_image, policy, aug_n, aug_size, aug_seed], outputs=aug_gallery,
                         api_visibility="private", concurrency_id="augment", concurrency_limit=CONCURRENCY)

        def train(source, zip_file, backbone, head, augment, tune, epochs, image_size, lr, pretrained):
            """Fine-tune on the sample data or an uploaded zip, streaming status text; then every tab and
            endpoint uses the new model."""
            try:
                job = TrainingJob.start(holder, runs_root=runs_root, source=source, zip_path=zip_file,
                                        backbone=backbone, head=head, augment=augment, tune=tune, epochs=epochs,
                                        image_size=image_size, lr=lr, pretrained=pretrained)
            except (TlkitError, OSError) as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            shown = None
            while not job.wait(0.5):
                text = job.status()
                if text != shown:
                    shown = text
                    yield text
            text = job.status()
            yield text
            if job.error:
                raise gr.Error(job.error, print_exception=False)

        def suggest_tuning(name):
            from tlkit.models import backbone_has_pretrained

            try:
                return gr.skip() if backbone_has_pretrained(name) else "full"
            except TlkitError:
                return gr.skip()

        backbone.change(suggest_tuning, inputs=backbone, outputs=tune, api_visibility="private", queue=False,
                        show_progress="hidden")
        upload.upload(lambda: ZIP, outputs=source, api_visibility="private", queue=False, show_progress="hidden")
        train_button.click(train, inputs=[source, upload, backbone, head, augment, tune, epochs, image_size, lr,
                                          pretrained],
                           outputs=train_status, api_name="train",
                           api_description="Fine-tune a model (sample data or a zip of an image folder), "
                                           "streaming status text; the new model then serves every endpoint",
                           concurrency_id="train", concurrency_limit=1, show_progress="minimal").success(
            refresh, outputs=view_outputs, api_visibility="private", queue=False)

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


# -- training in a worker thread --------------------------------------------------------------------
class TrainingJob:
    """One ``tlkit.train.fit`` in a worker thread, with status lines for the page.

    Progress is read from the run directory, which ``fit`` rewrites after every epoch (metrics.json):
    the page needs nothing from fit's internals. When fit succeeds the worker loads the new run into
    the holder itself, so the model switches even if the page that started it was closed.
    """

    def __init__(self, holder: ModelHolder, options, describe: str, cleanup: Path | None):
        self.holder = holder
        self.options = options
        self.cleanup = cleanup
        self.started = time.time()
        self.lines = [describe]
        self.error: str | None = None
        self.result = None
        self._seen_epochs = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._work, name="tlkit-demo-train", daemon=True)

    @classmethod
    def start(cls, holder: ModelHolder, *, runs_root, source, zip_path, backbone, head, augment, tune, epochs,
              image_size, lr, pretrained) -> "TrainingJob":
        from tlkit.train import FitOptions

        if not holder.training.acquire(blocking=False):
            raise TlkitError("a training run is already in progress; wait for it to finish")
        cleanup = None
        try:
            if source == ZIP:
                if not zip_path:
                    raise TlkitError("choose a zip file of your image folder first (or pick the sample data)")
                cleanup = Path(tempfile.mkdtemp(prefix="tlkit-demo-data-"))
                data_dir, count, skipped = extract_zip(zip_path, cleanup / "data")
                what = f"{Path(str(zip_path)).name}: {count} image files unpacked" + (
                    f", {skipped} other entries left out" if skipped else "")
            else:
                from tlkit.sample_data import sample_data_dir

                data_dir = sample_data_dir()
                what = "the built-in sample data"
            try:
                epochs, size, lr = int(epochs), int(image_size or 0), float(lr)
            except (TypeError, ValueError):
                raise TlkitError("epochs, image size and learning rate must be numbers") from None
            out = _new_run_dir(Path(runs_root))
            options = FitOptions(data_dir=str(data_dir), out=str(out), backbone=backbone, head=head,
                                 augment=augment, tune=tune, epochs=epochs, image_size=size or None, lr=lr,
                                 pretrained=None if pretrained else False, quiet=True,
                                 # worker processes would fork a server full of threads; one device, no DDP
                                 num_workers=0, devices=1)
            options.validate()
            describe = (f"training {backbone} + {head} (tune {tune}, augmentation {augment}) for {epochs} "
                        f"epoch{'s' if epochs != 1 else ''}{f' at {size} px' if size else ''} on {what}\n"
                        f"run directory: {out}")
            job = cls(holder, options, describe, cleanup)
        except BaseException:
            holder.training.release()
            if cleanup:
                shutil.rmtree(cleanup, ignore_errors=True)
            raise
        job._thread.start()
        return job

    def _work(self):
        from tlkit.train import fit

        try:
            result = fit(self.options)
            self.lines.append("loading the new model ...")
            self.holder.load(result.run_dir)  # examples are copied now, while the data still exists
            self.result = result
        except TlkitError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown in the page; the server keeps serving
            traceback.print_exc()
            self.error = f"training failed: {type(exc).__name__}: {exc}"
        finally:
            if self.cleanup:
                shutil.rmtree(self.cleanup, ignore_errors=True)
            self.holder.training.release()
            self._done.set()

    def wait(self, seconds: float) -> bool:
        return self._done.wait(seconds)

    def status(self) -> str:
        from tlkit.runs import read_metrics

        epochs = (read_metrics(self.options.out) or {}).get("epochs") or []
        for record in epochs[self._seen_epochs:]:
            number = int(record.get("epoch", 0))
            self.lines.append(f"epoch {number} ({number + 1}/{self.options.epochs}): train loss "
                              f"{_num(record.get('train_loss'))}, val loss {_num(record.get('val_loss'))}, "
                              f"val accuracy {_pct(record.get('val_accuracy'))}")
        self._seen_epochs = max(self._seen_epochs, len(epochs))
        elapsed = time.time() - self.started
        if self._done.is_set():
            if self.error:
                tail = f"failed after {elapsed:.0f} s: {self.error}"
            else:
                report = [line for line in self.result.report().splitlines() if not line.startswith("next:")]
                tail = "\n".join([*report, f"done in {elapsed:.1f} s: every tab now uses this model"])
        else:
            done = self._seen_epochs
            bar = "#" * done + "." * (self.options.epochs - done)
            phase = (f"{done}/{self.options.epochs} epochs done" if done < self.options.epochs
                     else "final evaluation")
            tail = f"[{bar}] {phase} ... {elapsed:.0f} s"
        return "\n".join([*self.lines, tail])


def _new_run_dir(root: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (f"demo-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise TlkitError(f"cannot create a run directory under {str(root)!r}: {exc.strerror or exc}; "
                             f"start the demo with a writable --runs-root") from None
    raise TlkitError(f"cannot find a free run directory name under {str(root)!r}")


# -- launching --------------------------------------------------------------------------------------
def share_problem(share_server_address: str | None = None, timeout: float = SHARE_CHECK_TIMEOUT) -> str | None:
    """Why Gradio cannot make a share link right now (found out within seconds), or None.

    Gradio itself would wait up to 30 s per step and then print several lines; this checks the same
    things first: the share server (Gradio's, or ``share_server_address`` HOST:PORT) can be reached,
    and the frpc tunnel binary is there or can be downloaded. Each check may take ``timeout``
    seconds, all of them (name lookups included) at most three times that.
    Raises TlkitError for an address that is not HOST:PORT.
    """
    address = share_server_address or os.environ.get("GRADIO_SHARE_SERVER_ADDRESS")
    if address:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise TlkitError(f"--share-server-address must be HOST:PORT (e.g. share.example.org:7000), "
                             f"got {address!r}")
    found: list = []

    def check():
        try:
            found.append(_share_checks(address, timeout))
        except Exception as exc:  # noqa: BLE001 - whatever it is, it means no share link
            found.append(f"{type(exc).__name__}: {exc}")

    # a daemon thread: a name lookup that hangs must not keep the demo (or its exit) waiting
    checker = threading.Thread(target=check, name="tlkit-share-check", daemon=True)
    checker.start()
    checker.join(3 * timeout)
    if not found:
        return f"no answer from the share service within {3 * timeout:.0f} s"
    return found[0]


def _share_checks(address: str | None, timeout: float) -> str | None:
    import httpx

    if address:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError as exc:
            return f"cannot reach the share server {address}: {_reason(exc)}"
    else:
        from gradio import networking

        url = getattr(networking, "GRADIO_API_SERVER", "https://api.gradio.app/v3/tunnel-request")
        try:
            response = httpx.get(url, timeout=timeout)
            if response.status_code >= 400:
                return f"the share service {httpx.URL(url).host} answered HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            return f"cannot reach the share service {httpx.URL(url).host}: {_reason(exc)}"
    try:
        from gradio import tunneling

        binary, binary_url = Path(tunneling.BINARY_PATH), tunneling.BINARY_URL
    except (ImportError, AttributeError):
        return None
    if not binary.exists():
        try:
            response = httpx.head(binary_url, timeout=timeout, follow_redirects=True)
            if response.status_code >= 400:
                return (f"the frpc tunnel binary is missing ({binary}) and its download answered "
                        f"HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            return f"the frpc tunnel binary is missing ({binary}) and cannot be downloaded: {_reason(exc)}"
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return getattr(exc, "strerror", None) or text.splitlines()[0]


def check_bind(server_name: str, port) -> None:
    """Fail early, in words, when ``server_name:port`` cannot be served (Gradio says "no empty port")."""
    import errno

    try:
        port = int(port)
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1..65535")
        infos = socket.getaddrinfo(server_name, port, type=socket.SOCK_STREAM)
    except (ValueError, OverflowError, socket.gaierror) as exc:
        raise TlkitError(f"cannot serve on {server_name}:{port}: {_reason(exc)}; check --server-name and "
                         f"--port") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = f"port {port} is already in use; choose another --port (or stop what uses it)"
            elif exc.errno == errno.EADDRNOTAVAIL:
                why = f"{server_name} is not an address of this machine; use 127.0.0.1 or 0.0.0.0"
            elif exc.errno == errno.EACCES:
                why = f"port {port} needs special rights; choose a port above 1023"
            else:
                why = _reason(exc)
            raise TlkitError(f"cannot serve on {server_name}:{port}: {why}") from None


def launch(run_dir=None, *, port: int = 7860, server_name: str = "127.0.0.1", share: bool = False, auth=None,
           share_server_address: str | None = None, runs_root="runs", prevent_thread_lock: bool = False,
           max_file_size=MAX_FILE_SIZE, quiet: bool = False) -> gr.Blocks:
    """Build the demo and serve it at ``http://SERVER_NAME:PORT`` (blocks until Ctrl+C).

    ``auth`` is ``"USER:PASS"`` (or what Gradio accepts). With ``share=True`` a public link is made
    if possible; if not, one line on stderr says why and the app keeps serving locally.
    ``prevent_thread_lock=True`` returns the running Blocks at once (tests, notebooks).
    Raises TlkitError for a bad run directory, a malformed ``auth`` or share server, or a busy port.
    """
    auth = parse_auth(auth)
    check_bind(server_name, port)
    problem = share_problem(share_server_address) if share else None
    demo = build_app(run_dir, runs_root=runs_root)
    try:
        demo.launch(server_name=server_name, server_port=int(port), share=bool(share and problem is None),
                    auth=auth, share_server_address=share_server_address, prevent_thread_lock=True,
                    quiet=True, show_error=True, max_file_size=max_file_size, ssr_mode=False,
                    footer_links=["api", "gradio"], css=CSS, theme=gr.themes.Soft())
    except OSError as exc:
        shutil.rmtree(demo.tlkit_scratch, ignore_errors=True)
        raise TlkitError(f"cannot serve on {server_name}:{port}: {_reason(exc)}; choose another --port") from None
    local = f"http://{'127.0.0.1' if server_name in ('0.0.0.0', '::') else server_name}:{demo.server_port}"
    current = demo.tlkit_holder.current
    if not quiet:
        what = f"run {current.run_dir}" if current else "no run yet (Train tab)"
        print(f"tlkit demo: serving {what} at {local} (on all interfaces)" if server_name in ("0.0.0.0", "::")
              else f"tlkit demo: serving {what} at {local}", file=sys.stderr, flush=True)
    if share:
        if demo.share_url:
            print(f"tlkit demo: public link {demo.share_url}", file=sys.stderr, flush=True)
        else:
            why = problem or "the tunnel did not start (see Gradio's message above)"
            print(f"tlkit demo: could not create a share link ({why}): the app is still served at {local}; "
                  f"check the network or use --share-server-address HOST:PORT for a self-hosted share server",
                  file=sys.stderr, flush=True)
    if not prevent_thread_lock:
        try:
            demo.block_thread()
        finally:
            shutil.rmtree(demo.tlkit_scratch, ignore_errors=True)
    return demo
