"""Every training flag in one place: the reference's flags (same names, same defaults)
followed by the flags this project adds. `parse_train_args` turns a command line into
a validated `argparse.Namespace`; `recipe_dict` / `config_hash` say which of its fields
decide the numbers a run produces (and so whether a checkpoint may be resumed).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import json
import math
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

from ..credentials import redact_uri, take_credentials
from ..methods import registry
from .archspec import PLACEMENTS, hidden_blocks
from .specs import CROP_FILLS, MODEL_NAMES, RESNET_BLOCKS, SPECS, SVHN_SPLITS

DATASETS = tuple(SPECS)
DEFAULT_OUT = "runs/last"


from ..errors import ConfigError  # noqa: E402  (re-exported: flag errors are config errors)


# How every `locallearn ... --help` reads: each option shows its default (as it would
# be typed), so `locallearn train --help` says what a bare `locallearn train` does; a
# description's paragraphs are reflowed to the terminal and its indented lines (lists)
# kept as written.
class HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        """The help, plus "(default: X)" unless it already speaks of its default or there
        is none to show (None, an off switch, an empty value, a positional)."""
        text = action.help or ""
        d = action.default
        nothing = (d is None or d is False or d is argparse.SUPPRESS
                   or (isinstance(d, (str, list, tuple)) and not d))
        if "default" in text or nothing or not action.option_strings:
            return text
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Runs of unindented lines are paragraphs, reflowed to the width; indented lines
        (lists, examples) and blank lines are kept as written."""
        out, para = [], []

        def flush() -> None:
            # a line ending in "-" broke a hyphenated word ("multiply-" / "adds"): no space
            joined = "".join(w if i == 0 or para[i - 1].endswith("-") else " " + w for i, w in enumerate(para))
            out.extend(textwrap.wrap(joined, width, initial_indent=indent, subsequent_indent=indent))
            para.clear()

        for line in inspect.cleandoc(text).splitlines():
            if line.strip() and not line[0].isspace():
                para.append(line.strip())
                continue
            flush()
            out.append(indent + line if line.strip() else "")
        flush()
        return "\n".join(out)

    def _format_action(self, action: argparse.Action) -> str:
        """Subcommands (`locallearn COMMAND`) are listed one a line under their heading,
        without a line of their own for the word's placeholder."""
        if isinstance(action, argparse._SubParsersAction):
            return "".join(self._format_action(sub) for sub in action._get_subactions())
        return super()._format_action(action)


