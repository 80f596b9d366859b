"""``tlkit fit``: fine-tune a backbone + head on an image folder and write the run directory."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tlkit.errors import TlkitError

RUN_DIR_ENV = "TLKIT_RUN_DIR"  # lets the processes Lightning starts for DDP find the same run


@dataclass
class FitOptions:
    """Every option of ``tlkit fit``; ``config.yaml`` in a run directory holds these, resolved."""

    data_dir: str | None = None
    out: str | None = None
    backbone: str = "efficientnet_lite0"
    head: str = "gap"
    backbone_opt: dict = field(default_factory=dict)
    head_opt: dict = field(default_factory=dict)
    augment: str = "none"
    augment_opt: dict = field(default_factory=dict)
    image_size: int | None = None
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_factor: float = 0.1
    weight_decay: float = 1e-4
    tune: str = "head"
    unfreeze_epoch: int | None = None
    pretrained: bool | None = None
    weights: str | None = None
    val_split: float = 0.2
    seed: int = 0
    resume: bool = False
    early_stopping: int | None = None
    feature_cache: bool = True
    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    precision: str | None = None
    num_workers: int | None = None
    channels_last: bool | None = None
    compile: bool = False
    quiet: bool = False

    @classmethod
    def from_namespace(cls, args) -> "FitOptions":
        from tlkit.cli import _parse_options

        values = {}
        for f in dataclasses.fields(cls):
            value = getattr(args, f.name, f.default)
            if f.name.endswith("_opt"):
                value = value if isinstance(value, dict) else _parse_options(value, f.name[:-4])
            values[f.name] = value
        return cls(**values)

    def to_config(self) -> dict:
        """Options as written to config.yaml (replayable with ``tlkit fit --config``)."""
        config = dataclasses.asdict(self)
        config.pop("resume")
        return config

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 < self.val_split < 1, f"--val-split must be between 0 and 1, got {self.val_split}"),
            (self.image_size is None or self.image_size >= 8, f"--image-size must be at least 8, got {self.image_size}"),
            (self.num_nodes >= 1, f"--num-nodes must be at least 1, got {self.num_nodes}"),
            (self.tune in {"head", "full", "gradual"}, f"--tune must be head, full or gradual, got {self.tune!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TlkitError(message)
        if self.data_dir is not None and not Path(self.data_dir).exists():
            raise TlkitError(f"data folder {self.data_dir!r} does not exist; give an image folder "
                             f"(train/<class>/*, val/<class>/* or <class>/*) or none for the sample data")
        if self.pretrained and self.weights:
            raise TlkitError("--pretrained and --weights both choose the starting weights; give one of them")


@dataclass
class FitResult:
    run_dir: Path
    metrics: dict
    class_names: list[str]
    data_summary: str
    seconds: float
    test_accuracy: float | None = None
    used_feature_cache: bool = False

    def report(self) -> str:
        best = self.metrics.get("best") or {}
        lines = [f"data: {self.data_summary}"]
        if best:
            lines.append(f"best epoch {best['epoch']}: val accuracy {best['val_accuracy']:.1%} "
                         f"(val loss {best['val_loss']:.4f})")
        if self.test_accuracy is not None:
            lines.append(f"test accuracy {self.test_accuracy:.1%}")
        lines.append(f"run directory: {self.run_dir} ({self.seconds:.1f} s"
                     f"{', backbone features cached' if self.used_feature_cache else ''})")
        lines.append(f"next: tlkit evaluate {self.run_dir} DATA_DIR | tlkit predict {self.run_dir} IMAGE | "
                     f"tlkit demo {self.run_dir}")
        return "\n".join(lines)


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


def _log(message: str, quiet: bool = False) -> None:
    if not quiet and _rank() == 0:
        print(message, file=sys.stderr, flush=True)


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*",
                    ".*on_train_epoch_end.*", ".*The total number of parameters detected may be inaccurate.*",
                    ".*`isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
                    ".*sync_dist=True.*"):
        warnings.filterwarnings("ignore", message=pattern)


def resolve_run_dir(options: FitOptions) -> Path:
    if options.out:
        return Path(options.out)
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    path = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    os.environ[RUN_DIR_ENV] = str(path)  # inherited by DDP worker processes
    return path


def _check_run_dir(run_dir: Path, options: FitOptions) -> Path | None:
    """Refuse to overwrite a run; with --resume, the checkpoint to continue from."""
    from tlkit.runs import LAST_CKPT, METRICS_FILE

    last = run_dir / LAST_CKPT
    if options.resume:
        if not last.is_file():
            raise TlkitError(f"nothing to resume in {str(run_dir)!r}: {LAST_CKPT} does not exist; "
                             f"start a new run without --resume")
        _check_resume_compatible(run_dir, options)
        return last
    if _rank() == 0 and (last.is_file() or (run_dir / METRICS_FILE).is_file()):
        raise TlkitError(f"{str(run_dir)!r} already holds a run; pass --resume to continue it or "
                         f"choose another --out")
    return None


def _check_resume_compatible(run_dir: Path, options: FitOptions) -> None:
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key in ("backbone", "head", "tune", "image_size", "head_opt", "backbone_opt"):
        if key in saved and saved[key] != getattr(options, key) and getattr(options, key) is not None:
            raise TlkitError(f"--resume with --{key.replace('_', '-')} {getattr(options, key)!r}, but the run "
                             f"was started with {saved[key]!r}; resume with the same options "
                             f"(tlkit fit --config {path} --resume)")


def _default_channels_last(options: FitOptions, gpu: bool) -> bool:
    """channels_last on CUDA and on CPUs, where it was measured faster; off on other accelerators (MPS...).

    On a 2-core AVX-512 CPU (bench/train_step.py) it trained efficientnet_lite0 1.7x faster than
    NCHW, resnet18 1.1x, the lecture CNNs 1.2-1.4x, and ran frozen-backbone inference 1.3-1.4x faster.
    """
    import torch

    if gpu:
        return True
    if options.accelerator == "cpu":
        return True
    mps = getattr(torch.backends, "mps", None)
    return options.accelerator == "auto" and not (mps is not None and mps.is_available())


def _trainer_devices(value):
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def fit(options: FitOptions) -> FitResult | None:
    """Train as ``options`` say and write the run directory. Returns None in DDP worker processes."""
    started = time.time()
    options.validate()
    _quiet_lightning()
    import yaml
    import pytorch_lightning as pl
    import torch

    from tlkit.callbacks import BestWeights, MetricsRecorder
    from tlkit.data import ImageFolderDataModule, scan_image_folder
    from tlkit.lightning_module import Classifier
    from tlkit.models import build_model
    from tlkit.runs import SKIPPED_FILE, save_model
    from tlkit.transforms import eval_transform, is_deterministic, train_transform

    run_dir = resolve_run_dir(options)
    resume_from = _check_run_dir(run_dir, options)
    pl.seed_everything(options.seed, workers=True, verbose=False)

    if options.data_dir is None:
        from tlkit.sample_data import sample_data_dir

        data_dir = sample_data_dir()
        _log(f"no DATA_DIR given: using the built-in sample data (coloured shapes) in {data_dir}", options.quiet)
    else:
        data_dir = Path(options.data_dir)
    scan = scan_image_folder(data_dir, val_split=options.val_split, seed=options.seed,
                             progress=not options.quiet and _rank() == 0)
    if _rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        scan.write_skipped(run_dir / SKIPPED_FILE)
    _log(f"data: {scan.summary()}", options.quiet)

    model = build_model(options.backbone, options.head, num_classes=scan.num_classes,
                        image_size=options.image_size, pretrained=options.pretrained,
                        weights=options.weights, class_names=scan.class_names,
                        backbone_options=options.backbone_opt, head_options=options.head_opt)
    resolved = dataclasses.replace(options, image_size=model.image_size, data_dir=str(data_dir),
                                   out=str(run_dir))
    if resolved.pretrained is None:
        from tlkit.models import backbone_has_pretrained

        resolved.pretrained = options.weights is None and backbone_has_pretrained(options.backbone)
    if _rank() == 0:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved.to_config(), sort_keys=False),
                                             encoding="utf-8")

    gpu = torch.cuda.is_available() and options.accelerator in ("auto", "gpu", "cuda")
    channels_last = (_default_channels_last(options, gpu) if options.channels_last is None
                     else options.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    evaluation = eval_transform(model.image_size, model.mean, model.std)
    devices = _trainer_devices(options.devices)
    distributed = (isinstance(devices, int) and devices > 1) or options.num_nodes > 1
    use_cache = (options.tune == "head" and options.feature_cache and is_deterministic(options.augment)
                 and not options.compile)
    if use_cache:
        from tlkit.feature_cache import FeatureDataModule, cached_features

        device = "cuda" if gpu else "cpu"
        # One pass: on a CPU the backbone needs every core and decoding in line was fastest; a GPU
        # needs the images decoded in parallel to be kept busy.
        workers = options.num_workers
        if workers is None:
            from tlkit.data import default_num_workers

            workers = default_num_workers(len(scan.splits["train"]), cuda=True) if gpu else 0
        loaded = {}
        for split in ("train", "val"):
            features, labels, hit = cached_features(model, scan.splits[split], evaluation, split=split,
                                                    batch_size=options.batch_size, device=device,
                                                    num_workers=workers,
                                                    progress=not options.quiet and _rank() == 0)
            loaded[split] = (features, labels)
            _log(f"{split} features: {'cache hit' if hit else 'computed'} {tuple(features.shape)}", options.quiet)
        model.to("cpu")
        datamodule = FeatureDataModule(loaded["train"], loaded["val"], batch_size=options.batch_size)
    else:
        datamodule = ImageFolderDataModule(
            scan, batch_size=options.batch_size, num_workers=options.num_workers,
            train_transform=train_transform(options.augment, model.image_size, model.mean, model.std,
                                            **options.augment_opt),
            eval_transform=evaluation)

    module = Classifier(model, tune=options.tune, lr=options.lr, backbone_lr_factor=options.backbone_lr_factor,
                        weight_decay=options.weight_decay, epochs=options.epochs,
                        unfreeze_epoch=options.unfreeze_epoch, inputs="features" if use_cache else "images",
                        channels_last=channels_last, compile=options.compile)

    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

    # metrics.json after every epoch; curves.png as often as it costs under 2% of the time (_curves_plot)
    recorder = MetricsRecorder(run_dir, title=f"{options.backbone} + {options.head} ({options.tune})",
                               plot=False)
    curves = _curves_plot(recorder)
    best = BestWeights()
    callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val_loss", mode="min",
                        save_top_k=1, enable_version_counter=False),
        # last.ckpt after every epoch: since Lightning 2.6 save_last=True writes it only in the epochs
        # that also write best.ckpt, which would make --resume after a crash restart at the best epoch
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False),
        recorder, curves, best,
    ]
    if options.early_stopping:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=int(options.early_stopping)))
    if not options.quiet:
        # A head on cached features takes well under a millisecond a step: redrawing the bar (and
        # reading the logged loss) every step would cost more than the step, so about 20 a epoch.
        steps = -(-len(scan.splits["train"]) // options.batch_size)
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, steps // 20) if use_cache else 1))
    precision = options.precision or ("bf16-mixed" if gpu and torch.cuda.is_bf16_supported()
                                      else "16-mixed" if gpu else "32-true")
    strategy = "auto"
    if distributed:
        from pytorch_lightning.strategies import DDPStrategy

        # gradual unfreezing: frozen epochs give the backbone no gradients
        strategy = DDPStrategy(find_unused_parameters=options.tune == "gradual")
    checkpoint_io = _background_checkpoint_io()
    trainer = pl.Trainer(
        max_epochs=options.epochs, accelerator=options.accelerator, devices=devices,
        num_nodes=options.num_nodes, strategy=strategy, precision=precision, callbacks=callbacks,
        logger=False, enable_model_summary=False, enable_progress_bar=not options.quiet,
        num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=str(run_dir),
        enable_checkpointing=True, deterministic=False, benchmark=True if gpu else None,
        plugins=[checkpoint_io],
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    except (RuntimeError, ValueError) as exc:
        if resume_from and ("checkpoint" in str(exc).lower() or "state_dict" in str(exc).lower()):
            raise TlkitError(f"cannot resume from {resume_from}: {str(exc).splitlines()[0]}") from exc
        raise
    if not trainer.is_global_zero:
        return None
    # the last checkpoints are written while the run directory is finished; fit returns after both

    best.restore(model)
    model.to("cpu", memory_format=torch.contiguous_format).eval()
    metrics = recorder.document()
    extra = {"tlkit_fit": {k: v for k, v in resolved.to_config().items()
                           if k not in {"backbone", "head", "image_size"}},
             "best_epoch": best.best_epoch}
    save_model(model, run_dir, extra=extra)
    # The best epoch's own validation predictions (one process saw the whole split) spare a pass
    recorded = module.best_val_predictions
    val_predictions = (recorded[1:] if recorded is not None and recorded[0] == best.best_epoch
                       and trainer.world_size == 1 and not use_cache else None)
    test_accuracy = _final_evaluation(model, scan, datamodule, use_cache, run_dir, metrics, options,
                                      val_predictions=val_predictions)
    recorder.write()
    curves.draw_if_stale()
    if test_accuracy is not None:
        metrics["test_accuracy"] = test_accuracy
        from tlkit.runs import METRICS_FILE, write_json

        write_json(run_dir / METRICS_FILE, metrics)
    checkpoint_io.finish()
    return FitResult(run_dir=run_dir, metrics=metrics, class_names=scan.class_names,
                     data_summary=scan.summary(), seconds=time.time() - started,
                     test_accuracy=test_accuracy, used_feature_cache=use_cache)


def _background_checkpoint_io():
    """A Lightning CheckpointIO that writes checkpoints in a background thread, in order.

    ``best.ckpt`` and ``last.ckpt`` (model, optimiser state and best weights: about four times the
    model) cost 0.1-0.3 s each per epoch on a small CPU when written in line. Here the caller thread
    only takes a point-in-time copy of the tensors (on the CPU, so GPU memory is not doubled) and the
    next epoch trains while one worker thread serialises and writes them. Two checkpoints of the same
    training state (``best.ckpt`` and ``last.ckpt`` of an epoch that improved) are serialised once:
    the second file is a hard link to the first (a copy where links are not supported). Every file
    is written next to its destination and renamed into place, so a crash never leaves half a
    checkpoint and a linked file is never changed by a later write. A failed write is raised at the
    next checkpoint or by ``finish()``, which ``fit`` calls before it returns (after the model,
    plots and metrics are written, so the last write overlaps them). Writes still pending when
    training fails are completed before the interpreter exits.
    """
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from lightning_utilities.core.apply_func import apply_to_collection
    from pytorch_lightning.plugins import TorchCheckpointIO

    def temporary(path: Path) -> Path:
        return path.with_name(f".{path.name}.tmp{os.getpid()}")

    def write(snapshot, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary(path)
        torch.save(snapshot, tmp)
        os.replace(tmp, path)
        for stale in path.parent.glob(f".{path.name}.tmp*"):  # left by a killed run
            stale.unlink(missing_ok=True)

    def link(source: Path, path: Path) -> None:
        tmp = temporary(path)
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)

    class BackgroundCheckpointIO(TorchCheckpointIO):
        def __init__(self):
            super().__init__()
            self._executor = None
            self._pending = []
            self._last = None  # (epoch, global_step, path) of the last checkpoint written

        def _wait(self):
            pending, self._pending = self._pending, []
            for future in pending:
                future.result()  # re-raises a failed write

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if storage_options is not None:
                raise TypeError("tlkit's checkpoint writer takes no storage_options")
            for future in [f for f in self._pending if f.done()]:
                self._pending.remove(future)
                future.result()
            path = Path(path)
            state = (checkpoint.get("epoch"), checkpoint.get("global_step"))
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlkit-checkpoint")
            if self._last is not None and self._last[:2] == state and self._last[2] != path:
                job = (link, self._last[2], path)
            else:
                snapshot = apply_to_collection(checkpoint, torch.Tensor,
                                               lambda t: t.detach().to("cpu", copy=True))
                job = (write, snapshot, path)
            self._last = (*state, path)
            self._pending.append(self._executor.submit(*job))

        def load_checkpoint(self, *args, **kwargs):
            self._wait()
            return super().load_checkpoint(*args, **kwargs)

        def remove_checkpoint(self, path):
            self._wait()
            super().remove_checkpoint(path)

        def finish(self):
            """Wait for every write; raise the first that failed."""
            try:
                self._wait()
            finally:
                if self._executor is not None:
                    self._executor.shutdown(wait=True)
                    self._executor = None

    return BackgroundCheckpointIO()


def _curves_plot(recorder, share: float = 0.02, first_cost: float = 0.4):
    """A callback that redraws ``curves.png`` after an epoch, unless that would cost more than ``share``.

    Drawing takes 0.1-0.4 s on a small CPU (the first drawing loads fonts). It is redrawn after an
    epoch when the time since training started, or since the last drawing, is at least ``cost /
    share`` (``first_cost / share`` = 20 s before the first), so short epochs (a head on cached
    features, a small data set) do not pay for their own plot; ``draw_if_stale`` at the end of
    ``fit`` draws every epoch. metrics.json is still rewritten after every epoch by the recorder.
    """
    import pytorch_lightning as pl

    class _CurvesPlot(pl.Callback):
        def __init__(self):
            self.drawn = None  # the epoch records of the last drawing
            self.cost = first_cost
            self.last = time.perf_counter()

        def on_train_start(self, trainer, pl_module):
            self.last = time.perf_counter()

        def draw_if_stale(self):
            if not recorder.epochs or recorder.epochs == self.drawn:
                return
            from tlkit.plots import save_learning_curves

            started = time.perf_counter()
            recorder.run_dir.mkdir(parents=True, exist_ok=True)
            save_learning_curves(recorder.epochs, recorder.run_dir / "curves.png", title=recorder.title)
            self.drawn = [dict(e) for e in recorder.epochs]
            self.last = time.perf_counter()
            self.cost = self.last - started

        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.is_global_zero and not trainer.sanity_checking and \
                    time.perf_counter() - self.last >= self.cost / share:
                self.draw_if_stale()

    return _CurvesPlot()


def _final_evaluation(model, scan, datamodule, use_cache, run_dir, metrics, options, val_predictions=None):
    """Confusion matrix of the best model on the validation split; accuracy on test if there is one.

    ``val_predictions`` (predicted and true labels) are the best epoch's, recorded while validating.
    """
    import numpy as np
    import torch

    from tlkit.evaluate import confusion_matrix, samples_confusion
    from tlkit.plots import save_confusion_matrix

    if val_predictions is not None:
        predictions, labels = (t.numpy() for t in val_predictions)
        matrix = confusion_matrix(labels, predictions, scan.num_classes)
    elif use_cache:
        with torch.no_grad():
            features, labels = datamodule.val_set.tensors
            predictions = model.head(features.float()).argmax(dim=1).numpy()
        matrix = confusion_matrix(labels.numpy(), predictions, scan.num_classes)
    else:
        matrix = samples_confusion(model, scan.splits["val"], batch_size=options.batch_size)
    save_confusion_matrix(matrix, scan.class_names, run_dir / "confusion_matrix.png",
                          title="Validation confusion matrix")
    metrics["val_confusion_matrix"] = matrix.tolist()
    if not scan.splits.get("test"):
        return None
    test_matrix = samples_confusion(model, scan.splits["test"], batch_size=options.batch_size)
    save_confusion_matrix(test_matrix, scan.class_names, run_dir / "confusion_matrix_test.png",
                          title="Test confusion matrix")
    return float(np.trace(test_matrix) / max(1, test_matrix.sum()))
