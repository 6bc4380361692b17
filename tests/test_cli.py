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
    code, out, err = run_main([], capsys)          # a bare `locallearn`: the same help, exit 2
    assert code == 2 and out.startswith("usage: locallearn COMMAND") and err == ""


def test_an_unknown_command_is_one_line_naming_the_commands(capsys):
    code, out, err = run_main(["trian", "--model", "mlp"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("locallearn: error: unknown command 'trian' (did you mean train?)")
    assert err.rstrip().endswith("commands: " + ", ".join(COMMANDS))
    code, out, err = run_main(["--debug", "train"], capsys)   # a flag before the command
    assert code == 2 and out == "" and err.count("\n") == 1 and "the command comes first" in err


def test_top_help_lists_every_report_step_from_its_one_list(capsys):
    """`report field` included: the top help, `report --help` and an unknown step's line all
    read REPORT_STEPS."""
    from locallearn.cli.report import REPORT_STEPS
    _, out, _ = run_main(["--help"], capsys)
    assert f"report {'|'.join(REPORT_STEPS)}:" in " ".join(out.split()) and "field" in REPORT_STEPS
    code, out, err = run_main(["report", "--help"], capsys)
    assert code == 0 and err == "" and out.startswith("usage: locallearn report STEP ")
    for step in REPORT_STEPS:
        assert re.search(rf"^  {step} ", out, re.M), step
    code, out, err = run_main(["report", "feild"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "unknown step 'feild' (did you mean field?)" in err and ", ".join(REPORT_STEPS) in err


def train_help_sections(out: str) -> dict[str, list[str]]:
    """A help's sections (the heading's words -> the flags listed under it), in order."""
    sections, title = {}, None
    for line in out.splitlines():
        if re.match(r"^\S.*:$", line):
            title = line[:-1]
            sections[title] = []
        elif title and (m := re.match(r"^  (--?[\w-]+)", line)):
            sections[title].append(m.group(1))
    return sections


def test_train_help_groups_usage_choices_and_examples(capsys):
    from locallearn.recipe.config import CHOICES, FLAG_GROUPS, build_parser
    from locallearn.recipe.specs import MODEL_NAMES
    code, out, err = run_main(["train", "--help"], capsys)
    assert code == 0 and err == ""
    usage = out.split("\n\n")[0]
    assert "\n" not in usage and len(usage) <= 80, usage       # one short usage line, not every flag
    sections = train_help_sections(out.split("\nExamples")[0])
    assert list(sections) == ["options", *FLAG_GROUPS]
    assert list(FLAG_GROUPS) == ["what is trained", "local losses", "method", "optimisation", "data",
                                 "running", "tracking"]
    assert sections["options"] == ["-h"]                         # every flag in a group
    flags = [a.option_strings[0] for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    assert sorted(f for title in FLAG_GROUPS for f in sections[title]) == sorted(flags)
    for flag, title in {"--model": "what is trained", "--loss-sup": "local losses", "--method": "method",
                        "--lr": "optimisation", "--cutout": "data", "--data-dir": "data", "--seed": "running",
                        "--engine": "running", "--mlflow-uri": "tracking"}.items():
        assert flag in sections[title], (flag, title)
    blocks = option_blocks(out)
    for dest, names in {**CHOICES, "model": MODEL_NAMES}.items():   # fixed choices, shown
        flag = "--" + dest.replace("_", "-")
        assert blocks[flag].startswith(f"  {flag} {{{','.join(names)}}}"), blocks[flag]
    assert "examples" in out.lower() and "--resume" in out.split("Examples")[1]


def test_train_help_examples_run_the_recipes_they_name():
    """The examples parse, and are the paper's recipe (its hash as before the flags were
    grouped) and a quick CPU run."""
    import shlex

    from locallearn.recipe.config import TRAIN_EXAMPLES, config_hash, parse_train_args
    commands = [shlex.split(c.replace("\\\n", " "))
                for c in re.findall(r"^  (locallearn train (?:.*\\\n)*.*)$", TRAIN_EXAMPLES, re.M)]
    assert [c[:2] for c in commands] == [["locallearn", "train"]] * 4
    paper, quick = (parse_train_args(c[2:]) for c in commands[:2])
    assert (paper.model, paper.dataset, paper.lr_decay_milestones) == ("mlp", "FashionMNIST", [100, 150, 175, 188])
    assert config_hash(paper) == "148313c58772" and config_hash(quick) == "447382185841"
    assert quick.device == "cpu" and quick.epochs <= 2 and "--resume" in commands[3]
    from locallearn.cli.main import cell_argv   # one cell by name: the quick preset's run of that row
    cell = parse_train_args(cell_argv(commands[2][2:]))
    assert (cell.run_name, cell.seed, cell.epochs) == ("fmnist-mlp-predsim-s2", 2, 2)
    assert cell.out.endswith("results/quick/runs/fmnist-mlp-predsim/seed2")


@pytest.mark.slow
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
    name = f"[{out.name}] "   # every line names the run (default: its folder's name)
    starts = [i for i, line in enumerate(lines) if line.startswith(name + "locallearn ")]
    epochs = [i for i, line in enumerate(lines) if line.startswith(name) and " epoch 1/1 " in line]
    assert len(starts) == 1 and epochs and starts[0] < epochs[0], r.stdout
    m = json.loads((out / "metrics.json").read_text())
    total, network = m["params_total"], m["params_backprop"]
    assert network < total  # predsim: the local heads count in the total only
    assert lines[starts[0]] == name + (
        f"locallearn {__version__}: mlp on MNIST, predsim | device cpu (1 thread), bf16"
        f" | params {total:,} (network {network:,}; local heads {total - network:,})"
        f" | data {data}: train 30, test 20 | out {out}")
