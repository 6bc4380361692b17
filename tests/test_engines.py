"""The fused engine makes exactly the reference's updates (docs/method.md, The update), and
a local loss never reaches an earlier block."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import batches, flags
from locallearn.nets.models import build_model
from locallearn.train.engines import ENGINES, detaches

NOOP = torch.autocast("cpu", enabled=False)


def small_vgg(*extra):
    # vgg8b at 1/16 width on 16x16 inputs; dim-in-decoder 64 forces the decoder pooling.
    return flags("--model", "vgg8b", "--feat-mult", "0.0625", "--num-layers", "1", "--num-hidden", "32",
                 "--dim-in-decoder", "64", *extra)


CASES = {
    "mlp-pred": (flags("--loss-sup", "pred", "--dropout", "0.2"), (1, 28, 28)),
    "mlp-sim": (flags("--loss-sup", "sim", "--nonlin", "leakyrelu", "--dropout", "0.2"), (1, 28, 28)),
    "mlp-predsim": (flags("--loss-sup", "predsim", "--dropout", "0.2"), (1, 28, 28)),
    "mlp-bio-predsim": (flags("--loss-sup", "predsim", "--bio", "--beta", "0.01"), (1, 28, 28)),
    "vgg-pred": (small_vgg("--loss-sup", "pred", "--dropout", "0.2"), (3, 16, 16)),
    "vgg-sim": (small_vgg("--loss-sup", "sim", "--dropout", "0.2"), (3, 16, 16)),
    "vgg-predsim": (small_vgg("--loss-sup", "predsim", "--dropout", "0.2"), (3, 16, 16)),
    "vgg-bio-pred": (small_vgg("--loss-sup", "pred", "--bio"), (3, 16, 16)),
    "vgg-bio-sim": (small_vgg("--loss-sup", "sim", "--bio"), (3, 16, 16)),
    "vgg-bio-predsim": (small_vgg("--loss-sup", "predsim", "--bio", "--beta", "0.01"), (3, 16, 16)),
    "mlp-unsup-recon": (flags("--loss-sup", "predsim", "--loss-unsup", "recon", "--alpha", "0.5"), (1, 28, 28)),
    "vgg-unsup-sim": (small_vgg("--loss-sup", "pred", "--loss-unsup", "sim", "--alpha", "0.3"), (3, 16, 16)),
    "vgg-unsup-recon": (small_vgg("--loss-sup", "predsim", "--loss-unsup", "recon", "--alpha", "0.3",
                                  "--num-layers", "2"), (3, 16, 16)),
    "vgg-no-head-pred": (small_vgg("--loss-sup", "pred", "--num-layers", "0"), (3, 16, 16)),
    # --no-detach: the global loss and later blocks' losses reach every block, and each
    # block steps once. The engines sum the same gradients in another order, so they
    # agree to rounding; but a bias followed by BatchNorm has a gradient that is zero up
    # to rounding, which Adam scales to +-lr (1e-3 apart after 6 steps, in those biases
    # only). Adam cases therefore run without BatchNorm; SGD covers it.
    "mlp-no-detach-predsim": (flags("--loss-sup", "predsim", "--no-detach", "--no-batch-norm",
                                    "--dropout", "0.2"), (1, 28, 28)),
    "vgg-no-detach-pred": (small_vgg("--loss-sup", "pred", "--no-detach", "--no-batch-norm"), (3, 16, 16)),
    "vgg-no-detach-predsim-sgd": (small_vgg("--loss-sup", "predsim", "--no-detach", "--optim", "sgd",
                                            "--momentum", "0.9"), (3, 16, 16)),
}


def train_steps(cfg, shape, engine: str, steps: int = 6):
    torch.manual_seed(0)
    model = build_model(cfg, shape[0], shape[1], 10)
    model.train()
    model.seed_dropout(cfg.seed, 1)
    eng = ENGINES[engine](cfg, model, torch.device("cpu"))
    eng.set_lr(1e-3)
    for x, y in batches(steps, shape):
        eng.step(x, y, F.one_hot(y, 10).float(), lambda: torch.autocast("cpu", enabled=False))
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_equals_reference(case):
    cfg, shape = CASES[case]
    fused = train_steps(cfg, shape, "fused")
    ref = train_steps(cfg, shape, "reference")
    moved = 0
    for (name, a), (_, b) in zip(fused.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{case}: {name} differs")
        moved += 1
    # and the run did something: parameters left their initial values
    torch.manual_seed(0)
    init = build_model(cfg, shape[0], shape[1], 10)
    assert any(not torch.equal(p, q) for p, q in zip(init.parameters(), fused.parameters()))
    assert moved > 0


def _grads_after(cfg, shape, loss_of):
    torch.manual_seed(0)
    model = build_model(cfg, shape[0], shape[1], 10)
    (x, y), = batches(1, shape)
    logits, losses, _ = model(x, y, F.one_hot(y, 10).float(), detach=detaches(cfg), local=not cfg.backprop)
    loss_of(logits, losses, y).backward()
    return model


@pytest.mark.parametrize("make", [lambda: (flags("--loss-sup", "predsim"), (1, 28, 28)),
                                  lambda: (small_vgg("--loss-sup", "predsim"), (3, 16, 16))])
def test_local_loss_reaches_only_its_block(make):
    cfg, shape = make()
    n = len(build_model(cfg, shape[0], shape[1], 10).blocks)
    for k in range(n):
        model = _grads_after(cfg, shape, lambda logits, losses, y: losses[k])
        for b in model.blocks:
            got = any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.layer.parameters())
            assert got == (b.index == model.blocks[k].index), f"loss {k} vs block {b.index}"
        assert model.output.weight.grad is None
    # the output loss reaches only the output layer
    model = _grads_after(cfg, shape, lambda logits, losses, y: F.cross_entropy(logits, y))
    assert all(p.grad is None for b in model.blocks for p in b.parameters())


@pytest.mark.parametrize("mode", ["--backprop", "--no-detach"])
def test_output_loss_reaches_first_layer(mode):
    cfg = flags(mode)
    # zero-initialised output weights (local mode) would block the signal at step 0
    torch.manual_seed(0)
    model = build_model(cfg, 1, 28, 10)
    torch.nn.init.normal_(model.output.weight)
    (x, y), = batches(1)
    logits, _, _ = model(x, y, F.one_hot(y, 10).float(), detach=detaches(cfg), local=not cfg.backprop)
    F.cross_entropy(logits, y).backward()
    assert model.blocks[0].layer.weight.grad.abs().sum() > 0


def test_dropout_generator_is_reseeded_in_place():
    """A CUDA graph holds each block's dropout generator, so a new epoch reseeds that very
    generator; its masks are the ones a fresh generator of the epoch's seed draws."""
    from locallearn.seeding import derive_seed
    cfg = flags("--dropout", "0.3")
    model = build_model(cfg, 1, 28, 10)
    model.train()
    block = model.blocks[0]
    model.seed_dropout(1, 1)
    h = torch.ones(8, 32)
    first = block.dropout(h)
    gen = block.dropout_generator
    model.seed_dropout(1, 2)
    second = block.dropout(h)
    assert block.dropout_generator is gen  # the same object, reseeded
    fresh = torch.Generator().manual_seed(derive_seed(1, 2, 1000 + block.index))
    keep = torch.empty(8, 32).bernoulli_(0.7, generator=fresh)
    assert torch.equal(second, h * keep / 0.7) and not torch.equal(first, second)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("shape, cfg", [((1, 28, 28), flags("--loss-sup", "predsim", "--dropout", "0.2")),
                                        ((3, 16, 16), small_vgg("--loss-sup", "predsim", "--dropout", "0.2"))])