def _add_reference_flags(p: argparse.ArgumentParser) -> None:
    """The authors' train.py flags, verbatim, so every published recipe runs unchanged;
    each into its group of build_parser's (the order of the calls is the order of parsing)."""
    g = p.flag_groups
    a = g["what is trained"].add_argument
    a("--model", default="vgg8b", help="the network (docs/flags.md)")
    a("--dataset", default="CIFAR10", help="the dataset")
    a("--num-layers", type=int, default=1, help="linear blocks of the MLP (head); the mlp needs >= 1 "
      "(refused: the reference silently builds one for 0)")
    a("--num-hidden", type=int, default=1024, help="width of every linear block")
    a("--feat-mult", type=float, default=1, help="VGG channel multiplier (1, 2, 3 in the paper)")
    a("--nonlin", default="relu", help="the nonlinearity (leakyrelu: slope 0.01)")
    a("--dropout", type=float, default=0.0, help="dropout after every hidden block")
    a("--no-batch-norm", action="store_true", help="drop BatchNorm from every block")
    a = g["local losses"].add_argument
    a("--loss-sup", default="predsim", help="the local supervised loss")
    a("--loss-unsup", default="none", help="an optional unsupervised local loss")
    a("--alpha", type=float, default=0.0, help="weight of the unsupervised term")
    a("--beta", type=float, default=0.99, help="weight of sim in predsim (pred gets 1-beta)")
    a("--dim-in-decoder", type=int, default=4096, help="bound on the pred decoder's input size")
    a("--no-similarity-std", action="store_true", help="similarity of flattened maps, not of channel stds")
    a("--backprop", action="store_true", help="plain global backprop, no local heads (refused with --bio "
      "and --no-detach, which the reference silently misreads: docs/flags.md)")
    a("--no-detach", action="store_true", help="keep the graph between blocks (global loss reaches all)")
    a("--bio", action="store_true", help="fixed random label projection + feedback alignment")
    a("--target-proj-size", type=int, default=128, help="size of the bio label projection")
    a = g["optimisation"].add_argument
    a("--optim", default="adam", help="the optimizer")
    a("--lr", type=float, default=5e-4, help="initial learning rate, the same for every parameter")
    a("--momentum", type=float, default=0.0, help="SGD momentum")
    a("--weight-decay", type=float, default=0.0, help="coupled L2, as torch.optim's weight_decay")
    a("--batch-size", type=int, default=128, help="training batch size")
    a("--epochs", type=int, default=400, help="epochs; the published error is after the last one")
    a("--lr-decay-milestones", type=int, nargs="+", default=[200, 300, 350, 375],
      help="epochs after which lr is multiplied by --lr-decay-fact")
    a("--lr-decay-fact", type=float, default=0.25, help="lr factor at each milestone")
    a = g["data"].add_argument
    a("--cutout", action="store_true", help="cutout regularisation on training images")
    a("--n_holes", type=int, default=1, help="cutout squares per image")
    a("--length", type=int, default=16, help="cutout square side (px); > 0 with --cutout")
    a("--classes-per-batch", type=int, default=0, help="sampler: n examples then >=10 classes per batch")
    a("--classes-per-batch-until-epoch", type=int, default=0,
      help="sampler on while epoch <= this (0: the whole run, as the reference)")
    a = g["running"].add_argument
    a("--seed", type=int, default=1, help="seeds every random number of the run")
    a("--no-cuda", action="store_true", help="train on the CPU even where CUDA is present")
    a("--progress-bar", action=argparse.BooleanOptionalAction, default=None,
      help="a progress bar on the terminal, never in train.log or a job log (default: on where stderr is a "
           "terminal); the workflow's jobs run with --no-progress-bar")
    a("--no-print-stats", action="store_true", help="print no per-epoch statistics line (the reference's flag)")
    a("--resume", default="", metavar="FILE", help="checkpoint file to resume from (default: the one in --out); "
      "refused if it is of another recipe (the reference takes the recipe from it)")
    a("--save-dir", default="", metavar="DIR", help="an alias of --out: the run writes into this folder itself, not "
      "into the reference's <dataset>/<model>/<config> subfolders (docs/flags.md)")
    a("--pre-act", action="store_true", help="accepted and without effect, as in the reference: it "
      "applies it only to its ResNets (none here); mlp and VGG blocks stay layer -> BN -> nonlin")


