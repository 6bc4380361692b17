"""The method registry on the ResNets (and the paper's heads on the mlp and VGGs):
locality, placement, the recipe's schedule, the flags, and a step of every method
on Fashion-MNIST-shaped data. Exactness against their code: test_methods_golden.py."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, batches, trainable
from locallearn.host import precision
from locallearn.nets.models import describe
from locallearn.recipe.config import ConfigError, config_hash, parse_train_args
from locallearn.train.engines import ENGINES
from locallearn.train.placement import make_model
from locallearn.train.fit import lr_at
from locallearn.methods import auglocal, infopro, registry
from locallearn.recipe.specs import SPECS

FMNIST = ["--dataset", "FashionMNIST", "--optim", "sgd", "--momentum", "0.9", "--nesterov", "--lr", "0.05"]
METHOD_FLAGS = {
    "bp": ["--model", "resnet32", "--local-modules", "1"],
    "paper-predsim": ["--model", "resnet32", "--loss-sup", "predsim", "--dim-in-decoder", "512"],
    "paper-sim": ["--model", "resnet32", "--loss-sup", "sim"],
    "paper-pred": ["--model", "resnet32", "--loss-sup", "pred"],
    "dgl": ["--model", "resnet32", "--method", "dgl"],
    "infopro": ["--model", "resnet32", "--method", "infopro", "--ixx-1", "5", "--ixy-1", "0.05",
                "--ixx-2", "0.2", "--ixy-2", "0.5"],
    "auglocal": ["--model", "resnet32", "--method", "auglocal", "--aux-depth", "3", "--pyramid-coeff", "0.5"],
    "greedysl": ["--model", "resnet32", "--method", "greedysl"],
    "infoprocontrast": ["--model", "resnet32", "--method", "infoprocontrast", "--ixx-1", "5", "--ixy-1", "0.05",
                        "--ixx-2", "0.2", "--ixy-2", "0.5"],
    "paper-vgg": ["--model", "vgg8b", "--feat-mult", "0.0625", "--num-hidden", "32"],
    "paper-mlp": ["--model", "mlp", "--num-hidden", "32", "--num-layers", "2"],
    # the methods' heads on the paper's networks (docs/methods.md)
    "dgl-vgg": ["--model", "vgg8b", "--feat-mult", "0.0625", "--num-hidden", "32", "--method", "dgl"],
    "infopro-vgg": ["--model", "vgg8b", "--feat-mult", "0.0625", "--num-layers", "0", "--method", "infopro",
                    "--ixx-1", "5", "--ixy-1", "0.05", "--ixx-2", "0.2", "--ixy-2", "0.5"],
    "auglocal-vgg": ["--model", "vgg8b", "--feat-mult", "0.0625", "--num-hidden", "32", "--method", "auglocal",
                     "--aux-depth", "2", "--pyramid-coeff", "0.5"],
    "dgl-mlp": ["--model", "mlp", "--num-hidden", "32", "--num-layers", "2", "--method", "dgl"],
    "auglocal-mlp": ["--model", "mlp", "--num-hidden", "32", "--num-layers", "3", "--method", "auglocal",
                     "--aux-depth", "2"],
}


def cfg_of(name, *extra):
    return parse_train_args(METHOD_FLAGS[name] + FMNIST + list(extra))


def test_lr_schedule_is_their_cosine_with_warmup():
    golden = json.loads((REPO / "tests" / "golden" / "auglocal" / "lr_schedule.json").read_text())
    cfg = parse_train_args(["--lr", str(golden["lr"]), "--epochs", str(golden["epochs"]),
                            "--lr-schedule", "cosine-warmup"])
    for epoch, lr in golden["lr_at_epoch"].items():
        assert lr_at(cfg, int(epoch)) == pytest.approx(lr, rel=1e-12, abs=1e-15), epoch


def test_their_counts_on_cifar10():
    for model, backbone in (("resnet32", 466_906), ("resnet110", 1_730_714)):
        for method in ("--backprop", "--method=dgl"):
            d = describe(parse_train_args(["--model", model, "--dataset", "CIFAR10", method]))
            assert d["params_backprop"] == backbone
            assert (d["params_heads"] == 0) == (method == "--backprop")


def test_auglocal_layers_and_depths_by_hand():
    # ResNet-32: 16 layers. The head after layer 0 with d = 3 samples 15/3 apart.
    assert auglocal.sampled_layers(0, 16, 3) == [5, 10, 15]
    assert auglocal.sampled_layers(13, 16, 3) == [14, 15]        # fewer left than d: all of them
    assert auglocal.sampled_layers(2, 16, 2) == [8, 16 - 1]       # round(2 + 13/2) = round(8.5) = 8 (to even)
    cfg = parse_train_args(["--model", "resnet32", "--method", "auglocal", "--aux-depth", "3",
                            "--pyramid-coeff", "0.5", "--dataset", "CIFAR10"])
    depths = [b.head.depth for b in make_model(cfg, SPECS["CIFAR10"], torch.device("cpu")).blocks]
    # K = 16 - 3 = 13; t = 0.5 i / 11; 3 (1 - t) + t = 3 - 2t: 3 - i/11, rounded
    assert depths == [round(3 - i / 11) for i in range(12)] == [3] * 6 + [2] * 6


def heads_of(method, modules, *extra):
    cfg = parse_train_args(["--model", "resnet32", "--dataset", "CIFAR10", "--method", method,
                            "--local-modules", str(modules), "--ixx-1", "5", "--ixx-2", "0.2",
                            "--ixy-1", "0", "--ixy-2", "1", *extra])
    return [b.head for b in make_model(cfg, SPECS["CIFAR10"], torch.device("cpu")).blocks]


def test_weight_schedule_over_modules_by_hand():
    """InfoPro's lambdas and AugLocal's ixy move linearly from the first local head
    (ratio 0) to the last (ratio 1): K modules have K - 1 heads, at ratios i / (K - 2)
    (AugLocal's networks/resnet.py forward). Written out by hand, not through Site.ratio."""
    k4 = heads_of("infopro", 4)                         # heads after modules 0, 1, 2: ratios 0, 1/2, 1
    assert [h.ixx for h in k4] == pytest.approx([5.0, 2.6, 0.2], abs=1e-12)
    assert [h.ixy for h in k4] == pytest.approx([0.0, 0.5, 1.0], abs=1e-12)
    k16 = heads_of("infopro", 16)                       # 15 heads: ratios 0/14 .. 14/14
    assert [h.ixy for h in k16] == pytest.approx([i / 14 for i in range(15)], abs=1e-12)
    assert [h.ixx for h in k16] == pytest.approx([5 - 4.8 * i / 14 for i in range(15)], abs=1e-12)
    # AugLocal's train.py builds local_module_num - aux_net_depth modules: 5 - 1 = 4 and
    # 17 - 1 = 16 here, so 3 heads at 0, 1/2, 1 and 15 heads at i / 14
    assert [h.ixy for h in heads_of("auglocal", 5, "--aux-depth", "1")] == pytest.approx([0, 0.5, 1], abs=1e-12)
    assert [h.ixy for h in heads_of("auglocal", 17, "--aux-depth", "1")] == pytest.approx(
        [i / 14 for i in range(15)], abs=1e-12)


def test_heads_on_the_paper_networks_by_hand():
    """vgg8b on CIFAR-10: convs of 128, 256, [pool] 256, 512, [pool] 512, [pool] 512, a
    linear block of 1024. AugLocal's head after conv 0 at depth 2 copies convs
    round(5/2) = 2 and 5, after the pools in between (1, then 2); InfoPro's classifier
    conv goes to the next wider width (stride 2), at the widest keeps it (stride 1), as
    their table does on the ResNets (16 -> 32, 32 -> 64, 64 -> 64)."""
    from locallearn.recipe.archspec import block_sites, resnet_sites
    cfg = parse_train_args(["--model", "vgg8b", "--dataset", "CIFAR10", "--method", "auglocal", "--aux-depth", "2"])
    sites = block_sites(cfg, SPECS["CIFAR10"])
    assert [s.channels for s in sites] == [128, 256, 256, 512, 512, 512, 1024] and sites[0].modules == 8
    assert [s.pools for s in sites][0] == (0, 0, 1, 0, 1, 1, 0)
    assert auglocal.layer_plan(sites[0], 2) == [(1, 128, 256), (2, 256, 512)]
    assert auglocal.layer_plan(sites[5], 2) == []                   # the last conv: nothing after it
    assert auglocal.layer_plan(sites[6], 2) == []
    assert [infopro.classifier_conv(s) for s in sites[:6]] == [(256, 2)] + [(512, 2)] * 2 + [(512, 1)] * 3
    res = parse_train_args(["--model", "resnet32", "--dataset", "CIFAR10", "--method", "infopro"])
    convs = {s.site.channels: infopro.classifier_conv(s.site)
             for s in resnet_sites(res, "resnet32", SPECS["CIFAR10"], None)[1]}
    assert convs == {16: (32, 2), 32: (64, 2), 64: (64, 1)}


def test_default_flags_keep_the_paper_hash():
    base = parse_train_args([])
    assert config_hash(base) == config_hash(parse_train_args(["--method", "paper", "--lr-schedule", "milestones"]))
    assert config_hash(base) != config_hash(parse_train_args(["--lr-schedule", "cosine-warmup"]))


@pytest.mark.parametrize("argv,flag", [
    (["--model", "mlp", "--method", "infopro"], "--method"),
    (["--model", "vgg8b", "--method", "infopro"], "--method"),          # its classifier block is linear
    (["--model", "vgg8b", "--method", "dgl", "--bio"], "--bio"),
    (["--method", "nope", "--model", "resnet32"], "--method"),
    (["--model", "mlp", "--local-modules", "3"], "--local-modules"),
    (["--model", "resnet32", "--aux-depth", "0"], "--aux-depth"),
    (["--nesterov"], "--nesterov"),
    (["--lr-schedule", "step"], "--lr-schedule"),
    (["--model", "resnet32", "--method", "infopro", "--pipeline-stages", "2"], "--method"),
])
def test_bad_method_flags_name_the_flag(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        parse_train_args(argv)


def test_undefined_split_is_one_line():
    cfg = parse_train_args(["--model", "resnet32", "--local-modules", "14", "--dataset", "CIFAR10"])
    with pytest.raises(ConfigError, match="--local-modules: resnet32 is split into 1, 2, .*16"):
        describe(cfg)


@pytest.mark.parametrize("name", list(METHOD_FLAGS))
def test_locality_each_module_is_trained_by_its_own_head(name):
    """Autograd hooks on every parameter: each local loss reaches only its module's
    parameters (layers and head), and all of them; the output loss only the output part."""
    cfg = cfg_of(name)
    model = make_model(cfg, SPECS["FashionMNIST"], torch.device("cpu"))
    owner = trainable(model)
    reached = set()
    for n, p in model.named_parameters():
        p.register_hook(lambda g, n=n: reached.add(n))
    (x, y), = batches(1, batch=8)
    logits, losses, _ = model(x, y, F.one_hot(y, 10).float())
    sources = [(b.index, loss) for b, loss in zip(model.blocks, losses)]
    sources.append(("output", F.cross_entropy(logits, y)))
    for who, loss in sources:
        reached.clear()
        loss.backward(retain_graph=True)
        expected = {n for n, o in owner.items() if o == who}
        assert reached == expected, f"{name}: loss of {who} reached {sorted(reached ^ expected)[:4]}"
    assert len(sources) == len(model.blocks) + 1 and (name == "bp") == (not model.blocks)


@pytest.mark.parametrize("name", [n for n in METHOD_FLAGS if not n.startswith("paper-")] + ["paper-predsim"])
def test_every_method_trains_on_fashion_mnist_shapes(name):
    cfg = cfg_of(name)
    device = torch.device("cpu")
    model = make_model(cfg, SPECS["FashionMNIST"], device)
    engine = ENGINES["fused"](cfg, model, device)
    autocast = precision.autocast("fp32", device)
    first = None
    for _ in range(4):
        (x, y), = batches(1, batch=16)            # the same batch: the loss falls
        _, ce, losses, _ = engine.step(x, y, F.one_hot(y, 10).float(), autocast)
        total = float(ce.detach()) + sum(float(v) for v in losses)
        first = total if first is None else first
    assert torch.isfinite(torch.tensor(total)) and total < first


@pytest.mark.parametrize("engine,method", [("reference", "dgl"), ("modulewise", "dgl"), ("modulewise", "infopro"),
                                           ("modulewise", "paper-predsim"), ("modulewise", "greedysl"),
                                           ("modulewise", "infoprocontrast")])
def test_other_engines_equal_fused_on_a_resnet(engine, method):
    """Per-module optimizers stepping inside the forward (reference), or a backward per
    local loss and one step (modulewise, the peers' scheme), give the fused step's
    weights: SGD with Nesterov momentum and weight decay acts per parameter, and the
    modules are detached."""
    cfg = cfg_of(method, "--weight-decay", "1e-4", "--local-modules", "4")
    device = torch.device("cpu")
    states = []
    for kind in ("fused", engine):
        model = make_model(cfg, SPECS["FashionMNIST"], device)
        engine = ENGINES[kind](cfg, model, device)
        for x, y in batches(2, batch=8):
            engine.step(x, y, F.one_hot(y, 10).float(), precision.autocast("fp32", device))
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-5, atol=1e-6, msg=k)


def test_method_flag_offers_every_registered_method():
    """--method's check and help read the registry: every name is accepted and listed."""
    from locallearn.recipe.config import build_parser
    help_text = build_parser().format_help()
    for name in registry.names():
        assert parse_train_args(["--method", name, "--model", "resnet32"]).method == name
        assert f"{name}:" in help_text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("method", ["dgl", "infopro", "auglocal", "paper-predsim", "dgl-vgg", "auglocal-mlp"])
def test_cuda_graph_step_equals_eager_for_every_method(method):
    """The fused engine replays a full batch's step as a CUDA graph on any network
    (engines.FusedEngine): the ResNets and every method's heads end with the eager
    steps' weights and BatchNorm statistics, across an lr change (a new capture) and a
    short last batch. Within float32 reordering: cuDNN's weight gradients and the
    bilinear upsampling's backward (InfoPro) add in no fixed order."""
    dev = torch.device("cuda")
    states = []
    for graphs in (True, False):
        cfg = cfg_of(method, *(["--local-modules", "4"] if method in ("dgl", "infopro", "paper-predsim") else []))
        cfg.batch_size, cfg.no_cuda_graph = 8, not graphs
        model = make_model(cfg, SPECS["FashionMNIST"], dev)
        engine = ENGINES["fused"](cfg, model, dev)
        assert engine.graphs == graphs
        data = batches(6, batch=8) + batches(1, batch=5, seed=1)
        for lr in (0.05, 0.05, 0.01):
            engine.set_lr(lr)
            for x, y in data:
                x, y = x.to(dev), y.to(dev)
                engine.step(x, y, F.one_hot(y, 10).float(), precision.autocast("fp32", dev))
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-4, atol=1e-5, msg=k)