def test_cuda_graph_step_equals_eager(shape, cfg):
    """Replayed CUDA-graph steps make the eager steps' updates bit for bit, across a new
    epoch's dropout seeds, an lr change (a new capture) and a short last batch."""
    dev = torch.device("cuda")
    models = []
    for graphs in (True, False):
        cfg.no_cuda_graph = not graphs
        torch.manual_seed(0)
        model = build_model(cfg, shape[0], shape[1], 10).to(dev)
        model.train()
        eng = ENGINES["fused"](cfg, model, dev)
        assert eng.graphs == graphs
        data = batches(12, shape, batch=cfg.batch_size) + batches(1, shape, batch=5, seed=1)
        for epoch, lr in ((1, 1e-3), (2, 1e-3), (3, 2.5e-4)):
            model.seed_dropout(cfg.seed, epoch)
            eng.set_lr(lr)
            for x, y in data:
                x, y = x.to(dev), y.to(dev)
                eng.step(x, y, F.one_hot(y, 10).float(), lambda: torch.autocast("cuda", enabled=False))
        models.append(model)
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("loss, scale", [("predsim", 0.01), ("pred", 1.0), ("sim", 1.0)])
def test_output_layer_update_by_hand(loss, scale):
    """One fused SGD step moves the output layer by exactly -lr * scale * dCE/dW, with
    dCE/dlogits = (softmax - onehot) / B written out here, and scale = 1 - beta under
    predsim (beta 0.99) and 1 otherwise, as the authors' code scales its output loss
    (docs/method.md, The update). An engine that forgot the scale (or applied it to
    pred) would move it 100 times too far (or too little)."""
    cfg = flags("--loss-sup", loss, "--optim", "sgd", "--momentum", "0", "--beta", "0.99")
    torch.manual_seed(0)
    model = build_model(cfg, 1, 28, 10)
    model.train()
    seen = {}
    model.output.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0].detach(), logits=out.detach()))
    w0, b0 = model.output.weight.detach().clone(), model.output.bias.detach().clone()
    eng = ENGINES["fused"](cfg, model, torch.device("cpu"))
    lr = 0.1
    eng.set_lr(lr)
    [(x, y)] = batches(1, (1, 28, 28), batch=16)
    onehot = F.one_hot(y, 10).float()
    eng.step(x, y, onehot, lambda: NOOP)
    z = seen["logits"].double()
    p = torch.exp(z - z.max(1, keepdim=True).values)
    p = p / p.sum(1, keepdim=True)
    g = scale * (p - onehot.double()) / len(y)          # d(scale * mean CE)/d logits
    want_w = w0.double() - lr * g.T @ seen["x"].double()
    want_b = b0.double() - lr * g.sum(0)
    torch.testing.assert_close(model.output.weight.detach().double(), want_w, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(model.output.bias.detach().double(), want_b, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(w0, model.output.weight.detach())   # it moved
