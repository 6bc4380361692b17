"""The paper's semantics against oracles written here from docs/method.md, on the model's
own weights: a conv block's pred/predsim loss with the decoder pooling, where dropout
sits (the local losses see h, the next block gets the dropped-out h), and the update
of --no-detach and of the detached default. tests/test_engines.py checks the fused
engine against the reference engine; these catch a mistake made in both."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import batches, flags
from locallearn.train.engines import ENGINES
from locallearn.layers.local_losses import LocalHead
from locallearn.layers.localnet import Block
from locallearn.nets.models import build_model
from locallearn.seeding import derive_seed

NOOP = torch.autocast("cpu", enabled=False)


def small_vgg(*extra):
    # vgg8b at 1/16 width (8 16 M 16 32 M 32 M 32 M) on 16x16 inputs; dim-in-decoder 64
    # forces the decoder pooling in every conv block.
    return flags("--model", "vgg8b", "--feat-mult", "0.0625", "--num-layers", "1", "--num-hidden", "32",
                 "--dim-in-decoder", "64", *extra)


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# ------------------------------------------------------ the oracle, numpy (docs/method.md)
def cross_entropy(z: np.ndarray, y: np.ndarray) -> float:
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def similarity(a: np.ndarray) -> np.ndarray:
    """S(X): a map with more than 3 channels and height > 1 becomes each channel's
    standard deviation over positions; rows centred, scaled by 1e-8 + their norm."""
    if a.ndim == 4:
        a = a.reshape(a.shape[0], a.shape[1], -1).std(axis=2, ddof=1) if a.shape[1] > 3 and a.shape[2] > 1 \
            else a.reshape(a.shape[0], -1)
    c = a - a.mean(axis=1, keepdims=True)
    n = c / (1e-8 + np.sqrt((c ** 2).sum(axis=1, keepdims=True)))
    return np.clip(n @ n.T, -1, 1)


def avg_pool(h: np.ndarray, kernel, pad) -> np.ndarray:
    """Average over windows of `kernel`, stride = kernel, on h padded with zeros that
    count in the average; a window must start inside the padded map's last kernel."""
    (kh, kw), (ph, pw) = kernel, pad
    hp = np.pad(h, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (hp.shape[2] - kh) // kh + 1, (hp.shape[3] - kw) // kw + 1
    out = np.empty(h.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = hp[:, :, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw].sum(axis=(2, 3)) / (kh * kw)
    return out


def conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """3x3 convolution (cross-correlation), stride 1, zero padding 1, no bias."""
    H, W = x.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(np.einsum("oc,bchw->bohw", w[:, :, i, j], xp[:, :, i:i + H, j:j + W])
               for i in range(3) for j in range(3))


def local_loss(head: LocalHead, h: np.ndarray, y: np.ndarray, kernel=None, pad=(0, 0)) -> float:
    """pred, sim or predsim of one block's activation h, from the head's weights;
    `kernel`: the decoder pooling of a conv block (None: none)."""
    loss_sup = head.loss_sup
    pred = sim = 0.0
    if loss_sup in ("pred", "predsim"):
        z = (avg_pool(h, kernel, pad) if kernel is not None else h).reshape(len(h), -1)
        pred = cross_entropy(z @ np_(head.decoder.weight).T + np_(head.decoder.bias), y)
    if loss_sup in ("sim", "predsim"):
        w = np_(head.sim_layer.weight)
        feats = conv3x3(h, w) if h.ndim == 4 else h @ w.T
        sim = float(((similarity(feats) - similarity(np.eye(10)[y])) ** 2).mean())
    return {"pred": pred, "sim": sim, "predsim": (1 - head.beta) * pred + head.beta * sim}[loss_sup]


def randomise_decoders(model_or_head: nn.Module, seed: int = 3) -> None:
    """The reference starts decoders (and the output layer) at zero, where cross-entropy
    is log(10) whatever h is and nothing reaches h; give them values as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model_or_head.named_parameters():
            if "decoder" in name or name.startswith("output."):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# ------------------------------------------------------------- 1. conv block's pred by hand
# The reference's rule (anokland/local-loss train.py at 7b3b40b, LocalLossBlockConv.__init__) worked
# by hand for the small vgg8b: kh doubles, then kw, until C * ceil(S/kh) * ceil(S/kw) <= 64.
#   block  C x S x S    kernel   decoder input
#   0      8 x 16 x 16  (8, 4)   8 * 2 * 4
#   1     16 x 16 x 16  (8, 8)  16 * 2 * 2
#   2     16 x  8 x  8  (4, 4)  16 * 2 * 2
#   3     32 x  8 x  8  (8, 4)  32 * 1 * 2
#   4     32 x  4 x  4  (4, 2)  32 * 1 * 2
#   5     32 x  2 x  2  (2, 1)  32 * 1 * 2
SMALL_VGG_KERNELS = [(8, 4), (8, 8), (4, 4), (8, 4), (4, 2), (2, 1)]


@pytest.mark.parametrize("loss_sup, beta", [("pred", "0.99"), ("predsim", "0.5"), ("predsim", "0.99")])
def test_conv_block_losses_by_hand_with_decoder_pooling(loss_sup, beta):
    """Every conv block of a small VGG: h average-pooled with the kernel written above
    (no padding at these sides), flattened channel-major, the linear decoder, cross-entropy;
    under predsim also the 3x3 similarity conv, each channel's std over positions, the
    similarity matrices' mean squared difference. Numpy on the block's h and weights."""
    cfg = small_vgg("--loss-sup", loss_sup, "--beta", beta)
    torch.manual_seed(0)
    model = build_model(cfg, 3, 16, 10)
    model.train()
    randomise_decoders(model)
    seen = []
    for b in model.blocks:
        b.register_forward_hook(lambda m, inp, out: seen.append(out[0].detach()))
    [(x, y)] = batches(1, (3, 16, 16))
    _, losses, _ = model(x, y, F.one_hot(y, 10).float())

    conv = [b for b in model.blocks if b.conv]
    assert [b.head.pool.kernel for b in conv] == SMALL_VGG_KERNELS
    for k, b in enumerate(conv):
        want = local_loss(b.head, np_(seen[k]), y.numpy(), SMALL_VGG_KERNELS[k])
        assert losses[k].item() == pytest.approx(want, rel=1e-5), f"conv block {k}"


@pytest.mark.parametrize("loss_sup", ["pred", "predsim"])
def test_decoder_pooling_with_padding_by_hand(loss_sup):
    """An odd side: 4 x 7 x 7 with dim_in_decoder 16. By the reference's rule kh = kw = 4,
    output side ceil(7/4) = 2, padding (4 * (2 - 7//4)) // 2 = 2: windows over padded rows
    -2..1 and 2..5 (row 6 falls outside), zeros counted, divided by 16."""
    cfg = flags("--loss-sup", loss_sup, "--beta", "0.5", "--dim-in-decoder", "16")
    torch.manual_seed(0)
    head = LocalHead(cfg, 4, 7, 4, 10, first=False)
    randomise_decoders(head)
    assert (head.pool.kernel, head.pool.padding, head.pool.out_features) == ((4, 4), (2, 2), 16)
    g = torch.Generator().manual_seed(5)
    h = torch.rand(8, 4, 7, 7, generator=g)
    y = torch.tensor([0, 1, 1, 3, 9, 0, 4, 4])
    got, _ = head(h, h, y, F.one_hot(y, 10).float())
    assert got.item() == pytest.approx(local_loss(head, np_(h), y.numpy(), (4, 4), (2, 2)), rel=1e-5)


# ------------------------------------------------------------------ 2. dropout placement
def block_by_hand(block: Block, x: np.ndarray, nonlin: str) -> np.ndarray:
    """conv 3x3 (or Linear) -> BatchNorm with the batch's statistics -> nonlinearity."""
    w, b = np_(block.layer.weight), np_(block.layer.bias)
    if block.conv:
        assert (block.layer.kernel_size, block.layer.stride, block.layer.padding) == ((3, 3), (1, 1), (1, 1))
        z = conv3x3(x, w) + b[None, :, None, None]
        axes, shape = (0, 2, 3), (1, -1, 1, 1)
    else:
        z = x @ w.T + b
        axes, shape = (0,), (1, -1)
    if block.bn is not None:
        z = (z - z.mean(axis=axes, keepdims=True)) / np.sqrt(z.var(axis=axes, keepdims=True) + block.bn.eps)
        z = z * np_(block.bn.weight).reshape(shape) + np_(block.bn.bias).reshape(shape)
    return np.where(z > 0, z, z * (0.01 if nonlin == "leakyrelu" else 0.0))


@pytest.mark.parametrize("net", ["mlp", "vgg"])
def test_local_losses_see_h_and_the_next_block_gets_dropout(net):
    """Training mode, --dropout 0.3. The whole forward by hand: each block's local loss
    from its h (before dropout); the next layer gets h * keep / (1 - p), keep drawn from
    the block's own generator (seed derive_seed(seed, epoch, 1000 + index)), per unit in a
    linear block, per channel in a conv block (Dropout2d); the output layer gets the last
    block's dropped-out h."""
    p, seed, epoch = 0.3, 1, 2
    if net == "mlp":
        cfg, shape = flags("--loss-sup", "predsim", "--beta", "0.5", "--dropout", str(p)), (1, 28, 28)
    else:
        cfg, shape = small_vgg("--loss-sup", "predsim", "--beta", "0.5", "--dropout", str(p)), (3, 16, 16)
    torch.manual_seed(0)
    model = build_model(cfg, shape[0], shape[1], 10)
    model.train()
    randomise_decoders(model)
    model.seed_dropout(seed, epoch)
    [(x, y)] = batches(1, shape)
    logits, losses, _ = model(x, y, F.one_hot(y, 10).float())

    a, Y, k, dropped_somewhere = np_(x), y.numpy(), 0, False
    for m in model.layers:
        if isinstance(m, nn.Flatten):
            a = a.reshape(len(a), -1)
        elif isinstance(m, nn.MaxPool2d):
            B, C, H, W = a.shape
            a = a.reshape(B, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))
        else:
            assert isinstance(m, Block)
            h = block_by_hand(m, a, cfg.nonlin)
            kernel = SMALL_VGG_KERNELS[k] if m.conv else None
            want = local_loss(m.head, h, Y, kernel)
            assert losses[k].item() == pytest.approx(want, rel=1e-5), f"block {k} loss"
            mask_shape = h.shape[:2] + (1, 1) if m.conv else h.shape
            gen = torch.Generator().manual_seed(derive_seed(seed, epoch, 1000 + m.index))
            keep = np_(torch.empty(mask_shape).bernoulli_(1 - p, generator=gen))
            out = h * keep / (1 - p)
            # dropout changed what goes on, and the loss of the dropped-out h is another number
            dropped_somewhere |= bool((keep == 0).any() and (h != 0).any())
            assert abs(local_loss(m.head, out, Y, kernel) - want) > 1e-4 * abs(want), f"block {k}"
            a, k = out, k + 1
    assert k == len(losses) == len(model.blocks) and dropped_somewhere
    want_logits = a @ np_(model.output.weight).T + np_(model.output.bias)
    np.testing.assert_allclose(np_(logits), want_logits, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ 3. the update by hand
def oracle_losses(weights, cfg, x, y):
    """docs/method.md in plain torch (float64) on copies of the mlp's `weights` (layers.0
    is its Flatten, layers.1.. its blocks): each block's predsim loss and the output
    cross-entropy. no_detach: the graph runs through
    every block; otherwise each block's input is cut off. Returns (weights, local, ce)."""
    beta, slope = cfg.beta, 0.01 if cfg.nonlin == "leakyrelu" else 0.0
    ws = {n: p.detach().double().clone().requires_grad_() for n, p in weights.items()}

    def ce(z):
        return -(z - torch.logsumexp(z, dim=1, keepdim=True))[torch.arange(len(y)), y].mean()

    def sim_matrix(a):
        c = a - a.mean(dim=1, keepdim=True)
        n = c / (1e-8 + c.pow(2).sum(dim=1, keepdim=True).sqrt())
        return (n @ n.T).clamp(-1, 1)

    target = sim_matrix(F.one_hot(y, 10).double())
    a, local = x.double().reshape(len(x), -1), []
    for i in range(1, cfg.num_layers + 1):
        z = F.linear(a, ws[f"layers.{i}.layer.weight"], ws[f"layers.{i}.layer.bias"])
        h = torch.where(z > 0, z, slope * z)
        pre = f"layers.{i}.head."
        pred = ce(F.linear(h, ws[pre + "decoder.weight"], ws[pre + "decoder.bias"]))
        sim = (sim_matrix(F.linear(h, ws[pre + "sim_layer.weight"])) - target).pow(2).mean()
        local.append((1 - beta) * pred + beta * sim)
        a = h if cfg.no_detach else h.detach()
    return ws, local, ce(F.linear(a, ws["output.weight"], ws["output.bias"]))


def sgd_step(cfg, engine: str, lr: float):
    """One step of `engine` from the seed's initial weights (decoders and output layer
    randomised); returns (parameters before, parameters after, batch)."""
    torch.manual_seed(0)
    model = build_model(cfg, 1, 28, 10)
    model.train()
    randomise_decoders(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    eng = ENGINES[engine](cfg, model, torch.device("cpu"))
    eng.set_lr(lr)
    [(x, y)] = batches(1, (1, 28, 28), batch=16)
    eng.step(x, y, F.one_hot(y, 10).float(), lambda: NOOP)
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    return before, after, (x, y)


TRUNK = ("layers.1.layer.weight", "layers.1.layer.bias", "layers.2.layer.weight", "layers.2.layer.bias")


@pytest.mark.parametrize("engine", ["fused", "reference"])
@pytest.mark.parametrize("detach", [False, True], ids=["no-detach", "detached"])
def test_sgd_update_of_the_hidden_layers_by_hand(engine, detach):
    """Plain SGD (momentum 0, weight decay 0), a 2-block mlp, predsim (beta 0.9), no
    BatchNorm. --no-detach: every hidden weight moves by -lr * d/dW of
    [sum of all local losses + (1 - beta) * output cross-entropy] with the graph kept
    between blocks (as the reference: each block's loss.backward(retain_graph), the
    scaled output loss backward, then every optimizer steps once). Detached (default):
    a block moves by its own local loss alone. The oracle's gradients are autograd's on
    the loss written above; each part it adds is checked to matter."""
    cfg = flags("--num-hidden", "16", "--no-batch-norm", "--nonlin", "leakyrelu", "--loss-sup", "predsim",
                "--beta", "0.9", "--optim", "sgd", "--momentum", "0", "--weight-decay", "0",
                *(() if detach else ("--no-detach",)))
    lr = 0.5
    before, after, (x, y) = sgd_step(cfg, engine, lr)

    def grads(of):
        ws, local, ce = oracle_losses(before, cfg, x, y)
        total = of(local, (1 - cfg.beta) * ce)
        gs = torch.autograd.grad(total, [ws[n] for n in TRUNK], allow_unused=True)
        return {n: torch.zeros_like(ws[n]) if g is None else g for n, g in zip(TRUNK, gs)}

    want = grads(lambda local, out: sum(local) + out)
    for n in TRUNK:
        moved = (after[n].double() - before[n].double())
        torch.testing.assert_close(moved, -lr * want[n], rtol=1e-4, atol=1e-6, msg=f"{engine}: {n}")
    # every part of the oracle's loss moves the first layer by more than the tolerance:
    # an engine that left one out, or did not scale the output loss, would fail above
    first = TRUNK[0]
    parts = [lambda local, out: local[0], lambda local, out: local[1], lambda local, out: out]
    sizes = [(lr * grads(part)[first]).abs().max().item() for part in parts]
    if detach:
        assert sizes[0] > 1e-3 and sizes[1] == sizes[2] == 0
    else:
        assert min(sizes) > 1e-3, sizes
        scaled_by_one = lr * (grads(lambda local, out: sum(local) + out / (1 - cfg.beta))[first] - want[first])
        assert scaled_by_one.abs().max() > 1e-3


# ------------------------------------------------ SGD with Nesterov momentum, by hand
def test_nesterov_sgd_steps_by_hand():
    """Two steps of `--optim sgd --momentum 0.9 --nesterov --weight-decay 0.01 --lr 0.1`
    (PyTorch's SGD, as AugLocal's train.py steps): d = g + wd p; buf = m buf + d (buf = d
    at the first step); p -= lr (d + m buf). Without Nesterov the first step alone would
    move p by lr d = (0.051, 0.023), not lr (d + m d) = (0.0969, 0.0437)."""
    from locallearn.train.engines import make_optimizer
    cfg = flags("--optim", "sgd", "--lr", "0.1", "--momentum", "0.9", "--nesterov", "--weight-decay", "0.01")
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = make_optimizer(cfg, [p], torch.device("cpu"))
    # step 1: g = (0.5, 0.25); d = (0.51, 0.23); buf = d; p = p - 0.1 * 1.9 d
    p.grad = torch.tensor([0.5, 0.25], dtype=torch.float64)
    opt.step()
    assert p.detach().tolist() == pytest.approx([0.9031, -2.0437], abs=1e-12)
    # step 2: g = (-1, 0.5); d = g + 0.01 p = (-0.990969, 0.479563);
    # buf = 0.9 (0.51, 0.23) + d = (-0.531969, 0.686563); d + 0.9 buf = (-1.4697411, 1.0974697)
    p.grad = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    opt.step()
    assert p.detach().tolist() == pytest.approx([1.05007411, -2.15344697], abs=1e-12)