def _add_project_flags(p: argparse.ArgumentParser) -> None:
    """Additive flags: where a run reads and writes, and how it is executed; each into
    its group of build_parser's (the order of the calls is the order of parsing)."""
    g = p.flag_groups
    run, data, track = (g[t].add_argument for t in ("running", "data", "tracking"))
    run("--out", default=None, metavar="DIR", help=f"output folder, owned by this run: start.json, train.log, checkpoints, "
        f"metrics.json, curve.png (default: --save-dir, else {DEFAULT_OUT})")
    run("--job-log", default=None, metavar="FILE",
        help="also copy this attempt's output to FILE (overwritten; the workflow's per-job log)")
    run("--set-aside-to", default=None, metavar="DIR",
        help="only move a run of another recipe out of --out, whole, to DIR (with replaced.json), then stop "
             "(the workflow's set_aside rule; a plain train run sets such a run aside by itself)")
    data("--data-dir", default=None, metavar="DIR", help="dataset folder (default: $LOCALLEARN_DATA or ./data)")
    data("--download", action="store_true", help="allow downloading missing datasets")
    run("--device", default="auto", metavar="DEVICE", help="auto | cpu | cuda | cuda:N")
    run("--engine", default="fused", help="fused (one backward, one step) | reference (per-block optimizers) "
        "| modulewise (a backward per local loss, one step: the peers' scheme)")
    run("--precision", default="fp32",
        help="fp32 (TF32 off: float32 as the paper) | tf32 (CUDA matmuls and convolutions in TF32) "
             "| bf16 (autocast for forward and local losses); host/precision.py")
    run("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's choice)")
    run("--heartbeat", type=float, default=60.0, metavar="SECONDS",
        help="without a progress bar, a line every SECONDS inside an epoch: batch, images/s, the epoch's and "
             "the run's ETA (0: none)")
    data("--max-train-examples", type=int, default=0, help="use only the first N training examples (0: all)")
    data("--max-test-examples", type=int, default=0, help="use only the first N test examples (0: all)")
    # The data as another paper's code reads it (the field's grid, docs/peers.md). Unset,
    # each leaves the dataset as the paper's recipe has it (recipe/specs.py: run_spec).
    data("--svhn-split", default="train+extra", help="SVHN's training images: train+extra (604,388, the "
         "paper's) | train (the 73,257 of the standard split, torchvision's split='train')")
    data("--crop-padding", type=int, default=None, help="random-crop padding of training images in pixels "
         "(default: the dataset's; 0: no crop)")
    data("--crop-fill", default="zeros", help="how the crop pads: zeros (torchvision's RandomCrop) | reflect "
         "(reflection padding, as AugLocal's and InfoPro's CIFAR-10)")
    data("--hflip", default=None, help="random horizontal flips of training images: yes | no "
         "(default: the dataset's)")
    data("--pixel-mean", type=float, nargs="+", default=None, metavar="X", help="normalisation mean per "
         "channel on the 0-255 pixel scale, e.g. 125.3 123.0 113.9 (default: the dataset's)")
    data("--pixel-std", type=float, nargs="+", default=None, metavar="X", help="normalisation std per channel "
         "on the 0-255 pixel scale (default: the dataset's)")
    data("--num-classes", type=int, default=0, help="outputs of the classifier and the local heads (0: the "
         "dataset's classes; more: as a code that builds STL-10's with 100)")
    run("--eval-batch-size", type=int, default=1000, help="batch size for the test pass (the reference "
        "uses --batch-size; BN is in eval mode, so only rounding differs)")
    track("--mlflow-uri", default=None, metavar="URI", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI; none: off)")
    track("--mlflow-experiment", default="locallearn", metavar="NAME", help="MLflow experiment name")
    track("--mlflow-system-metrics", action="store_true",
          help="sample CPU, memory, disk (and GPU) use into the run's system/* metrics "
               "(also on with $MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true)")
    track("--run-name", default=None, metavar="NAME", help="MLflow run name (default: the --out folder name)")
    track("--tag", action="append", default=[], metavar="KEY=VALUE", help="extra MLflow tag (repeatable)")
    run("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    run("--pipeline-stages", type=int, default=1,
        help="split the blocks into S pipelined processes (exact; train/pipeline.py)")
    run("--stage-devices", nargs="+", default=None, metavar="DEVICE", help="one device per pipeline stage (default: automatic)")
    run("--pipeline-balance", default="flops", choices=["flops", "time"], help="stage split from")
    run("--no-cuda-graph", action="store_true",
        help="on CUDA, run every fused step eagerly instead of replaying it as one CUDA graph")
    run("--channels-last", action="store_true", help="conv weights and activations in NHWC order (host/precision.py)")
    run("--cudnn-benchmark", action="store_true",
        help="let cuDNN autotune its convolution algorithms (host/precision.py)")


