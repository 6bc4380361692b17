"""The front page and docs/ (issue 24): every relative link and every file or module
path they name exists; every page of docs/ is reachable from the README; the README's
first code block is still the two set-up commands (the second exactly what .ci/run
runs); and the tables regenerated from the committed runs still splice into the README
unchanged."""
from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from locallearn.report import steps as report, tables
from locallearn.workflow import plan

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "workflow" / "profiles" / "slurm" / "README.md"]
# Paths the docs name that a run makes (never in git): a named path under one of these is
# not looked for.
MADE_BY_RUNS = ("results/quick", "results/full/mlflow.db", "results/full/mlartifacts", "results/full/logs",
                "results/full/benchmarks", "results/.prepared", "results/grid-cost", "results/<preset>",
                ".venv", "data/", ".snakemake", "report.html", "/")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _text(page: Path) -> str:
    """The page without its generated tables block (checked by the splice test)."""
    text = page.read_text()
    if report.BEGIN in text:
        text = text[:text.index(report.BEGIN)] + text[text.index(report.END):]
    return text


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    text = FENCE.sub("", _text(page))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link {target} -> no such file"
        if anchor and dest.suffix == ".md":
            anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", FENCE.sub("", dest.read_text()), re.M)}
            assert anchor in anchors, f"{page.name}: link {target} -> no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_paths_and_modules_exist(page):
    text = _text(page)
    named = set(re.findall(r"`([^`\s]+)`", text))
    for code in FENCE.findall(text):   # paths in commands: words with a slash and a dot
        if code.startswith("```bash"):
            named |= set(re.findall(r"(?<![\w/:.$-])((?:\.?[\w-]+/)+[\w.-]+\.\w+)", code))
    for name in sorted(named):
        name = name.rstrip(".,;:")
        if re.fullmatch(r"locallearn(\.\w+)+", name):   # a module, or a name in one
            parts = name.split(".")
            for cut in range(len(parts), 1, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ModuleNotFoundError:
                    continue
                for attr in parts[cut:]:
                    assert hasattr(obj, attr), f"{page.name}: {name} does not exist"
                    obj = getattr(obj, attr)
                break
            else:
                pytest.fail(f"{page.name}: module {name} does not exist")
        elif "/" in name and not re.search(r"[<>*$~{}=|]|://|^-|^\w+:", name) and not name.startswith(MADE_BY_RUNS):
            assert (REPO / name).exists() or (page.parent / name).exists(), f"{page.name}: {name} does not exist"


def test_every_docs_page_is_linked_from_the_readme():
    text = _text(REPO / "README.md")
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in text, f"docs/{page.name} is not linked from README.md"


def test_readme_is_a_front_page():
    text = _text(REPO / "README.md")
    assert text.count("\n") <= 250


def test_first_code_block_is_the_two_setup_commands():
    first = FENCE.search((REPO / "README.md").read_text()).group(0).splitlines()[1:-1]
    commands = [line.split("#", 1)[0].strip() for line in first]
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert commands == ["bash .ci/install.sh && . .venv/bin/activate && snakemake --cores all quick", ci]
    assert ci == "bash .ci/install.sh && . .venv/bin/activate && python -m pytest -q tests"


def test_regenerated_tables_splice_in_unchanged(tmp_path):
    """The committed runs, compiled as `locallearn tables` does, give the README's own
    generated block."""
    shutil.copytree(REPO / "results" / "full" / "runs", tmp_path / "results" / "full" / "runs",
                    ignore=shutil.ignore_patterns("mlflow_run.json", "curve.png"))
    config = plan.load_config()
    rows = plan.load_cells(plan.cells_path(config))
    text = (REPO / "README.md").read_text()
    out = report.compile_tables(rows, tmp_path / "results" / "full", seeds=config["seeds"],
                                tolerance=config["tolerance"], readme_path=tmp_path / "README.md",
                                intro=tables.intro(config["seeds"], "`workflow/config/config.yaml`"))
    assert report.splice_text(text, out["tables"]) == text
