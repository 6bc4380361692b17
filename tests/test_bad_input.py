"""Bad input, one test each: a non-zero exit, one line on stderr that names what is wrong
and where (no traceback), and no metrics.json that a later step could take as a result.

Runs go through the CLI entry point in this process (`locallearn.cli.main.main`, what
`python -m locallearn` calls) on a tiny fake MNIST, so the whole file takes seconds.
cells.tsv and workflow-config errors are raised by the workflow plan (locallearn/workflow/plan.py, before any
job); tests/test_workflow.py covers them case by case, here one of each stands in.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch

from conftest import CELLS_TSV, REPO
from fake_data import write_fake
from locallearn.recipe import cells
from locallearn.cli.main import main
from locallearn.recipe.config import parse_train_args
from locallearn.errors import ConfigError
from locallearn.workflow import plan


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_fake("MNIST", d, n_train=200, n_test=50)
    return d


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def base(data_dir, out, *extra):
    return ["--model", "mlp", "--dataset", "MNIST", "--num-layers", "2", "--num-hidden", "16",
            "--epochs", "2", "--lr-decay-milestones", "10", "--device", "cpu", "--threads", "1",
            "--data-dir", str(data_dir), "--out", str(out), "--mlflow-uri", "", *extra]


def fails(capsys, argv, *needles, code=None, no_metrics=True):
    """Run `locallearn train argv`; assert the one-line failure; return the line."""
    rc = main(["train", *argv])
    err = capsys.readouterr().err
    assert rc != 0 and (code is None or rc == code), (rc, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("locallearn: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    if out and no_metrics:
        assert not os.path.exists(os.path.join(out, "metrics.json"))
    return lines[0]


# ------------------------------------------------------------------------- flags
FLAG_CASES = {
    "unknown-model": (["--model", "resnet99"], ["--model", "resnet99", "known:"]),
    "unknown-dataset": (["--dataset", "ImageNet"], ["--dataset", "ImageNet"]),
    "unknown-loss": (["--loss-sup", "hinge"], ["--loss-sup", "hinge"]),
    "unknown-optimizer": (["--optim", "rmsprop"], ["--optim", "rmsprop"]),
    "unknown-nonlinearity": (["--nonlin", "tanh"], ["--nonlin", "tanh"]),
    "bio-with-backprop": (["--bio", "--backprop"], ["--bio", "--backprop"]),
    "no-detach-with-backprop": (["--no-detach", "--backprop"], ["--no-detach"]),
    "zero-width": (["--num-hidden", "0"], ["--num-hidden", "positive"]),
    "negative-batch": (["--batch-size", "-5"], ["--batch-size", "-5"]),
    "zero-epochs": (["--epochs", "0"], ["--epochs"]),
    "negative-lr": (["--lr", "-1"], ["--lr"]),
    "dropout-above-1": (["--dropout", "1.5"], ["--dropout", "1.5"]),
    "milestones-out-of-order": (["--lr-decay-milestones", "30", "20"], ["--lr-decay-milestones", "[30, 20]"]),
    "not-a-number": (["--epochs", "many"], ["--epochs", "many"]),
    "unknown-flag": (["--colour", "red"], ["unrecognized arguments: --colour red"]),
    "bad-tag": (["--tag", "cell"], ["--tag", "KEY=VALUE"]),
    "save-dir-and-out-disagree": (["--save-dir", "elsewhere"], ["--save-dir", "alias of --out"]),
    # shrunk examples of tests/test_bad_input_generated.py's search
    "zero-holes-named-as-typed": (["--n_holes", "0"], ["--n_holes: must be positive, got 0"]),
    "zero-eval-batch": (["--eval-batch-size", "0"], ["--eval-batch-size: must be positive, got 0"]),
    "seed-beyond-64-bits": (["--seed", str(10**30)], ["--seed: must be in [0, 2**64)"]),
    "negative-seed": (["--seed=-1"], ["--seed: must be in [0, 2**64), got -1"]),
    "one-training-example": (["--max-train-examples", "1"], ["--max-train-examples: must be 0 (all) or at least 2"]),
    "batches-of-one": (["--batch-size", "1"], ["--batch-size: must be at least 2"]),
    "negative-weight-decay": (["--weight-decay", "-1"], ["--weight-decay: must be >= 0, got -1.0"]),
    "negative-momentum": (["--optim", "sgd", "--momentum", "-0.5"], ["--momentum: must be >= 0"]),
    "nan-lr": (["--lr", "nan"], ["--lr: must be a finite number, got nan"]),
    "zero-decay-factor": (["--lr-decay-fact", "0"], ["--lr-decay-fact: must be positive"]),
    "uri-with-a-broken-host": (["--mlflow-uri", "http://[::1"], ["--mlflow-uri: not a valid URI"]),
    "uri-user-info-without-a-scheme": (["--mlflow-uri", "user:s3cret@127.0.0.1:5000"],
                                       ["--mlflow-uri: has '@' but no scheme://user:password@host form"]),
    "double-dash-as-a-number": (["--batch-size=--"], ["argument --batch-size: expected one argument"]),
    "double-dash-as-a-name": (["--model=--"], ["argument --model: expected one argument"]),
    "double-dash-as-milestones": (["--lr-decay-milestones=--"],
                                  ["argument --lr-decay-milestones: expected at least one argument"]),
}


@pytest.mark.parametrize("case", FLAG_CASES)
def test_bad_flag(case, capsys, data, tmp_path):
    extra, needles = FLAG_CASES[case]
    fails(capsys, base(data, tmp_path / "run", *extra), *needles, code=2)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_password_outside_the_user_info_is_not_repeated(capsys, data, tmp_path):
    for uri in ("user:s3cret@127.0.0.1:5000", "http:/user:s3cret@127.0.0.1:5000"):
        assert "s3cret" not in fails(capsys, base(data, tmp_path / "run", "--mlflow-uri", uri), "--mlflow-uri")


def test_cuda_on_a_machine_without_it(capsys, data, tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    fails(capsys, base(data, tmp_path / "run", "--device", "cuda"), "--device cuda", "CUDA is not available")


def test_resume_from_a_missing_checkpoint(capsys, data, tmp_path):
    fails(capsys, base(data, tmp_path / "run", "--resume", str(tmp_path / "nope.pt")),
          "--resume", "nope.pt", "no such checkpoint")


class PlantFile:
    """Unpickled, creates a file: what a checkpoint from an untrusted source could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path
        return Path.touch, (Path(self.path),)