def _add_method_flags(p: argparse.ArgumentParser) -> None:
    """Other local-learning methods and their recipe (docs/methods.md): the flags of
    AugLocal's train.py (ChenxiangMA/AugLocal, commit 98c90d6), under this project's
    spelling, then each registered method's own flags (methods/registry.py: a method
    brings them in its one file). Every default leaves the paper's runs as they were."""
    a = p.add_argument
    methods = "; ".join(f"{m.name}: {m.summary}" for m in registry.registry().methods.values())
    a("--method", default="paper", help=f"the local heads ({methods}; docs/methods.md); every network takes "
      "every method, but infopro needs conv blocks only (not the mlp; a VGG with --num-layers 0)")
    a("--local-modules", type=int, default=0, help="K, the gradient-isolated modules of a ResNet "
      "(0: one per layer, 16 for resnet32, 55 for resnet110; 1: end-to-end)")
    a("--ixy-1", type=float, default=1.0, help="weight of the cross-entropy at the first local head "
      "(dgl, infopro, auglocal)")
    a("--ixy-2", type=float, default=1.0, help="... at the last local head; linear in between")
    a("--nesterov", action="store_true", help="SGD with Nesterov momentum (--optim sgd)")
    a("--lr-schedule", default="milestones", help="milestones (--lr-decay-milestones, the paper) | "
      "cosine-warmup (AugLocal's train.py --cos_lr: 10 warm-up epochs from 0.01, then cosine over --epochs)")
    a("--val-examples", type=int, default=0, help="hold out N training examples as a validation split "
      "(the same for every seed: locallearn/data/batches.py); its error picks the validation-selected epoch; "
      "0: none, the whole training set trains")
    a("--placement", default="auglocal", help="where a ResNet's local heads sit: auglocal (after layers 0 .. "
      "K-2, AugLocal's networks/configs.py) | infopro (InfoPro's networks/configs.py, K = 2, 3, 4, 8, 16)")
    a("--no-output-scale", action="store_true", help="predsim: the output loss unscaled (AugLocal's PredSim) "
      "instead of times 1 - beta (the paper's reference)")
    for _, flag in registry.method_flags():
        if flag.type is bool:
            a(flag.name, action="store_true", help=flag.help)
        else:
            a(flag.name, type=flag.type, default=flag.default, help=flag.help)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag raises ConfigError (one line from the CLI) instead of
    printing the whole usage and exiting from inside the parser."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")

    def parse_known_args(self, args=None, namespace=None):
        """argparse, but `--flag=--` is refused: Python 3.11's argparse gives it an empty
        list instead of a value (or of at least one value, for nargs="+")."""
        parsed, extra = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            if action.option_strings and isinstance(value, list) and (
                    (action.nargs is None and not isinstance(action.default, list))
                    or (action.nargs == "+" and not value)):
                wanted = "one argument" if action.nargs is None else "at least one argument"
                self.error(f"argument {'/'.join(action.option_strings)}: expected {wanted}")
        return parsed, extra


TRAIN_DESCRIPTION = """Train one network with local error signals into --out: metrics.json (written
last), a checkpoint each epoch. Rerunning the same command resumes from the last
checkpoint; a finished run is recognised and not trained again. The defaults are the
reference's (vgg8b on CIFAR-10, predsim, 400 epochs): name the recipe's flags."""

TRAIN_EXAMPLES = """Examples. The paper's Fashion-MNIST mlp with predsim, as the workflow's grid
(workflow/config/cells.tsv) runs it:

  locallearn train --model mlp --dataset FashionMNIST --num-layers 3 \\
      --num-hidden 1024 --nonlin leakyrelu --dropout 0.025 --epochs 200 \\
      --lr-decay-milestones 100 150 175 188 --out runs/fmnist-mlp-predsim

A quick run on the CPU (--download fetches MNIST into the data dir once; --mlflow-uri ""
logs nowhere):

  locallearn train --model mlp --dataset MNIST --num-hidden 256 --epochs 2 \\
      --max-train-examples 5000 --device cpu --download --mlflow-uri "" \\
      --out runs/quick

One cell of the workflow's grid, exactly as its train rule runs it (the same folder,
config hash and MLflow run; --preset full by default, or quick, peers, infopro, ...):

  locallearn train --cell fmnist-mlp-predsim --seed 2 --preset quick

Resuming: run the same command again; it continues from the last checkpoint in --out, and
a finished run is not trained again. --resume continues a checkpoint of the same recipe
from another folder:

  locallearn train ... --resume runs/quick/checkpoint.pt --out runs/quick-more"""

