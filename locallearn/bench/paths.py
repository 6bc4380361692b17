"""`locallearn bench`: time epochs of one recipe on several training paths, in one run.
(`locallearn bench --grid`, the grid's cost, is bench/gridbench.py.)

Paths (each trains from the same initial weights for --epochs, then evaluates):
  reference-pil   the reference scheme: our reimplementation of the authors' training
                  scheme (engines.ReferenceEngine: per-block optimizers stepping inside
                  the forward pass), fed as theirs is, by a torchvision per-sample PIL
                  transform DataLoader; not the authors' code
  fused           all losses summed, one backward, one fused step, batches augmented
                  on the device from a uint8 tensor held there (in --precision)
  fused-bf16      the same under bfloat16 autocast
  modulewise      the local-learning peers' scheme (engines.ModulewiseEngine: a backward
                  per local loss inside the forward pass, one step), batches as fused;
                  `--paths modulewise fused` compares it with the fused step on any
                  method (e.g. --model resnet32 --method auglocal)

With --pipeline-stages S the paths are instead `fused` in one process with all the
threads (--threads T, default: every core) against `pipeline-S`: S stage processes of
T/S threads each (train/pipeline.py), and each stage's share of the epoch spent waiting for
its neighbours (the overlap the pipeline achieved).

Printed per path: seconds per epoch, images per second, achieved GFLOP/s (multiply-
adds of forward and backward, local heads included, as recipe/cost.py counts them, which is
what torch's FlopCounterMode counts (tests/test_cost.py): 2 FLOP per multiply-add) and
the test error after the timed epochs. Ratios are taken within one run, so a noisy
machine affects all paths alike.
"""
from __future__ import annotations

import copy
import os
import time

import torch
import torch.nn.functional as F

from ..host import precision
from ..recipe.config import build_parser, validate
from ..recipe.cost import network_cost
from ..errors import ConfigError

PATHS = ("reference-pil", "fused", "fused-bf16", "modulewise")
DEFAULT_PATHS = ("reference-pil", "fused", "fused-bf16")


def _pil_loader(cfg, spec, images, labels):
    """The authors' input pipeline: PIL image per sample, torchvision transforms."""
    from PIL import Image
    from torchvision import transforms as T

    tf = []
    if spec.crop_padding:
        tf.append(T.RandomCrop(spec.size, padding=spec.crop_padding,
                               padding_mode="reflect" if spec.crop_fill == "reflect" else "constant"))
    if spec.hflip:
        tf.append(T.RandomHorizontalFlip())
    tf += [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    tf = T.Compose(tf)
    mode = "L" if spec.channels == 1 else "RGB"

    class PilDataset(torch.utils.data.Dataset):
        def __len__(self):
            return images.shape[0]

        def __getitem__(self, i):
            img = images[i].permute(1, 2, 0).squeeze(-1).numpy()
            return tf(Image.fromarray(img, mode=mode)), int(labels[i])

    return torch.utils.data.DataLoader(PilDataset(), batch_size=cfg.batch_size, shuffle=True)


def bench(cfg, paths, synthetic: bool = False) -> list[dict]:
    from ..data.batches import DeviceSplit, load_splits
    from ..recipe.specs import run_spec
    from ..train.engines import ENGINES
    from ..train.placement import make_model
    from ..train.epochs import evaluate, train_epoch
    from ..host.machine import prepare

    device = prepare(cfg, cfg.threads)
    if synthetic:  # right shapes, random pixels: for speed on machines without the data
        spec = run_spec(cfg)
        n = cfg.max_train_examples or spec.train_size
        g = torch.Generator().manual_seed(0)
        imgs = torch.randint(0, 256, (n, spec.channels, spec.size, spec.size), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, spec.num_classes, (n,), generator=g)
        train = DeviceSplit(imgs, labels, spec, device)
        test = DeviceSplit(imgs[:1000], labels[:1000], spec, device)
    else:
        train, test, spec = load_splits(cfg, device)
    try:
        flops_per_epoch = 2 * network_cost(cfg).train_macs * train.n
    except ConfigError:   # no cost model for this network (the ResNets): no GFLOP/s
        flops_per_epoch = float("nan")
    results = []
    for path in paths:
        if path.startswith("pipeline-"):
            results.append(_pipeline_path(cfg, int(path.split("-")[1]), flops_per_epoch))
            continue
        engine_name = {"reference-pil": "reference", "modulewise": "modulewise"}.get(path, "fused")
        model = make_model(cfg, spec, device)
        path_cfg = copy.copy(cfg)
        path_cfg.precision = "bf16" if path.endswith("bf16") else cfg.precision  # the engine keys its graphs on it
        precision.apply(path_cfg.precision)
        engine = ENGINES[engine_name](path_cfg, model, device)
        autocast = precision.autocast(path_cfg.precision, device)
        seconds = []
        for epoch in range(1, cfg.epochs + 1):
            engine.set_lr(cfg.lr)
            t0 = time.perf_counter()
            if path == "reference-pil":
                _reference_epoch(cfg, engine, _pil_loader(cfg, spec, train.images.cpu(), train.labels.cpu()),
                                 device, autocast, epoch)
            else:
                train_epoch(cfg, engine, train, epoch, autocast)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - t0)
        err = evaluate(cfg, engine, test, autocast)["wrong"] * 100 / test.n
        s = min(seconds)
        results.append({"path": path, "images_per_epoch": train.n, "seconds_per_epoch": s,
                        "images_per_second": train.n / s,
                        "gflops_per_second": flops_per_epoch / s / 1e9, "test_error": err})
    return results