def _evil_checkpoint(path, marker):
    import torch
    torch.save({"epoch": 1, "payload": PlantFile(marker)}, path)
    return path


def test_checkpoint_that_would_run_code_is_refused(capsys, data, tmp_path):
    """Checkpoints are loaded as data (weights_only): one that holds a pickled object is
    refused by name, given with --resume or found in the run folder, and never unpickled."""
    import torch
    demo = tmp_path / "demo-planted"
    torch.load(_evil_checkpoint(tmp_path / "demo.pt", demo), weights_only=False)
    assert demo.exists()  # the trap is real: unpickled, it plants its file
    marker = tmp_path / "planted"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    fails(capsys, base(data, tmp_path / "run", "--resume", str(evil)), str(evil), "pickled objects",
          "refusing to load it")
    out = tmp_path / "planted-run"
    out.mkdir()
    _evil_checkpoint(out / "checkpoint.pt", marker)
    fails(capsys, base(data, out), str(out / "checkpoint.pt"), "pickled objects", "refusing to load it")
    assert not marker.exists()


def test_resume_from_a_torn_checkpoint(capsys, data, tmp_path):
    """--resume names one file: if it is torn, the run stops instead of starting over."""
    out = tmp_path / "run"
    assert main(["train", *base(data, out, "--epochs", "1")]) == 0
    torn = tmp_path / "torn.pt"
    torn.write_bytes((out / "checkpoint.pt").read_bytes()[:1000])
    capsys.readouterr()
    rc = main(["train", *base(data, tmp_path / "again", "--resume", str(torn))])
    err = capsys.readouterr().err
    assert rc != 0 and f"--resume {torn}: the checkpoint is unreadable" in err.splitlines()[-1]