# The train parser's argument groups, in the order --help shows them: a title and what
# its flags decide. The method group's flags are _add_method_flags'.
FLAG_GROUPS = {
    "what is trained": "the network and the dataset",
    "local losses": "the local heads' losses (the paper's), or plain backprop",
    "method": "other local-learning methods and their recipe (docs/methods.md); every default "
              "leaves the paper's runs as they were",
    "optimisation": "optimizer and learning-rate schedule",
    "data": "where the data is, how much of it, and how it is augmented and sampled",
    "running": "where the run writes and how it executes (--seed, --engine and --precision are "
               "part of the recipe; the others are not)",
    "tracking": "the MLflow run (docs/mlflow.md)",
}


def build_parser(prog: str = "locallearn train", description: str = TRAIN_DESCRIPTION,
                 epilog: str | None = None) -> argparse.ArgumentParser:
    """The train flags (also describe's and bench's), in FLAG_GROUPS; `epilog` after them
    (default: the examples, for `locallearn train` only). The groups only arrange the help:
    every flag's dest, default and type, and the order they are added in, are those of one
    flat parser, so the config hash does not depend on them."""
    if epilog is None and prog == "locallearn train":
        epilog = TRAIN_EXAMPLES
    p = _Parser(prog=prog, description=description, epilog=epilog, formatter_class=HelpFormatter,
                usage="%(prog)s [--model NET] [--dataset DATA] ... [flag ...]")
    p.flag_groups = {title: p.add_argument_group(title, text) for title, text in FLAG_GROUPS.items()}
    _add_reference_flags(p)
    _add_project_flags(p)
    _add_method_flags(p.flag_groups["method"])
    # Flags with fixed choices show them as their value, {a,b,...}; they are checked in
    # check() (a clearer error than argparse's choices=), not by the parser.
    # Numbers show as N (an integer) or X (a real).
    fixed = {**CHOICES, "model": MODEL_NAMES, "method": registry.names()}
    for action in p._actions:
        if action.metavar is not None or action.choices is not None or not action.option_strings:
            continue
        if action.dest in fixed:
            action.metavar = "{" + ",".join(fixed[action.dest]) + "}"
        elif action.type in (int, float):
            action.metavar = "N" if action.type is int else "X"
    return p


CHOICES = {
    "nonlin": ("relu", "leakyrelu"),
    "loss_sup": ("pred", "sim", "predsim"),
    "loss_unsup": ("none", "sim", "recon"),
    "optim": ("adam", "amsgrad", "sgd"),
    "engine": ("fused", "reference", "modulewise"),   # the engines' names: train/engines.py registers each by one
    "precision": ("fp32", "tf32", "bf16"),  # host/precision.py's PRECISIONS is this list
    "lr_schedule": ("milestones", "cosine-warmup"),
    "svhn_split": SVHN_SPLITS,
    "crop_fill": CROP_FILLS,
    "placement": PLACEMENTS,
    "dataset": DATASETS,
}


def flag_name(dest: str) -> str:
    """The flag a user types for a Namespace field: --num-hidden for num_hidden, but
    --n_holes as the reference spells it."""
    return "--" + (dest if dest == "n_holes" else dest.replace("_", "-"))


def validate(args: argparse.Namespace) -> argparse.Namespace:
    """Reject values that cannot run (check_all); then settle --out and take the
    credentials out of --mlflow-uri."""
    check_all(args)
    if args.out is None:
        args.out = args.save_dir or DEFAULT_OUT
    # A password in the URI would be recorded with the config (metrics.json, MLflow
    # params): it moves to MLflow's own variables here, before anything sees the config.
    args.mlflow_uri = take_credentials(args.mlflow_uri)
    return args


def check_all(args: argparse.Namespace) -> None:
    """Every check of a train command's flags, raising ConfigError with a message that
    names the flag; no side effects (the workflow plan runs it on every job's flags
    before any job starts)."""
    if args.model not in MODEL_NAMES:
        raise ConfigError(f"--model: unknown model {args.model!r} (known: {', '.join(sorted(MODEL_NAMES))})")
    check(args)
    check_method(args, RESNET_BLOCKS)


