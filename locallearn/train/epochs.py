"""One pass over a split, driving any engine (train/engines.py): an epoch's training batches,
a training epoch, an evaluation, and the per-block local statistics. train_epoch and
evaluate return sums, turned into a history entry by fit.history_entry."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..faults import fault
from ..host import precision
from ..data.sampler import classes_per_batch_at


def epoch_batches(cfg, train, epoch: int):
    """This epoch's training batches: the class-per-batch sampler's order while it is
    on (sampler.classes_per_batch_at), else a plain shuffle."""
    cpb = classes_per_batch_at(cfg.classes_per_batch, cfg.classes_per_batch_until_epoch, epoch)
    order = train.order(cfg.seed, epoch, cpb, cfg.batch_size)
    return train.train_batches(order, cfg.batch_size, cfg.seed, epoch)


def add_local_stats(cfg, local_sum, local_wrong, losses, stats, y) -> None:
    """Accumulate one batch's per-block local losses (batch-weighted) and local pred
    errors (where a decoder predicts the classes: pred/predsim without --bio)."""
    local_sum += torch.stack(losses).float() * y.shape[0]
    for k, st in enumerate(stats):
        if "pred_logits" in st and not cfg.bio:
            local_wrong[k] += (st["pred_logits"].detach().argmax(1) != y).sum()


def no_progress(it, total, desc):
    return it


def train_epoch(cfg, engine, train, epoch: int, autocast, progress=no_progress) -> dict:
    """One pass over the training split: sums of the examples seen, output loss and
    errors (where this engine has the output layer), and each block's local loss and
    errors. Sums stay on the device and are read once at the end: a .item() per step
    would stall a GPU every batch."""
    model, device = engine.model, engine.device
    model.train()
    model.seed_dropout(cfg.seed, epoch)
    blocks = engine.blocks if not cfg.backprop else []
    ce_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device)
    local_sum = torch.zeros(len(blocks), device=device)
    local_wrong = torch.zeros(len(blocks), device=device)
    seen = 0
    total = -(-train.n // cfg.batch_size) if train is not None else None
    for i, (x, y) in enumerate(progress(engine.train_batches(train, epoch), total=total, desc=f"epoch {epoch}")):
        if i == 2:
            fault("kill-mid-epoch", epoch)
            fault("term-mid-epoch", epoch)
        y_onehot = F.one_hot(y, model.num_classes).float()
        logits, ce, losses, stats = engine.step(x, y, y_onehot, autocast)
        engine.pass_on(engine.out, y)
        b = y.shape[0]
        seen += b
        if logits is not None:
            ce_sum += ce.detach() * b
            wrong += (logits.detach().argmax(1) != y).sum()
        if blocks:
            add_local_stats(cfg, local_sum, local_wrong, losses, stats, y)
    engine.end_phase()
    return {"seen": seen, "ce_sum": ce_sum, "wrong": wrong, "local_sum": local_sum, "local_wrong": local_wrong,
            "layers": [b.index for b in blocks]}


@torch.no_grad()
def evaluate(cfg, engine, test, autocast) -> dict:
    """The output layer in eval mode over the whole test split: wrong predictions and
    the summed cross-entropy (zero on a stage without the output layer)."""
    engine.model.eval()
    wrong, ce_sum = 0, 0.0
    for x, y in engine.eval_batches(test):
        out, logits = engine.infer(x, autocast)
        engine.pass_on(out, y)
        if logits is not None:
            ce_sum += F.cross_entropy(precision.loss_input(logits), y, reduction="sum").item()
            wrong += (logits.argmax(1) != y).sum().item()
    engine.end_phase()
    return {"wrong": wrong, "ce_sum": ce_sum}