def test_checkpoint_that_does_not_fit_the_engine(capsys, data, tmp_path):
    """A checkpoint of this config whose optimizer state does not fit the engine (e.g. a
    reference-engine checkpoint from before its global optimizer held the output layer
    alone) stops the run with one line; the checkpoint is kept."""
    out = tmp_path / "run"
    assert main(["train", *base(data, out, "--engine", "reference")]) == 0
    (out / "metrics.json").unlink()   # as if killed before its last write
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    name = next(iter(state["optimizers"]))
    state["optimizers"][name]["param_groups"][0]["params"].append(10_000)   # one parameter too many
    torch.save(state, out / "checkpoint.pt")
    capsys.readouterr()
    rc = main(["train", *base(data, out, "--engine", "reference")])
    last = capsys.readouterr().err.splitlines()[-1]
    assert rc != 0 and f"{out}: the checkpoint of epoch 2 does not fit this run's reference engine" in last
    assert "use another --out, or delete the checkpoint to start over" in last
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()


def test_no_print_stats_suppresses_the_epoch_lines(capsys, data, tmp_path):
    """As the reference's flag: no per-epoch statistics lines; the run is the same."""
    assert main(["train", *base(data, tmp_path / "quiet", "--no-print-stats")]) == 0
    quiet = capsys.readouterr().out
    assert main(["train", *base(data, tmp_path / "loud")]) == 0
    loud = capsys.readouterr().out
    quiet = "".join(ln for ln in quiet.splitlines(keepends=True) if not ln.startswith("# "))  # train.log header
    assert "epoch 1/2" in loud and "epoch 2/2" in loud and "epoch" not in quiet
    q, lo = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("quiet", "loud"))
    assert q["test_error"] == lo["test_error"] and q["config_hash"] == lo["config_hash"]

# ------------------------------------------------------------------ cells.tsv, workflow config
def test_cells_row_with_a_bad_value_is_refused_as_flags():
    row = dict(cells.read_cells(CELLS_TSV)[0], nonlin="sigmoid")
    with pytest.raises(ConfigError, match="--nonlin: unknown value 'sigmoid'"):
        parse_train_args(cells.recipe_args(row))


def test_cells_row_with_a_missing_column(tmp_path):
    text = (REPO / "workflow" / "config" / "cells.tsv").read_text().splitlines()
    header = text[0].split("\t")
    k = header.index("beta")
    drop = lambda line: "\t".join(v for i, v in enumerate(line.split("\t")) if i != k)  # noqa: E731
    bad = tmp_path / "cells.tsv"
    bad.write_text("\n".join(map(drop, text[:3])) + "\n")
    with pytest.raises(plan.PlanError, match=r"cells.tsv: missing column\(s\) 'beta'") as e:
        plan.load_cells(bad)
    assert "\n" not in str(e.value)


