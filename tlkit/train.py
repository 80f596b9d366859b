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
    channels_last = gpu if options.channels_last is None else options.channels_last
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
        loaded = {}
        for split in ("train", "val"):
            features, labels, hit = cached_features(model, scan.splits[split], evaluation, split=split,
                                                    batch_size=options.batch_size, device=device,
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

    network = torch.compile(model) if options.compile else model
    module = Classifier(model, tune=options.tune, lr=options.lr, backbone_lr_factor=options.backbone_lr_factor,
                        weight_decay=options.weight_decay, epochs=options.epochs,
                        unfreeze_epoch=options.unfreeze_epoch, inputs="features" if use_cache else "images",
                        channels_last=channels_last)
    if options.compile:
        module.model = network

    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

    recorder = MetricsRecorder(run_dir, title=f"{options.backbone} + {options.head} ({options.tune})")
    best = BestWeights()
    callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val_loss", mode="min",
                        save_top_k=1, save_last=True, enable_version_counter=False),
        recorder, best,
    ]
    if options.early_stopping:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=int(options.early_stopping)))
    if not options.quiet:
        callbacks.append(TQDMProgressBar(refresh_rate=1 if use_cache else 1))
    precision = options.precision or ("bf16-mixed" if gpu and torch.cuda.is_bf16_supported()
                                      else "16-mixed" if gpu else "32-true")
    strategy = "auto"
    if distributed:
        from pytorch_lightning.strategies import DDPStrategy

        # gradual unfreezing: frozen epochs give the backbone no gradients
        strategy = DDPStrategy(find_unused_parameters=options.tune == "gradual")
    trainer = pl.Trainer(
        max_epochs=options.epochs, accelerator=options.accelerator, devices=devices,
        num_nodes=options.num_nodes, strategy=strategy, precision=precision, callbacks=callbacks,
        logger=False, enable_model_summary=False, enable_progress_bar=not options.quiet,
        num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=str(run_dir),
        enable_checkpointing=True, deterministic=False,
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    except (RuntimeError, ValueError) as exc:
        if resume_from and ("checkpoint" in str(exc).lower() or "state_dict" in str(exc).lower()):
            raise TlkitError(f"cannot resume from {resume_from}: {str(exc).splitlines()[0]}") from exc
        raise
    if not trainer.is_global_zero:
        return None

    best.restore(model)
    model.to("cpu", memory_format=torch.contiguous_format).eval()
    metrics = recorder.document()
    extra = {"tlkit_fit": {k: v for k, v in resolved.to_config().items()
                           if k not in {"backbone", "head", "image_size"}},
             "best_epoch": best.best_epoch}
    save_model(model, run_dir, extra=extra)
    test_accuracy = _final_evaluation(model, scan, datamodule, use_cache, run_dir, metrics, options)
    recorder.write()
    if test_accuracy is not None:
        metrics["test_accuracy"] = test_accuracy
        from tlkit.runs import METRICS_FILE, write_json

        write_json(run_dir / METRICS_FILE, metrics)
    return FitResult(run_dir=run_dir, metrics=metrics, class_names=scan.class_names,
                     data_summary=scan.summary(), seconds=time.time() - started,
                     test_accuracy=test_accuracy, used_feature_cache=use_cache)


def _final_evaluation(model, scan, datamodule, use_cache, run_dir, metrics, options):
    """Confusion matrix of the best model on the validation split; accuracy on test if there is one."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from tlkit.data import ImageDataset
    from tlkit.evaluate import confusion_matrix, predict_loader
    from tlkit.plots import save_confusion_matrix
    from tlkit.transforms import eval_transform

    evaluation = eval_transform(model.image_size, model.mean, model.std)
    if use_cache:
        with torch.no_grad():
            features, labels = datamodule.val_set.tensors
            predictions = model.head(features.float()).argmax(dim=1).numpy()
        labels = labels.numpy()
    else:
        loader = DataLoader(ImageDataset(scan.splits["val"], evaluation), batch_size=options.batch_size)
        probs, labels = predict_loader(model, loader)
        predictions = probs.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, scan.num_classes)
    save_confusion_matrix(matrix, scan.class_names, run_dir / "confusion_matrix.png",
                          title="Validation confusion matrix")
    metrics["val_confusion_matrix"] = matrix.tolist()
    if not scan.splits.get("test"):
        return None
    loader = DataLoader(ImageDataset(scan.splits["test"], evaluation), batch_size=options.batch_size)
    probs, labels = predict_loader(model, loader)
    test_matrix = confusion_matrix(labels, probs.argmax(axis=1), scan.num_classes)
    save_confusion_matrix(test_matrix, scan.class_names, run_dir / "confusion_matrix_test.png",
                          title="Test confusion matrix")
    return float(np.trace(test_matrix) / max(1, test_matrix.sum()))