def check_method(args: argparse.Namespace, depths) -> None:
    """The method and the network fit together (`depths`: the ResNets'); each method's own
    check and its flags' checks (methods/registry.py)."""
    def bad(flag: str, msg: str) -> None:
        raise ConfigError(f"{flag_name(flag)}: {msg}")
    method = registry.get(args.method)   # ConfigError naming --method for an unknown or broken one
    for _, flag in registry.method_flags():
        problem = flag.check(getattr(args, flag.dest)) if flag.check else None
        if problem:
            bad(flag.dest, problem)
    problem = method.check(args) if method.check else None
    if problem:
        raise ConfigError(problem)
    if args.method != "paper" and args.bio:
        bad("bio", f"the paper's bio heads only; {args.method}'s heads have their own")
    if args.placement != "auglocal" and args.model not in depths:
        bad("placement", f"{args.model} has a head on every block; only the ResNets' heads can be placed")
    if args.placement != "auglocal" and method.module_count:
        bad("placement", f"{args.method} sets its own module count (AugLocal's K - d), on AugLocal's placement only")
    if args.local_modules and args.model not in depths:
        bad("local-modules", f"{args.model} has a head on every block; only the ResNets are split into K modules")
    if args.local_modules < 0:
        bad("local-modules", f"must be >= 0, got {args.local_modules}")
    if method.needs_image and args.pipeline_stages > 1:
        bad("method", f"{args.method}'s heads read the input image, which only the first pipeline stage has")
    if args.model in depths and (args.bio or args.no_detach):
        bad("bio" if args.bio else "no-detach", f"not implemented for {args.model}")
    if args.nesterov and (args.optim != "sgd" or args.momentum <= 0):
        bad("nesterov", "needs --optim sgd and --momentum > 0")


