"""Pipeline-parallel local training (issue 8) makes exactly the sequential fused
engine's updates: after a short epoch every parameter, buffer and Adam state of a
2- or 3-stage gloo pipeline equals train.run's, bit for bit."""
from __future__ import annotations

import json
import time

import pytest
import torch

from conftest import child_env, free_port
from fake_data import write_fake
from locallearn.train import trainer as train_mod
from locallearn.recipe.config import parse_train_args
from locallearn.report.figures import draw_run_curve
from locallearn.errors import ConfigError, OutputError
from locallearn.faults import FAULT_ENV
from locallearn.track.mlstore import local_artifact_dir
from locallearn.train.pipeline import PipelineError
from locallearn.train.stagesplit import balance, check_config, split_layers
from locallearn.runs.rundir import checkpoint_name

TIMING = {"epoch_seconds", "images_per_second", "stage_wait_seconds"}

MLP = ["--model", "mlp", "--dataset", "FashionMNIST", "--num-layers", "3", "--num-hidden", "64"]
VGG = ["--model", "vgg8b", "--dataset", "CIFAR10", "--feat-mult", "0.0625", "--dim-in-decoder", "64",
       "--num-layers", "1", "--num-hidden", "32"]
# mlp predsim (2 stages, 2 epochs, killed and resumed) is in the resume test below
CASES = {  # name: (flags, stages, train examples)
    "mlp-sim-2": (MLP + ["--loss-sup", "sim", "--nonlin", "leakyrelu"], 2, 200),
    "vgg-pred-3": (VGG + ["--loss-sup", "pred"], 3, 100),
    "vgg-sim-2": (VGG + ["--loss-sup", "sim", "--pipeline-balance", "time"], 2, 100),  # timed split
    "vgg-predsim-3": (VGG + ["--loss-sup", "predsim"], 3, 100),
    "mlp-predsim-bf16-2": (MLP + ["--loss-sup", "predsim", "--precision", "bf16"], 2, 200),  # bf16 autocast
    "vgg-predsim-bf16-2": (VGG + ["--loss-sup", "predsim", "--precision", "bf16"], 2, 100),
}


def cfg_for(tmp_path, flags, out, n_train, *extra):
    ds = flags[flags.index("--dataset") + 1]
    data = tmp_path / "data"
    if not (tmp_path / f".fake-{ds}").exists():
        write_fake(ds, data, n_train=n_train, n_test=40)
        (tmp_path / f".fake-{ds}").write_text("")
    return parse_train_args(flags + [
        "--dropout", "0.2", "--batch-size", "32", "--epochs", "1", "--lr", "1e-3", "--threads", "1",
        "--data-dir", str(data), "--out", str(tmp_path / out), "--mlflow-uri", "",
        "--eval-batch-size", "50", *extra])


def assert_same_as_sequential(seq_dir, pipe_dir, stages):
    seq = torch.load(seq_dir / checkpoint_name(), weights_only=True)
    names = [n for n, _ in _named_params(seq)]
    checked = set()
    for k in range(stages):
        st = torch.load(pipe_dir / checkpoint_name(k), weights_only=True)
        for key, v in st["model"].items():  # parameters and buffers (BN statistics)
            assert torch.equal(v, seq["model"][key]), f"stage {k}: {key} differs"
            checked.add(key)
        seq_opt = seq["optimizers"]["all"]["state"]
        for j, name in enumerate(st["param_names"]):
            a, b = st["optimizers"]["all"]["state"][j], seq_opt[names.index(name)]
            for field in b:
                assert torch.equal(a[field], b[field]), f"stage {k}: Adam {field} of {name} differs"
    assert checked == set(seq["model"]), "the stages together must hold the whole model"


def _named_params(seq):
    # model.parameters() order = the fused optimizer's indices; state_dict keeps that order
    from locallearn.recipe.specs import SPECS
    from locallearn.nets.models import build_model
    cfg = parse_train_args(_argv_from(seq["config"]))
    spec = SPECS[cfg.dataset]
    return list(build_model(cfg, spec.channels, spec.size, spec.num_classes).named_parameters())


def _argv_from(recipe: dict) -> list[str]:
    from locallearn.recipe.config import build_parser
    argv = []
    for action in build_parser()._actions:
        if action.dest not in recipe or not action.option_strings:
            continue
        v = recipe[action.dest]
        if isinstance(v, bool):
            argv += [action.option_strings[0]] if v else []
        elif isinstance(v, list):
            argv += [action.option_strings[0], *map(str, v)] if v else []
        elif v is not None:
            argv += [action.option_strings[0], str(v)]
    return argv


def strip(history):
    return [{k: v for k, v in e.items() if k not in TIMING} for e in history]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow
