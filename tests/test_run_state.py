"""The one rule that decides a run folder's fate (locallearn.runs.runstate.run_state), which
`locallearn train` and the workflow both use. Torch-free, like the workflow's planning."""
from __future__ import annotations

import json
import shutil
import sys

import pytest

from conftest import REPO
from locallearn.recipe import config
from locallearn.runs import runstate
from locallearn.errors import CheckpointError

COMMITTED = REPO / "results" / "full" / "runs" / "fmnist-mlp-pred" / "seed1" / "metrics.json"


def committed_args() -> list[str]:
    """The flags the workflow gives the committed fmnist-mlp-pred seed 1 run."""
    from locallearn.workflow import plan
    full = plan.make_presets(plan.load_config(), plan.load_cells(plan.cells_path(plan.load_config())))["full"]
    row = next(r for r in full.rows if r["cell"] == "fmnist-mlp-pred")
    return full.args(row) + ["--seed", "1"]


def state(run, args):
    return runstate.run_state(run, config.build_parser().parse_args(args)).what


def test_states_of_a_run_folder(tmp_path):
    args, run = committed_args(), tmp_path / "seed1"
    assert state(run, args) == runstate.START                                # nothing yet
    run.mkdir()
    assert state(run, args) == runstate.START                                # an empty folder
    runstate.write_start_record(run, config.build_parser().parse_args(args), args)
    assert state(run, args) == runstate.RESUME                               # started: resumed
    assert state(run, args + ["--threads", "7", "--device", "cuda"]) == runstate.RESUME
    assert state(run, args + ["--lr", "1e-3"]) == runstate.REPLACE
    (run / "start.json").write_text((run / "start.json").read_text()[:40])  # torn: never retrained
    assert state(run, args + ["--lr", "1e-3"]) == runstate.RESUME            # the checkpoint decides
    shutil.copy(COMMITTED, run)
    assert state(run, args) == runstate.FINISHED                             # the committed run
    assert state(run, args + ["--threads", "7", "--device", "cuda", "--engine", "fused"]) == runstate.FINISHED
    assert state(run, args + ["--precision", "bf16"]) == runstate.REPLACE
    assert state(run, args + ["--seed", "2"]) == runstate.REPLACE
    why = runstate.run_state(run, config.build_parser().parse_args(args + ["--seed", "2"])).why
    assert why.endswith("holds a finished run of another recipe (seed: 1 -> 2)")
    (run / "metrics.json").write_text("{")
    with pytest.raises(CheckpointError, match="metrics.json is unreadable"):
        state(run, args)


def test_a_flag_added_later_keeps_finished_runs_at_its_default(tmp_path, monkeypatch):
    """A recipe flag added after the committed runs were made (here a made-up --new-knob)
    changes neither their config_hash nor their state while it is left at its default;
    set away from it, it is another recipe."""
    add_project_flags = config._add_project_flags

    def with_new_flag(p):
        add_project_flags(p)
        p.add_argument("--new-knob", type=float, default=0.0)
    monkeypatch.setattr(config, "_add_project_flags", with_new_flag)
    config._defaults.cache_clear()
    try:
        args, run = committed_args(), tmp_path / "seed1"
        run.mkdir()
        shutil.copy(COMMITTED, run)
        recorded = json.loads(COMMITTED.read_text())
        cfg = config.build_parser().parse_args(args)
        assert cfg.new_knob == 0.0 and "new_knob" not in recorded["config"]
        assert config.config_hash(cfg) == recorded["config_hash"]
        assert state(run, args) == runstate.FINISHED
        assert state(run, args + ["--new-knob", "0.5"]) == runstate.REPLACE
    finally:
        config._defaults.cache_clear()


def test_set_aside_moves_the_whole_folder(tmp_path):
    run = tmp_path / "seed1"
    run.mkdir()
    shutil.copy(COMMITTED, run)
    (run / "train.log").write_text("kept\n")
    to = runstate.set_aside(run, "another recipe", new_argv=["--seed", "2"])
    assert not run.exists() and to.name.startswith("seed1.replaced-")
    assert (to / "metrics.json").read_bytes() == COMMITTED.read_bytes() and (to / "train.log").read_text() == "kept\n"
    record = json.loads((to / "replaced.json").read_text())
    assert record["finished"] and record["why"] == "another recipe" and record["new_argv"] == ["--seed", "2"]
    run.mkdir()
    assert runstate.set_aside(run, "again").name != to.name               # two in one second: both kept


def test_the_rule_is_torch_free():
    """The workflow imports it while it builds its DAG, which must not import torch; the
    whole parse and validation of a train command (recipe/config.py) needs none either."""
    import subprocess
    code = ("import sys, locallearn.runs.runstate, locallearn.layout, locallearn.recipe.config as c; "
            "c.parse_train_args(['--model', 'resnet32', '--method', 'dgl', '--dataset', 'CIFAR10']); "
            "sys.exit('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_flags_rebuilt_from_a_config_keep_its_hash():
    """The pipeline's launcher hands its stages argv_of(cfg): every value, its type
    included (--feat-mult 1 parses to 1.0, its default is 1), must come back the same,
    or the stages would record another config_hash than the launcher's."""
    argv = committed_args() + ["--out", "x", "--pipeline-stages", "2", "--tag", "a=b c", "--threads", "1"]
    cfg = config.parse_train_args(argv)
    again = config.parse_train_args(config.argv_of(cfg))
    assert vars(again) == vars(cfg) and config.config_hash(again) == config.config_hash(cfg)
    assert [type(v) for v in vars(again).values()] == [type(v) for v in vars(cfg).values()]