def check(args: argparse.Namespace) -> None:
    """The checks of single flags and their combinations (check_all adds the network's
    and the method's), raising ConfigError."""
    def bad(flag: str, msg: str) -> None:
        raise ConfigError(f"{flag_name(flag)}: {msg}")

    for key, allowed in CHOICES.items():
        if getattr(args, key) not in allowed:
            bad(key, f"unknown value {getattr(args, key)!r} (known: {', '.join(allowed)})")
    positive = ("batch_size", "eval_batch_size", "epochs", "num_hidden", "dim_in_decoder", "target_proj_size",
                "n_holes")
    for key in positive:
        if getattr(args, key) <= 0:
            bad(key, f"must be positive, got {getattr(args, key)}")
    for key in ("num_layers", "classes_per_batch", "classes_per_batch_until_epoch",
                "max_train_examples", "max_test_examples", "threads", "length", "val_examples"):
        if getattr(args, key) < 0:
            bad(key, f"must be >= 0, got {getattr(args, key)}")
    if not 0 <= args.seed < 2**64:  # torch.manual_seed's range, non-negative as numpy's SeedSequence
        bad("seed", f"must be in [0, 2**64), got {args.seed}")
    # Training batches of one example are dropped (BatchNorm cannot normalise one):
    # with one example per batch, or in all, nothing would train.
    if args.batch_size == 1:
        bad("batch_size", "must be at least 2: a batch of one example is dropped, so nothing would train")
    if args.max_train_examples == 1:
        bad("max_train_examples", "must be 0 (all) or at least 2: a batch of one example is dropped, "
            "so nothing would train")
    if args.model == "mlp" and args.num_layers == 0:
        bad("num-layers", "mlp needs at least one hidden layer")
    for key in ("feat_mult", "dropout", "alpha", "beta", "lr", "momentum", "weight_decay", "lr_decay_fact"):
        if not math.isfinite(getattr(args, key)):
            bad(key, f"must be a finite number, got {getattr(args, key)}")
    if not (math.isfinite(args.heartbeat) and args.heartbeat >= 0):
        bad("heartbeat", f"must be a number of seconds >= 0, got {args.heartbeat}")
    for key in ("momentum", "weight_decay"):  # torch.optim refuses negative ones, with a traceback
        if getattr(args, key) < 0:
            bad(key, f"must be >= 0, got {getattr(args, key)}")
    if args.lr_decay_fact <= 0:
        bad("lr_decay_fact", f"must be positive, got {args.lr_decay_fact}")
    if args.feat_mult <= 0:
        bad("feat-mult", f"must be positive, got {args.feat_mult}")
    if args.lr <= 0:
        bad("lr", f"must be positive, got {args.lr}")
    if not 0 <= args.dropout < 1:
        bad("dropout", f"must be in [0, 1), got {args.dropout}")
    if not 0 <= args.beta <= 1:
        bad("beta", f"must be in [0, 1], got {args.beta}")
    if not 0 <= args.alpha <= 1:
        bad("alpha", f"must be in [0, 1], got {args.alpha}")
    ms = args.lr_decay_milestones
    if any(b <= a for a, b in zip(ms, ms[1:])) or any(m < 0 for m in ms):
        bad("lr-decay-milestones", f"must be non-negative and strictly increasing, got {ms}")
    if args.bio and args.backprop:
        bad("bio", "--bio trains local heads; it cannot be combined with --backprop")
    if args.no_detach and args.backprop:
        bad("no-detach", "--no-detach changes local training; it has no meaning with --backprop")
    check_data(args)
    if args.cutout and args.length == 0:
        bad("length", "cutout needs a square side > 0")
    if args.save_dir and args.out is not None and Path(args.out) != Path(args.save_dir):
        bad("save-dir", f"is an alias of --out; they name two folders ({args.save_dir!r}, {args.out!r})")
    for t in args.tag:
        if "=" not in t:
            bad("tag", f"expected KEY=VALUE, got {t!r}")
    uri = args.mlflow_uri or ""
    try:
        urlsplit(uri)
    except ValueError as e:
        bad("mlflow_uri", f"not a valid URI ({e})")
    if "@" in uri and redact_uri(uri) == uri and uri.split("://")[0] not in ("sqlite", "file"):
        # user-info that take_credentials cannot take out: it would be recorded as it is
        bad("mlflow_uri", "has '@' but no scheme://user:password@host form; expected e.g. http://host:port, "
            "with credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the URI is not "
            "repeated here: it may hold a password)")


def check_data(args: argparse.Namespace) -> None:
    """The data flags fit the dataset (recipe/specs.py: run_spec)."""
    def bad(flag: str, msg: str) -> None:
        raise ConfigError(f"{flag_name(flag)}: {msg}")
    spec = SPECS[args.dataset]
    if args.svhn_split != "train+extra" and args.dataset != "SVHN":
        bad("svhn_split", f"only SVHN has a choice of training split, not {args.dataset}")
    if args.crop_padding is not None and args.crop_padding < 0:
        bad("crop_padding", f"must be >= 0, got {args.crop_padding}")
    if args.hflip not in (None, "yes", "no"):
        bad("hflip", f"unknown value {args.hflip!r} (known: yes, no)")
    for key in ("pixel_mean", "pixel_std"):
        values = getattr(args, key)
        if values is None:
            continue
        if len(values) != spec.channels:
            bad(key, f"{args.dataset} has {spec.channels} channel(s), got {len(values)} value(s)")
        if not all(math.isfinite(v) for v in values) or (key == "pixel_std" and min(values) <= 0):
            bad(key, f"must be finite{' and positive' if key == 'pixel_std' else ''}, got {values}")
    if args.num_classes < 0:
        bad("num_classes", f"must be >= 0, got {args.num_classes}")
    if args.num_classes and args.num_classes < spec.num_classes:
        bad("num_classes", f"{args.dataset} has {spec.num_classes} classes; the classifier needs at least "
            f"that many outputs, got {args.num_classes}")