def test_pipeline_equals_sequential(tmp_path, case):
    flags, stages, n = CASES[case]
    seq = train_mod.run(cfg_for(tmp_path, flags, "seq", n))
    pipe = train_mod.run(cfg_for(tmp_path, flags, "pipe", n, "--pipeline-stages", str(stages)))
    assert_same_as_sequential(tmp_path / "seq", tmp_path / "pipe", stages)
    assert strip(pipe["history"]) == strip(seq["history"])
    assert pipe["config_hash"] == seq["config_hash"]
    on_disk = json.loads((tmp_path / "pipe" / "metrics.json").read_text())
    assert on_disk["pipeline"]["stages"] == stages and len(on_disk["history"][0]["stage_wait_seconds"]) == stages


def test_refuses_backprop_and_no_detach(tmp_path):
    for extra in (["--backprop"], ["--no-detach"]):
        cfg = parse_train_args(MLP + extra + ["--pipeline-stages", "2", "--out", str(tmp_path / "x")])
        with pytest.raises(ConfigError, match="cannot be combined with --pipeline-stages 2"):
            train_mod.run(cfg)
    for extra, msg in ((["--pipeline-stages", "0"], "must be >= 1"),
                       (["--pipeline-stages", "2", "--stage-devices", "cpu"], "1 devices given for 2 stages"),
                       (["--pipeline-stages", "2", "--stage-devices", "cpu", "cuda:0"], "all stages must be")):
        with pytest.raises(ConfigError, match=msg):
            train_mod.run(parse_train_args(MLP + extra + ["--out", str(tmp_path / "x")]))



def test_a_stage_refuses_a_torchrun_of_another_size(monkeypatch):
    """Under torchrun, each stage process first checks that torchrun started
    --pipeline-stages processes, and says how to start it right (before any data or
    peer is touched). A unit test, so that the fast tier reaches the launch module."""
    from locallearn.train.stagelaunch import run_stage
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    cfg = parse_train_args(MLP + ["--loss-sup", "predsim", "--pipeline-stages", "2"])
    with pytest.raises(ConfigError, match=r"--pipeline-stages 2 but torchrun started 3 processes "
                                          r"\(use --nproc-per-node 2 on one node, or nodes x nproc = 2\)"):
        run_stage(cfg)

def test_balance_minimises_slowest_stage():
    assert balance([1, 1, 1, 1], 2) == [(0, 2), (2, 4)]
    assert balance([8, 1, 1, 1, 1], 2) == [(0, 1), (1, 5)]
    assert balance([1, 2, 3, 4, 5], 3) == [(0, 3), (3, 4), (4, 5)]
    with pytest.raises(ConfigError):
        balance([1, 2], 3)
    # vgg8b: conv conv M conv conv M conv M conv M flatten linear; a pool or flatten
    # goes with the block before it (a leading one with the first block): no empty stage
    from locallearn.nets.models import build_model
    cfg = parse_train_args(VGG)
    model = build_model(cfg, 3, 32, 10)
    n = len(model.layers)
    bounds = split_layers(model, [1.0] * n, 4)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a == b2 for (_, a), (b2, _) in zip(bounds, bounds[1:]))
    from locallearn.layers.localnet import Block
    assert all(isinstance(model.layers[a], Block) or a == 0 for a, _ in bounds)
    with pytest.raises(ConfigError, match="only 7 hidden blocks"):  # the trainer's check (recipe/cost.py)
        check_config(parse_train_args(VGG + ["--pipeline-stages", "8"]))


@pytest.mark.slow
def test_resume_of_killed_pipeline_equals_uninterrupted_sequential(tmp_path, monkeypatch):
    flags, n = MLP + ["--loss-sup", "predsim"], 200
    seq = train_mod.run(cfg_for(tmp_path, flags, "seq", n, "--epochs", "2"))
    pipe_cfg = cfg_for(tmp_path, flags, "pipe", n, "--epochs", "2", "--pipeline-stages", "2")
    # A stage killed mid-epoch (SIGKILL, no goodbye): the other one ends too, with a
    # message naming the dead stage, well within the peer timeout.
    monkeypatch.setenv(FAULT_ENV, "kill-mid-epoch:2")
    monkeypatch.setenv("LOCALLEARN_FAULT_STAGE", "1")
    monkeypatch.setenv("LOCALLEARN_PIPELINE_TIMEOUT", "20")
    t0 = time.monotonic()
    with pytest.raises(PipelineError, match=r"pipeline stage 1 of 2 was killed by signal 9.*rerun the same command"):
        train_mod.run(pipe_cfg)
    assert time.monotonic() - t0 < 40
    assert not (tmp_path / "pipe" / "metrics.json").exists()
    monkeypatch.delenv(FAULT_ENV)
    pipe = train_mod.run(pipe_cfg)  # the same command again: resumes both stages after epoch 1
    assert strip(pipe["history"]) == strip(seq["history"]) and len(pipe["history"]) == 2
    assert_same_as_sequential(tmp_path / "seq", tmp_path / "pipe", 2)


