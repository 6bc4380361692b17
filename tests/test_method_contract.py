"""What every registered method must do, checked for each name in the registry
(methods/registry.py) without a test written for it: a plugin installed beside locallearn
gets the same checks (tests/test_plugins.py runs this file with one installed).

- locality: each local loss reaches only its own module's parameters (layers and head),
  and all of them; the output loss only the output module;
- a training step: four fused steps on one batch lower the loss;
- cost: the cost model's count of the method's heads (its Method.head_cost) equals
  what torch's FlopCounterMode counts on the built network, and so do the parameters;
- flags: each of its flags is in `locallearn train --help`, and enters the config hash
  only when set away from its default;
- on a GPU, a CUDA-graph step equals the eager one.
The network each is checked on: the first of NETWORKS the method accepts (its own check).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import batches, counted, trainable
from locallearn.errors import ConfigError
from locallearn.host import precision
from locallearn.methods import registry
from locallearn.recipe.config import build_parser, config_hash, parse_train_args
from locallearn.recipe.cost import network_cost
from locallearn.recipe.specs import SPECS
from locallearn.train.engines import ENGINES
from locallearn.train.placement import make_model

# Small networks on Fashion-MNIST's shapes: a ResNet cut into 4 modules, a thin VGG of
# convs only (what InfoPro takes), the mlp.
NETWORKS = (
    ["--model", "resnet32", "--local-modules", "4"],
    ["--model", "vgg8b", "--feat-mult", "0.0625", "--num-layers", "0", "--dim-in-decoder", "256"],
    ["--model", "mlp", "--num-layers", "2", "--num-hidden", "32"],
)
COMMON = ["--dataset", "FashionMNIST", "--optim", "sgd", "--momentum", "0.9", "--lr", "0.05"]


def recipe_of(name: str) -> list[str]:
    """The first small network the method accepts, with --method name."""
    problems = []
    for network in NETWORKS:
        argv = network + COMMON + ["--method", name]
        try:
            parse_train_args(argv)
            return argv
        except ConfigError as e:
            problems.append(str(e))
    pytest.fail(f"method {name}: no small network accepts it: {problems}")


@pytest.mark.parametrize("name", registry.names())
def test_locality(name):
    cfg = parse_train_args(recipe_of(name))
    model = make_model(cfg, SPECS[cfg.dataset], torch.device("cpu"))
    owner, reached = trainable(model), set()
    for n, p in model.named_parameters():
        p.register_hook(lambda g, n=n: reached.add(n))
    (x, y), = batches(1, batch=8)
    logits, losses, _ = model(x, y, F.one_hot(y, 10).float())
    sources = [(b.index, loss) for b, loss in zip(model.blocks, losses)] + [("output", F.cross_entropy(logits, y))]
    assert len(model.blocks) > 0
    for who, loss in sources:
        reached.clear()
        loss.backward(retain_graph=True)
        expected = {n for n, o in owner.items() if o == who}
        assert reached == expected, f"{name}: loss of {who} reached {sorted(reached ^ expected)[:4]}"


@pytest.mark.parametrize("name", registry.names())
def test_a_training_step_lowers_the_loss(name):
    cfg = parse_train_args(recipe_of(name))
    device = torch.device("cpu")
    torch.manual_seed(0)
    engine = ENGINES["fused"](cfg, make_model(cfg, SPECS[cfg.dataset], device), device)
    (x, y), = batches(1, batch=16)
    totals = []
    for _ in range(4):
        _, ce, losses, _ = engine.step(x, y, F.one_hot(y, 10).float(), precision.autocast("fp32", device))
        totals.append(float(ce.detach()) + sum(float(v) for v in losses))
    assert all(map(torch.isfinite, torch.tensor(totals))) and totals[-1] < totals[0], totals


@pytest.mark.parametrize("name", registry.names())
def test_cost_equals_the_flop_counter(name):
    cfg, train, evaluate, _, (backbone, heads), heads_fwd = counted(recipe_of(name))
    cost = network_cost(cfg)
    assert cost.head_macs == pytest.approx(heads_fwd, rel=1e-9), name
    assert cost.train_macs == pytest.approx(train, rel=1e-9), name
    assert cost.eval_macs == pytest.approx(evaluate, rel=1e-9), name
    assert (cost.backbone_params, cost.head_params) == (backbone, heads), name


def away_from(flag) -> str:
    """A value of the flag other than its default, as typed."""
    if flag.type is bool:
        return ""
    if flag.type is int:
        return str(flag.default + 1)
    if flag.type is float:
        return str(flag.default + 0.5)
    return f"{flag.default}x"


@pytest.mark.parametrize("name", registry.names())
def test_flags_are_in_the_help_and_in_the_hash_only_when_set(name):
    method = registry.get(name)
    help_text = " ".join(build_parser().format_help().split())
    base = recipe_of(name)
    for flag in method.flags:
        assert flag.name in help_text, flag.name
        at_default = base + ([flag.name] if flag.type is bool and flag.default else
                             [] if flag.type is bool else [flag.name, str(flag.default)])
        assert config_hash(parse_train_args(at_default)) == config_hash(parse_train_args(base)), flag.name
        value = away_from(flag)
        away = base + ([flag.name] if flag.type is bool else [flag.name, value])
        try:
            changed = parse_train_args(away)
        except ConfigError:   # its check refuses that value: the hash question does not arise
            continue
        assert config_hash(changed) != config_hash(parse_train_args(base)), flag.name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("name", registry.names())
def test_cuda_graph_step_equals_eager(name):
    dev = torch.device("cuda")
    states = []
    for graphs in (True, False):
        cfg = parse_train_args(recipe_of(name))
        cfg.batch_size, cfg.no_cuda_graph = 8, not graphs
        torch.manual_seed(0)
        model = make_model(cfg, SPECS[cfg.dataset], dev)
        engine = ENGINES["fused"](cfg, model, dev)
        for x, y in batches(3, batch=8):
            engine.step(x.to(dev), y.to(dev), F.one_hot(y, 10).float().to(dev), precision.autocast("fp32", dev))
        torch.cuda.synchronize()
        states.append({k: v.detach().cpu() for k, v in model.state_dict().items()})
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-4, atol=1e-5, msg=k)
