"""The command line a user meets first: `--version`, every command's `--help` (its own
usage line and description, every default shown), and the start-up line of a real
`locallearn train`."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys

import pytest

from fake_data import write_fake
from locallearn import __version__
from locallearn.cli.main import COMMANDS, main

# Every parser a user can ask for --help, and a phrase of its own description.
HELPS = {
    ("train",): "Train one network with local error signals",
    ("describe",): "without loading data or training",
    ("bench",): "time epochs of one recipe on several training paths",
    ("data",): "make datasets ready in the data dir",
    ("tracking", "init"): "Create the MLflow store and experiment",
    ("tracking", "sync"): "Mirror every finished run folder of a preset",
    ("tables",): "the tables from whatever metrics.json exist (no training)",
    ("report", "curve"): "one step of a preset's report",
    ("report", "all"): "one step of a preset's report",
}

# The commands with a parser of their own: a default of each, shown.
OTHER_DEFAULTS = {
    ("tracking", "init"): {"--experiment": "locallearn"},
    ("tracking", "sync"): {"--experiment": "locallearn"},
    ("tables",): {"--results": "results/full"},
    ("report", "all"): {"--results": "results/full"},
}


def run_main(argv, capsys) -> tuple[int, str, str]:
    """main() as the console script runs it: argparse's --help exits through SystemExit."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def option_blocks(help_text: str) -> dict[str, str]:
    """'--flag' -> its help block (the option line and its continuation lines)."""
    blocks, names = {}, []
    for line in help_text.splitlines():
        m = re.match(r"^  (-[\w-]+)(?:, (-[\w-]+))?", line)
        if m:
            names = [n for n in m.groups() if n]
            blocks.update({n: line for n in names})
        elif names and line.startswith("   "):
            blocks.update({n: blocks[n] + " " + line.strip() for n in names})
        else:
            names = []
    return blocks


def test_version_is_the_package_metadata():
    r = subprocess.run([sys.executable, "-m", "locallearn", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == f"locallearn {__version__}\n"
    assert importlib.metadata.version("locallearn") == __version__


def test_every_command_has_a_help(capsys):
    assert {words[0] for words in HELPS} == set(COMMANDS)


@pytest.mark.parametrize("words", sorted(HELPS), ids=" ".join)
def test_help_has_its_own_usage_description_and_defaults(words, capsys):
    code, out, err = run_main([*words, "--help"], capsys)
    assert code == 0 and err == ""
    assert out.startswith(f"usage: locallearn {' '.join(words)} ")
    assert HELPS[words] in " ".join(out.split())  # descriptions are reflowed to the terminal
    if words != ("train",):
        assert HELPS[("train",)] not in out
    # Every option whose default is a value (not None, an off switch or empty) shows it.
    from locallearn.recipe.config import build_parser
    blocks = option_blocks(out)
    assert "--help" in blocks and len(blocks) > 2
    for flag, default in OTHER_DEFAULTS.get(words, {}).items():
        assert f"(default: {default})" in blocks[flag]
    if words[0] in ("train", "describe", "bench"):
        for action in build_parser()._actions:
            d = action.default
            if action.option_strings and d not in (None, "", [], argparse.SUPPRESS) and d is not False:
                flag = action.option_strings[0]
                assert "default" in blocks[flag], f"{' '.join(words)} --help: {flag} shows no default"


def test_train_help_says_what_a_bare_train_does(capsys):
    _, out, _ = run_main(["train", "--help"], capsys)
    blocks = option_blocks(out)
    assert "(default: vgg8b)" in blocks["--model"] and "(default: CIFAR10)" in blocks["--dataset"]
    assert "(default: 400)" in blocks["--epochs"]
    assert "(default: 200 300 350 375)" in blocks["--lr-decay-milestones"]
    assert "(default: 0.0)" in blocks["--dropout"]          # a zero is a value, shown
    assert "default" not in blocks["--cutout"]              # an off switch: nothing to show
    assert blocks["--data-dir"].count("default") == 1       # the help's own words, not "(default: None)"


def test_bench_help_shows_its_own_epochs(capsys):
    _, out, _ = run_main(["bench", "--help"], capsys)
    epochs = option_blocks(out)["--epochs"]
    assert "(default: 1)" in epochs and "published" not in epochs


def test_a_bad_flag_names_its_own_command(capsys):
    code, _, err = run_main(["describe", "--no-such-flag"], capsys)
    assert code == 2 and err.startswith("locallearn: error: locallearn describe:")


def test_tracking_help_and_bare_tracking(capsys):
    code, out, err = run_main(["tracking", "--help"], capsys)
    assert code == 0 and err == ""
    assert out.startswith("usage: locallearn tracking ") and re.search(r"^  init ", out, re.M)
    assert re.search(r"^  sync ", out, re.M)
    code, out, err = run_main(["tracking"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "locallearn tracking --help" in err


def test_top_level_help_lists_every_command_and_version(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "--version" in out
    for name in COMMANDS:
        assert re.search(rf"^  {name} ", out, re.M), name
    code, _, err = run_main(["no-such-command"], capsys)
    assert code == 2 and err.startswith("usage: locallearn")


def test_train_prints_a_start_up_line(tmp_path):
    """A tiny real run: the first line says version, network, device, precision,
    parameter counts, data folder with split sizes, and output folder, before epoch 1."""
    data, out = tmp_path / "data", tmp_path / "run"
    write_fake("MNIST", data)  # 40 train, 20 test examples
    r = subprocess.run(
        [sys.executable, "-m", "locallearn", "train", "--model", "mlp", "--dataset", "MNIST",
         "--num-layers", "1", "--num-hidden", "16", "--epochs", "1", "--batch-size", "16",
         "--max-train-examples", "30", "--precision", "bf16", "--device", "cpu", "--threads", "1",
         "--data-dir", str(data), "--out", str(out), "--mlflow-uri", ""],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("locallearn ")]
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch 1/1 ")]
    assert len(starts) == 1 and epochs and starts[0] < epochs[0], r.stdout
    m = json.loads((out / "metrics.json").read_text())
    total, network = m["params_total"], m["params_backprop"]
    assert network < total  # predsim: the local heads count in the total only
    assert lines[starts[0]] == (
        f"locallearn {__version__}: mlp on MNIST, predsim | device cpu (1 thread), bf16"
        f" | params {total:,} (network {network:,}; local heads {total - network:,})"
        f" | data {data}: train 30, test 20 | out {out}")