@pytest.mark.slow
def test_pipelined_run_writes_what_a_sequential_one_writes(tmp_path, monkeypatch, capfd):
    """The same run folder and loop: the start-up line, curve.png, the same MLflow
    artifacts, and a full disk in one stage reported as a sequential run reports it (not
    as a dead peer)."""
    import mlflow.tracking
    flags, n = MLP + ["--loss-sup", "predsim"], 200
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seq = train_mod.run(cfg_for(tmp_path, flags, "seq", n, "--epochs", "2", "--mlflow-uri", uri,
                                "--mlflow-experiment", "seq"), draw_curve=draw_run_curve)   # as `locallearn train`
    seq_start = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("[seq] locallearn ")]
    pipe_cfg = cfg_for(tmp_path, flags, "pipe", n, "--epochs", "2", "--pipeline-stages", "2", "--mlflow-uri", uri,
                       "--mlflow-experiment", "pipe")
    monkeypatch.setenv(FAULT_ENV, "enospc-checkpoint:2")  # in the last stage
    monkeypatch.setenv("LOCALLEARN_PIPELINE_TIMEOUT", "20")
    with pytest.raises(OutputError) as err:
        train_mod.run(pipe_cfg)
    assert (f"cannot write checkpoint {tmp_path / 'pipe' / checkpoint_name(1)} (No space left on device); "
            "the checkpoint of epoch 1 is kept: free space and rerun the same command") == str(err.value)
    monkeypatch.delenv(FAULT_ENV)
    capfd.readouterr()
    pipe = train_mod.run(pipe_cfg)
    pipe_start = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("[pipe] locallearn ")]
    assert len(seq_start) == len(pipe_start) == 1   # one line, from the reporting stage, naming
    assert pipe_start[0].replace("[pipe]", "[seq]").replace("/pipe", "/seq") == seq_start[0]   # the whole network, as sequential
    assert strip(pipe["history"]) == strip(seq["history"])
    client = mlflow.tracking.MlflowClient(uri)

    def mlflow_run(d):   # a SQLite store's artifacts lie in its proxied folder (no server here)
        run = client.get_run(json.loads((tmp_path / d / "mlflow_run.json").read_text())["run_id"])
        stored = local_artifact_dir(uri, run.info.artifact_uri)
        return run.info.status, sorted(f.name for f in stored.iterdir())
    assert mlflow_run("pipe") == mlflow_run("seq") == ("FINISHED", ["curve.png", "metrics.json"])
    assert (tmp_path / "pipe" / "curve.png").stat().st_size > 0

def test_layer_times_leave_the_model_untouched():
    from locallearn.recipe.specs import SPECS
    from locallearn.nets.models import build_model
    from locallearn.train.stagesplit import layer_times
    cfg = parse_train_args(MLP + ["--batch-size", "16"])
    torch.manual_seed(0)
    model = build_model(cfg, 1, 28, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    times = layer_times(model, SPECS["FashionMNIST"], cfg, torch.device("cpu"), reps=1)
    assert len(times) == len(model.layers) and all(t >= 0 for t in times) and sum(times) > 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert len(split_layers(model, times, 3)) == 3


@pytest.mark.slow
def test_two_torchrun_nodes_make_one_pipeline(tmp_path):
    """The several-machines launch of the README, on one machine: two torchrun "nodes"
    (one stage each) meet through the c10d rendezvous and make the sequential run's
    updates."""
    import subprocess
    import sys

    flags, n = MLP + ["--loss-sup", "predsim"], 200
    seq = train_mod.run(cfg_for(tmp_path, flags, "seq", n))
    argv = [*flags, "--dropout", "0.2", "--batch-size", "32", "--epochs", "1", "--lr", "1e-3", "--threads", "1",
            "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "pipe"), "--mlflow-uri", "",
            "--eval-batch-size", "50", "--pipeline-stages", "2"]
    port = free_port()
    env = child_env()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t",
                               "-m", "locallearn", "train", *argv],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-2000:] for o in outs)
    pipe = json.loads((tmp_path / "pipe" / "metrics.json").read_text())
    assert pipe["pipeline"]["stages"] == 2
    assert strip(pipe["history"]) == strip(seq["history"])
    assert_same_as_sequential(tmp_path / "seq", tmp_path / "pipe", 2)
