"""The run directory: what ``tlkit fit`` writes and what evaluate, predict, explain and the demo read.

Only ``model.safetensors`` and ``config.json`` are needed to load a trained model; nothing in a run
directory is unpickled except ``checkpoints/last.ckpt`` on ``--resume``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tlkit.errors import TlkitError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
SKIPPED_FILE = "skipped_files.csv"
LAST_CKPT = Path("checkpoints") / "last.ckpt"


def write_json(path, document) -> None:
    """Write JSON atomically (a reader never sees half a file, a crash never leaves one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_model(model, run_dir, *, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` for a :class:`~tlkit.models.TlkitModel`."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared storage; contiguous clones keep the file loadable anywhere.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = run_dir / f".{MODEL_FILE}.tmp{os.getpid()}"
    save_file(state, str(tmp), metadata={"format": "pt", "tlkit": "1"})
    os.replace(tmp, run_dir / MODEL_FILE)
    write_json(run_dir / CONFIG_FILE, {**model.config(), **(extra or {})})
    return run_dir / MODEL_FILE


def read_config(run_dir) -> dict:
    """The run's config.json, with a clear error when the folder is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TlkitError(f"run directory {str(run_dir)!r} does not exist; train one with 'tlkit fit --out DIR'")
    path = run_dir / CONFIG_FILE
    if not path.is_file() or not (run_dir / MODEL_FILE).is_file():
        raise TlkitError(f"{str(run_dir)!r} is not a finished tlkit run (no {CONFIG_FILE} and {MODEL_FILE}); "
                         f"finish or --resume its 'tlkit fit'")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TlkitError(f"{str(path)!r} is not valid JSON: {exc}") from exc


def load_model(run_dir):
    """Rebuild the trained :class:`~tlkit.models.TlkitModel` of a run directory, in eval mode."""
    from safetensors.torch import load_file

    from tlkit.models import build_model

    config = read_config(run_dir)
    model = build_model(config["backbone"], config["head"], num_classes=config["num_classes"],
                        image_size=config["image_size"], pretrained=False,
                        class_names=config.get("class_names"),
                        backbone_options=config.get("backbone_options"),
                        head_options=config.get("head_options"))
    try:
        state = load_file(str(Path(run_dir) / MODEL_FILE))
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file or weights of another model
        raise TlkitError(f"cannot load {MODEL_FILE} of {str(run_dir)!r}: {str(exc).splitlines()[0]}") from exc
    # The run's normalisation wins over the backbone default (a user may have overridden it).
    model.mean = tuple(config.get("mean", model.mean))
    model.std = tuple(config.get("std", model.std))
    return model.eval()


def read_metrics(run_dir) -> dict | None:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def latest_run(runs_root="runs") -> Path | None:
    """The most recently written finished run under ``runs_root`` (None if there is none)."""
    root = Path(runs_root)
    if not root.is_dir():
        return None
    runs = [p.parent for p in root.glob(f"*/{MODEL_FILE}") if (p.parent / CONFIG_FILE).is_file()]
    return max(runs, key=lambda p: (p / MODEL_FILE).stat().st_mtime, default=None)