def test_cells_row_with_a_bad_value(tmp_path):
    lines = (REPO / "workflow" / "config" / "cells.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    row = lines[1].split("\t")
    row[header.index("epochs")] = "forever"
    bad = tmp_path / "cells.tsv"
    bad.write_text("\n".join([lines[0], "\t".join(row)]) + "\n")
    with pytest.raises(plan.PlanError, match="line 2 .*column 'epochs': expected an integer, got 'forever'"):
        plan.load_cells(bad)


def test_workflow_config_errors_are_one_line():
    with pytest.raises(plan.PlanError) as e:
        plan.load_config(overrides={"cells": None, "seeds": "x"})
    assert "\n" not in str(e.value)
    # Snakemake's validate() names one key: the error jsonschema judges most relevant
    assert str(e.value) == ("invalid workflow config (workflow/config/config.yaml, --config, --configfile): "
                            "config key 'cells': None is not of type 'string'")


def test_quick_budget_the_trainer_refuses_is_refused_before_any_job():
    """Shrunk example: quick.max_train_examples 1 passed the schema; every quick job failed."""
    config = plan.load_config(overrides={"quick": {"max_train_examples": 1}})
    presets = plan.make_presets(config, plan.load_cells(plan.cells_path(config)))
    assert presets["full"].rows   # the other preset is unaffected
    with pytest.raises(plan.PlanError, match=r"quick preset's job for cell fmnist-mlp-\S+ would be refused: "
                                                r"--max-train-examples: must be 0 \(all\) or at least 2.*"
                                                r"quick.max_train_examples"):
        presets["quick"]


@pytest.mark.parametrize("column, value, message", [
    ("dropout", "NAN", "--dropout: must be a finite number, got nan"),          # shrunk example
    ("milestones", "30 20", "--lr-decay-milestones: must be non-negative and strictly increasing"),
    ("bio", "1", "--bio: --bio trains local heads; it cannot be combined with --backprop"),
])
def test_cells_row_the_trainer_would_refuse(tmp_path, column, value, message):
    """The row's recipe passes the schema but not `locallearn train`: refused before any job."""
    lines = (REPO / "workflow" / "config" / "cells.tsv").read_text().splitlines()
    header, row = lines[0].split("\t"), lines[1].split("\t")   # mnist-mlp-backprop
    row[header.index(column)] = value
    bad = tmp_path / "cells.tsv"
    bad.write_text("\n".join([lines[0], "\t".join(row)]) + "\n")
    with pytest.raises(plan.PlanError, match="cells.tsv line 2 \\(cell mnist-mlp-backprop\\): locallearn train "
                                                "refuses the row's recipe: " + re.escape(message)):
        plan.load_cells(bad)


def test_unknown_workflow_config_key():
    with pytest.raises(plan.PlanError, match="unknown key \\('colour' was unexpected\\)"):
        plan.load_config(overrides={"colour": "red"})


# ------------------------------------------------------------------------- data
def test_data_dir_without_the_dataset_offline(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(capsys, base(empty, tmp_path / "run", "--dataset", "CIFAR10"),
          "CIFAR10", "not found", str(empty), "locallearn data prepare CIFAR10")


def _corrupt_copy(data, tmp_path, change):
    import shutil
    d = tmp_path / "data"
    shutil.copytree(data, d)
    f = d / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    change(f)
    return d, f


def test_truncated_dataset_file(capsys, data, tmp_path):
    d, f = _corrupt_copy(data, tmp_path, lambda f: f.write_bytes(f.read_bytes()[:-100]))
    fails(capsys, base(d, tmp_path / "run"), "MNIST", str(f), "corrupt")


def test_bit_flipped_dataset_file(capsys, data, tmp_path):
    def flip(f):
        b = bytearray(f.read_bytes())
        b[len(b) // 2] ^= 0x10
        f.write_bytes(bytes(b))
    d, f = _corrupt_copy(data, tmp_path, flip)
    fails(capsys, base(d, tmp_path / "run"), "MNIST", str(f), "corrupt")


# ------------------------------------------------------------------------- outputs
def test_checkpoint_of_another_config_is_set_aside_or_refused(capsys, data, tmp_path):
    """An unfinished run of another recipe in --out is moved aside whole, whether its
    start record says so or (start record lost) its checkpoint does; an explicit --resume
    of another recipe's checkpoint is refused with one line, the file untouched."""
    for lose_record in (False, True):
        out = tmp_path / f"run{int(lose_record)}"
        assert main(["train", *base(data, out, "--epochs", "1")]) == 0
        (out / "metrics.json").unlink()  # as if killed after the checkpoint
        if lose_record:
            (out / "start.json").unlink()
        before = (out / "checkpoint.pt").read_bytes()
        assert main(["train", *base(data, out, "--epochs", "1", "--seed", "2")]) == 0
        err = capsys.readouterr().err
        assert "another" in err and "seed: 1 -> 2" in err and "moved whole to" in err, err
        [aside] = tmp_path.glob(f"run{int(lose_record)}.replaced-*")
        assert (aside / "checkpoint.pt").read_bytes() == before  # kept, byte for byte
        assert json.loads((out / "metrics.json").read_text())["seed"] == 2
    ckpt = out / "checkpoint.pt"   # the seed 2 run's
    before = ckpt.read_bytes()
    fails(capsys, base(data, tmp_path / "fresh", "--epochs", "1", "--resume", str(ckpt)),
          str(ckpt), "another config", "seed: 2 -> 1")
    assert ckpt.read_bytes() == before and not (tmp_path / "fresh").exists()


def test_finished_run_of_another_config_is_set_aside(capsys, data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *base(data, out, "--epochs", "1")]) == 0
    finished = (out / "metrics.json").read_bytes()
    assert main(["train", *base(data, out, "--epochs", "1", "--lr", "1e-3")]) == 0
    err = capsys.readouterr().err
    assert "holds a finished run of another recipe (lr: 0.0005 -> 0.001)" in err and "moved whole to" in err
    [aside] = tmp_path.glob("run.replaced-*")
    assert (aside / "metrics.json").read_bytes() == finished  # the finished result is kept as it was
    assert json.loads((aside / "replaced.json").read_text())["finished"] is True


def test_output_dir_under_a_regular_file(capsys, data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    fails(capsys, base(data, blocker / "run"), "--out", str(blocker / "run"), "cannot write there")


def _mlflow_status(out, uri):
    import mlflow.tracking
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    run = mlflow.tracking.MlflowClient(uri).get_run(run_id)
    return run.info.status, run.data.tags.get("locallearn.error", "")


def test_disk_full_writing_a_checkpoint(capsys, data, tmp_path, monkeypatch, mlflow_uri):
    import torch
    out = tmp_path / "run"
    monkeypatch.setenv("LOCALLEARN_FAULT", "enospc-checkpoint:2")
    argv = base(data, out, "--mlflow-uri", mlflow_uri)
    fails(capsys, argv, "cannot write checkpoint", str(out), "No space left on device",
          "epoch 1 is kept")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(out.glob("*.tmp"))  # the temporary file is removed
    assert _mlflow_status(out, mlflow_uri)[0] == "FAILED"
    monkeypatch.delenv("LOCALLEARN_FAULT")  # space freed: the same command finishes the run
    assert main(["train", *argv]) == 0 and json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert _mlflow_status(out, mlflow_uri)[0] == "FINISHED"


def test_disk_full_writing_metrics(capsys, data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("LOCALLEARN_FAULT", "enospc-metrics:2")
    fails(capsys, base(data, out), "cannot write", str(out / "metrics.json"), "No space left on device",
          "epoch 2 is kept")
    assert not list(out.glob("*.tmp")) and (out / "checkpoint.pt").exists()
    monkeypatch.delenv("LOCALLEARN_FAULT")
    assert main(["train", *base(data, out)]) == 0 and (out / "metrics.json").exists()
    assert "resuming after epoch 2" in capsys.readouterr().out


def test_divergence_injected_nan(capsys, data, tmp_path, monkeypatch, mlflow_uri):
    import torch
    out = tmp_path / "run"
    monkeypatch.setenv("LOCALLEARN_FAULT", "nan:2")
    line = fails(capsys, base(data, out, "--mlflow-uri", mlflow_uri), str(out), "diverged in epoch 2",
                 "train_loss nan", "epoch 1) is kept")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    status, error = _mlflow_status(out, mlflow_uri)
    assert status == "FAILED" and "diverged in epoch 2" in error and error in line


def test_divergence_huge_learning_rate(capsys, data, tmp_path):
    out = tmp_path / "run"
    fails(capsys, base(data, out, "--optim", "sgd", "--lr", "1e30", "--no-batch-norm"),
          str(out), "diverged in epoch 1", "no checkpoint was written")
    assert not (out / "checkpoint.pt").exists()


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A finished two-epoch run folder, made once: tests change a copy of it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *base(data, out)]) == 0
    return out


# Shrunk examples of tests/test_bad_input_generated.py's search: each crashed the
# resumed run with a traceback (or resumed it with its epochs counted twice).
@pytest.mark.parametrize("key, value", [("epoch", False), ("epoch", None), ("history", None),
                                        ("wall_seconds", None), ("model", None), ("optimizers", None)])
def test_checkpoint_with_a_field_of_the_wrong_type(capsys, data, tmp_path, finished_run, key, value):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "metrics.json").unlink()   # as if stopped after the last checkpoint
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state[key] = value
    torch.save(state, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    fails(capsys, base(data, out), str(out), "delete the checkpoint to start over")
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("change", [lambda m: m.pop("test_error"), lambda m: m.update(test_error=None),
                                    lambda m: m.update(epochs=False)], ids=["no-test-error", "null-test-error",
                                                                            "epochs-false"])
def test_finished_metrics_json_with_a_field_of_the_wrong_type(capsys, data, tmp_path, finished_run, change):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    metrics = json.loads((out / "metrics.json").read_text())
    change(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fails(capsys, base(data, out), str(out / "metrics.json"), "unreadable", no_metrics=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_metrics_json_that_is_not_an_object(capsys, data, tmp_path, finished_run):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "metrics.json").write_text("null")
    fails(capsys, base(data, out), str(out / "metrics.json"), "not a JSON object", no_metrics=False)


def test_unreadable_metrics_json(capsys, data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *base(data, out, "--epochs", "1")]) == 0
    (out / "metrics.json").write_text('{"test_error": 1')  # damaged by a copy or an editor
    fails(capsys, base(data, out, "--epochs", "1"), str(out / "metrics.json"), "unreadable", "restore it, or move the folder away",
          no_metrics=False)  # the damaged file is the user's to inspect: refused, not removed


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="--model"):
        main(["train", "--model", "resnet99", "--out", str(tmp_path / "run"), "--debug"])


@pytest.fixture
def tiny_disk(tmp_path):
    """mount(size) -> a folder on a tmpfs of that many bytes (root only; skipped elsewhere)."""
    import subprocess
    mounts = []

    def mount(size):
        d = tmp_path / f"disk{len(mounts)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounts.append(d)
        return d
    yield mount
    for d in mounts:
        subprocess.run(["umount", str(d)], check=False)


def test_disk_really_full(capsys, data, tmp_path, tiny_disk):
    """No hook: a real filesystem fills up during the third epoch's checkpoint."""
    import torch
    probe = tmp_path / "probe"
    assert main(["train", *base(data, probe, "--epochs", "1")]) == 0
    size = (probe / "checkpoint.pt").stat().st_size
    disk = tiny_disk((int(size * 2.5) // 4096 + 1) * 4096)  # room for two checkpoints, not three
    out = disk / "run"
    capsys.readouterr()
    fails(capsys, base(data, out, "--epochs", "4"), "cannot write checkpoint", str(out),
          "No space left on device", "epoch 2 is kept")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not list(out.glob("*.tmp"))  # the temporary file is removed


def test_sqlite_uri_naming_a_folder(capsys, data, tmp_path):
    """Shrunk example of the generated search: sqlite://// (the root folder) crashed
    with a traceback while the store's lock file was made."""
    fails(capsys, base(data, tmp_path / "run", "--mlflow-uri", "sqlite:////"),
          "MLflow store sqlite:////", "cannot create its database file /")