def stage_count_error(cfg, stages: int) -> str | None:
    """Why the recipe cannot run as `stages` pipeline stages, or None. The one home of
    this check: the trainer (stagesplit.check_config) and the workflow
    (plan.pipeline_stages) both ask it."""
    if stages < 1:
        return f"--pipeline-stages: must be >= 1, got {stages}"
    if stages == 1:
        return None
    if cfg.backprop or cfg.no_detach:
        flag = "--backprop" if cfg.backprop else "--no-detach"
        return (f"{flag} cannot be combined with --pipeline-stages {stages}: only local training with "
                "detached block inputs is pipelined exactly (gradients would have to flow back "
                "across stages); drop --pipeline-stages or the flag")
    blocks = hidden_blocks(cfg, registry.get(cfg.method).module_count)
    if stages > blocks:
        return f"--pipeline-stages {stages}: the network has only {blocks} hidden blocks to split"
    return None


def parse_train_args(argv: list[str]) -> argparse.Namespace:
    return validate(build_parser().parse_args(argv))


def argv_of(cfg: argparse.Namespace) -> list[str]:
    """Train flags that parse back to `cfg`: every flag away from its default. The
    pipeline's launcher hands them to its stage processes; headers of train.log show them."""
    out = []
    for action in build_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(cfg, action.dest, action.default)
        if value == action.default and type(value) is type(action.default):   # 1.0 is not 1 to the hash
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse.BooleanOptionalAction):   # --flag / --no-flag
            out += [action.option_strings[0] if value else action.option_strings[1]]
        elif action.nargs == 0:                     # store_true
            out += [flag] if value else []
        elif isinstance(value, list) and action.nargs is None:   # append: --tag K=V --tag ...
            for v in value:
                out += [flag, str(v)]
        elif isinstance(value, list):             # nargs="+" / "*"
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


# Fields that say where or how a run is watched, not what it computes, and reference
# flags that compute nothing here (pre_act: the reference reads it only in ResNets).
# Everything else is the recipe: it decides every number, so it decides whether a
# checkpoint may be continued.
NON_RECIPE = {
    "out", "set_aside_to", "job_log", "data_dir", "download", "device", "no_cuda", "progress_bar", "heartbeat",
    "no_print_stats",
    "resume", "save_dir", "threads", "mlflow_uri", "mlflow_experiment", "mlflow_system_metrics",
    "run_name", "tag",
    "debug", "eval_batch_size", "pipeline_stages", "stage_devices",
    "pipeline_balance", "no_cuda_graph", "pre_act", "channels_last", "cudnn_benchmark",
}


# The recipe fields of the first runs ever recorded (the committed ones among them).
# They always enter the recipe. A flag added since enters it only when set away from
# its default, so adding a flag never changes the config_hash of an earlier run: it is
# neither retrained nor refused (tests/test_run_state.py, with a committed metrics.json).
FIRST_RECIPE = frozenset({
    "alpha", "backprop", "batch_size", "beta", "bio", "classes_per_batch", "classes_per_batch_until_epoch",
    "cutout", "dataset", "dim_in_decoder", "dropout", "engine", "epochs", "feat_mult", "length", "loss_sup",
    "loss_unsup", "lr", "lr_decay_fact", "lr_decay_milestones", "max_test_examples", "max_train_examples",
    "model", "momentum", "n_holes", "no_batch_norm", "no_detach", "no_similarity_std", "nonlin",
    "num_hidden", "num_layers", "optim", "precision", "seed", "target_proj_size", "weight_decay",
})


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:
    return dict(vars(build_parser().parse_args([])))


def recipe_dict(args: argparse.Namespace | dict) -> dict:
    """The fields of a run's config (flags, or a recorded config dict) that decide its
    numbers (see FIRST_RECIPE)."""
    defaults = _defaults()
    fields = args if isinstance(args, dict) else vars(args)
    return {k: v for k, v in sorted(fields.items())
            if k not in NON_RECIPE and (k in FIRST_RECIPE or k not in defaults or v != defaults[k])}


def config_hash(args: argparse.Namespace) -> str:
    blob = json.dumps(recipe_dict(args), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