def _pipeline_path(cfg, stages: int, flops_per_epoch: float) -> dict:
    """One pipelined run of the same recipe in a scratch folder; its history holds each
    epoch's training seconds (the slowest stage) and every stage's waits."""
    import tempfile

    from ..train.trainer import run
    c = copy.copy(cfg)
    c.pipeline_stages, c.stage_devices, c.mlflow_uri = stages, None, ""
    c.threads = max(1, (cfg.threads or os.cpu_count() or 1) // stages)
    with tempfile.TemporaryDirectory(prefix="locallearn-bench-") as out:
        c.out = out
        m = run(c)   # the owner of the folder launches the stages (torchrun)
    best = min(m["history"], key=lambda e: e["epoch_seconds"])
    s = best["epoch_seconds"]
    return {"path": f"pipeline-{stages}", "seconds_per_epoch": s, "images_per_second": best["images_per_second"],
            "gflops_per_second": flops_per_epoch / s / 1e9, "test_error": m["test_error"],
            "threads_per_stage": c.threads, "bounds": m["pipeline"]["bounds"],
            "stage_waits": best["stage_wait_seconds"]}


def _reference_epoch(cfg, engine, loader, device, autocast, epoch):
    engine.model.train()
    engine.model.seed_dropout(cfg.seed, epoch)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        engine.step(x, y, F.one_hot(y, engine.model.num_classes).float(), autocast)


def cli_bench(argv: list[str]) -> int:
    p = build_parser("locallearn bench", __doc__)
    p.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS), choices=PATHS, help="the paths to time")
    p.add_argument("--synthetic", action="store_true", help="random inputs of the dataset's shape")
    epochs = next(a for a in p._actions if a.dest == "epochs")
    epochs.default, epochs.help = 1, "epochs each path trains; the fastest one is reported"
    args = p.parse_args(argv)
    paths, synthetic = args.paths, args.synthetic
    del args.paths, args.synthetic
    cfg = validate(args)
    stages = cfg.pipeline_stages
    if stages > 1:
        from ..train.stagesplit import check_config
        check_config(cfg)
        if synthetic:
            raise ConfigError("--pipeline-stages: the pipelined path reads the real dataset; drop --synthetic")
        paths = ["fused", f"pipeline-{stages}"]
        cfg.pipeline_stages = 1  # the in-process paths
        cfg.threads = cfg.threads or os.cpu_count() or 1
    rows = bench(cfg, paths, synthetic)
    base_path = "fused" if stages > 1 else ("modulewise" if "modulewise" in paths else "reference-pil")
    base = next((r for r in rows if r["path"] == base_path), None)
    dev = "cuda" if torch.cuda.is_available() and not cfg.no_cuda and cfg.device != "cpu" else "cpu"
    loss = "backprop" if cfg.backprop else (cfg.loss_sup if cfg.method == "paper" else cfg.method)
    print(f"# {cfg.model} {cfg.dataset} {loss}, batch {cfg.batch_size}, "
          f"{rows[0]['images_per_epoch'] if rows else 0} images/epoch, "
          f"device {dev}, threads {torch.get_num_threads()}, precision {cfg.precision}, best of {cfg.epochs} epoch(s)")
    print(f"{'path':<15}{'s/epoch':>10}{'img/s':>10}{'GFLOP/s':>10}{'speed-up':>10}{'test err %':>12}")
    for r in rows:
        speed = f"{base['seconds_per_epoch'] / r['seconds_per_epoch']:.2f}x" if base else "-"
        print(f"{r['path']:<15}{r['seconds_per_epoch']:>10.2f}{r['images_per_second']:>10.0f}"
              f"{r['gflops_per_second']:>10.1f}{speed:>10}{r['test_error']:>12.2f}")
    for r in rows:
        if "stage_waits" not in r:
            continue
        s = r["seconds_per_epoch"]
        print(f"# {r['path']}: {len(r['bounds'])} processes x {r['threads_per_stage']} thread(s); "
              f"fused: 1 process x {cfg.threads} threads")
        for k, ((a, b), w) in enumerate(zip(r["bounds"], r["stage_waits"])):
            print(f"#   stage {k} (layers {a}..{b - 1}): waits {w['recv']:.2f} s for input, "
                  f"{w['send']:.2f} s for sends; busy {100 * (1 - (w['recv'] + w['send']) / s):.0f}% of the epoch")
    return 0
