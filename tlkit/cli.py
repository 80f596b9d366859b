"""The ``tlkit`` command line.

Exit status 0 on success, 2 on bad usage or bad input (one line on stderr, no traceback). With
``--json`` stdout holds only the JSON document; logs and progress go to stderr. Heavy libraries
(torch, Lightning, Gradio) are imported inside the commands that need them, so ``tlkit --help``
starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tlkit import __version__
from tlkit.errors import TlkitError

KIND_CHOICES = ("backbones", "heads", "augmentations", "interpreters")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (and the usual exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _emit_json(document) -> None:
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _parse_options(pairs, what: str) -> dict:
    """``["hidden=128", "p=0.3"]`` -> ``{"hidden": 128, "p": 0.3}`` (values read as YAML scalars)."""
    import yaml

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TlkitError(f"{what} option {pair!r} is not KEY=VALUE, e.g. hidden=128")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


# -- plugins / list / summary -------------------------------------------------------------------
def cmd_plugins(args) -> int:
    from tlkit.plugins import plugin_infos

    infos = plugin_infos()
    if args.json:
        _emit_json({"plugins": [info.as_dict() for info in infos]})
        return 0
    for info in infos:
        status = "ok" if info.ok else "FAILED"
        version = f" {info.version}" if info.version else ""
        print(f"{info.name}{version} [{info.source}] {status}")
        if info.hooks:
            print(f"    hooks: {', '.join(info.hooks)}")
        for kind, names in info.registered.items():
            if names:
                print(f"    {kind}: {', '.join(names)}")
        for error in info.errors:
            print(f"    error: {error}")
    failed = [i.name for i in infos if not i.ok]
    if failed:
        print(f"\n{len(failed)} plugin(s) reported errors: {', '.join(failed)}", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    from tlkit.plugins import get_registry

    registry = get_registry(args.kind)
    entries = registry.entries(args.pattern)
    if args.json:
        _emit_json({args.kind: [e.as_dict() for e in entries]})
        return 0
    if not entries:
        print(f"no {args.kind} match {args.pattern!r}; valid: {', '.join(registry.names())}", file=sys.stderr)
        return 0
    width = max(len(e.name) for e in entries)
    for entry in entries:
        aliases = f" (aliases: {', '.join(entry.aliases)})" if entry.aliases else ""
        print(f"{entry.name.ljust(width)}  {entry.description}{aliases}  [{entry.plugin}]")
    return 0


def cmd_summary(args) -> int:
    from tlkit.models import build_model
    from tlkit.summary import summarize

    model = build_model(args.backbone, args.head, num_classes=args.num_classes, image_size=args.image_size,
                        pretrained=False, backbone_options=_parse_options(args.backbone_opt, "backbone"),
                        head_options=_parse_options(args.head_opt, "head"))
    summary = summarize(model, model.image_size, depth=args.depth)
    if args.json:
        _emit_json({"backbone": model.backbone_name, "head": model.head_name, **summary.as_dict()})
    else:
        print(f"{model.backbone_name} + {model.head_name}, {model.num_classes} classes, "
              f"{model.image_size}x{model.image_size} input")
        print(summary.table())
    return 0


# -- fit / evaluate / predict --------------------------------------------------------------------
def cmd_fit(args) -> int:
    from tlkit.train import FitOptions, fit

    options = FitOptions.from_namespace(args)
    result = fit(options)
    if result is not None:  # None in the extra processes of a distributed run
        print(result.report())
    return 0


def cmd_evaluate(args) -> int:
    from tlkit.evaluate import evaluate_run

    report = evaluate_run(args.run_dir, args.data_dir, batch_size=args.batch_size)
    if args.json:
        _emit_json(report.as_dict())
    else:
        print(report.text())
    return 0


def cmd_predict(args) -> int:
    from tlkit.predict import Predictor

    predictor = Predictor.from_run(args.run_dir)
    results = predictor.predict_files(args.images, top_k=args.top_k)
    failed = sum("error" in item for item in results)
    if failed:  # the readable images are still predicted; the exit status tells a script
        print(f"tlkit predict: error: {failed} of {len(results)} images could not be read", file=sys.stderr)
    if args.json:
        _emit_json(results)
        return 2 if failed else 0
    for item in results:
        if "error" in item:
            print(f"{item['image']}: error: {item['error']}")
            continue
        best = ", ".join(f"{p['label']} {p['probability']:.1%}" for p in item["predictions"])
        print(f"{item['image']}: {best}")
    return 2 if failed else 0


# -- explain / augment / demo --------------------------------------------------------------------
def cmd_explain(args) -> int:
    from tlkit.interpret import explain_file

    explanation = explain_file(args.run_dir, args.image, method=args.method, target=args.target,
                               layer=args.layer, options=_parse_options(args.opt, "interpreter"))
    explanation.save(args.out)
    print(f"{args.method}: {explanation.summary()} -> {args.out}")
    return 0


def cmd_augment(args) -> int:
    from tlkit.augment import augmentation_grid

    path = augmentation_grid(args.source, policy=args.policy, n=args.n, out=args.out,
                             image_size=args.image_size, seed=args.seed,
                             options=_parse_options(args.opt, "augmentation"))
    print(f"{args.n} samples of policy {args.policy!r} -> {path}")
    return 0


def cmd_demo(args) -> int:
    from tlkit.demo_app import launch

    launch(run_dir=args.run_dir, port=args.port, server_name=args.server_name, share=args.share,
           auth=args.auth, share_server_address=args.share_server_address, runs_root=args.runs_root)
    return 0


# -- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tlkit", description="Transfer learning for image classification, built from plugins.",
                    epilog="Run 'tlkit COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"tlkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def add(name, func, help_text, **kwargs):
        p = sub.add_parser(name, help=help_text, description=help_text, **kwargs)
        p.set_defaults(func=func)
        return p

    def json_flag(p):
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    def component_flags(p):
        p.add_argument("--backbone", default="efficientnet_lite0", help="backbone name (tlkit list backbones)")
        p.add_argument("--head", default="gap", help="head name (tlkit list heads)")
        p.add_argument("--backbone-opt", action="append", metavar="KEY=VALUE", help="backbone factory option (repeatable)")
        p.add_argument("--head-opt", action="append", metavar="KEY=VALUE", help="head factory option (repeatable)")

    p = add("plugins", cmd_plugins, "list loaded plugins, their versions, hooks and load errors")
    json_flag(p)

    p = add("list", cmd_list, "list registered components of one kind")
    p.add_argument("kind", choices=KIND_CHOICES)
    p.add_argument("pattern", nargs="?", help="filter: shell wildcards (res*) or a substring")
    json_flag(p)

    p = add("summary", cmd_summary, "per-layer table: output shape, parameters, mult-adds, receptive field")
    component_flags(p)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--image-size", type=int, help="input side in pixels (default: the backbone's)")
    p.add_argument("--depth", type=int, default=3, help="module nesting levels to show (default 3)")
    json_flag(p)

    p = add("fit", cmd_fit, "fine-tune a backbone + head on an image folder (or the built-in sample data)")
    p.add_argument("data_dir", nargs="?", help="train/<class>/* + val/<class>/*, or <class>/* (default: sample data)")
    p.add_argument("--out", help="run directory (default: runs/<time>)")
    component_flags(p)
    p.add_argument("--augment", default="none", help="augmentation policy (tlkit list augmentations)")
    p.add_argument("--augment-opt", action="append", metavar="KEY=VALUE", help="augmentation option (repeatable)")
    p.add_argument("--image-size", type=int, help="input side in pixels (default: the backbone's, 224 for timm nets)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the head (default 1e-3)")
    p.add_argument("--backbone-lr-factor", type=float, default=0.1,
                   help="backbone learning rate = lr x this, for --tune full|gradual (default 0.1)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (L2), default 1e-4")
    p.add_argument("--tune", choices=("head", "full", "gradual"), default="head",
                   help="head: frozen backbone; full: train all; gradual: head first, then all")
    p.add_argument("--unfreeze-epoch", type=int, default=None,
                   help="with --tune gradual: epoch at which the backbone unfreezes (default: half way)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="start from pretrained weights (default: yes where the backbone has them)")
    p.add_argument("--weights", help="backbone state dict in timm's layout (.safetensors, .pth, .bin)")
    p.add_argument("--val-split", type=float, default=0.2, help="validation fraction for a <class>/* folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.ckpt")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better validation loss")
    p.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="with --tune head and a deterministic policy, compute backbone features once")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, mps or auto")
    p.add_argument("--devices", default="auto", help="number of devices (2 on CPU runs DDP in 2 processes)")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--precision", default=None, help="Lightning precision, e.g. bf16-mixed (default: 32, or 16-mixed on GPU)")
    p.add_argument("--num-workers", type=int, default=None, help="data loader workers (default: by CPU count)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for CPU and CUDA, where it is faster)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (measure first)")
    p.add_argument("--config", help="YAML of options (a run's config.yaml); command-line flags win")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("evaluate", cmd_evaluate, "accuracy, per-class precision/recall and confusion matrix of a run on a folder")
    p.add_argument("run_dir")
    p.add_argument("data_dir")
    p.add_argument("--batch-size", type=int, default=32)
    json_flag(p)

    p = add("predict", cmd_predict, "top-k labels of images with a trained run")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=3)
    json_flag(p)

    p = add("explain", cmd_explain, "explain a prediction with an interpreter, as a picture")
    p.add_argument("run_dir")
    p.add_argument("image")
    p.add_argument("--method", required=True, help="interpreter (tlkit list interpreters)")
    p.add_argument("--target", help="class label to explain (default: the predicted class)")
    p.add_argument("--layer", help="module name (feature_maps, filters, gradcam); wrong names list the valid ones")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="interpreter option (repeatable)")
    p.add_argument("--out", required=True, help="output picture (.png)")

    p = add("augment", cmd_augment, "a grid of augmented samples of an image (or the images of a folder)")
    p.add_argument("source", metavar="IMAGE_OR_DIR")
    p.add_argument("--policy", required=True, help="augmentation policy (tlkit list augmentations)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="policy option (repeatable)")
    p.add_argument("--out", required=True, help="output picture (.png)")

    p = add("demo", cmd_demo, "the Gradio app: predict, explain, feature maps, filters, augmentations, train")
    p.add_argument("run_dir", nargs="?", help="run to load (default: the latest under --runs-root)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--server-name", default="127.0.0.1", help="0.0.0.0 to serve the LAN")
    p.add_argument("--share", action="store_true", help="create a public Gradio share link")
    p.add_argument("--share-server-address", help="self-hosted share server HOST:PORT (frp)")
    p.add_argument("--auth", help="USER:PASS required to open the app")
    p.add_argument("--runs-root", default="runs", help="where runs live (default ./runs)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "fit" and args.config:
        args = _apply_config(parser, argv, args.config)
    try:
        return int(args.func(args) or 0)
    except TlkitError as exc:
        print(f"tlkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tlkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tlkit list backbones | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _apply_config(parser, argv, path):
    """Re-parse with the YAML file's values as defaults, so flags given on the command line win."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        parser.exit(2, f"tlkit fit: error: cannot read --config {path!r}: {exc}\n")
    if not isinstance(config, dict):
        parser.exit(2, f"tlkit fit: error: --config {path!r} must hold a mapping of option: value\n")
    fit_parser = parser._subparsers._group_actions[0].choices["fit"]  # noqa: SLF001
    known = {a.dest for a in fit_parser._actions}  # noqa: SLF001
    unknown = sorted(set(config) - known - {"command"})
    if unknown:
        parser.exit(2, f"tlkit fit: error: --config {path!r} has unknown options {unknown}; "
                       f"valid: {', '.join(sorted(known - {'help', 'func'}))}\n")
    fit_parser.set_defaults(**{k: v for k, v in config.items() if k in known})
    args = parser.parse_args(argv)
    args.config = path
    return args


if __name__ == "__main__":
    sys.exit(main())
