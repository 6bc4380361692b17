"""The import rules of docs/code-layout.md, read from the source: every import of every
module of the package and of the workflow (function-level ones included) is parsed with
`ast`, resolved to the module it names, and checked against the forbidden arrows, the
import circles and private names imported across modules. Nothing is imported to check."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "locallearn"
FOUNDATION = {"__init__", "atomic", "credentials", "errors", "faults", "layout", "seeding"}
# workflow/ is the Snakemake workflow's plan (locallearn/workflow/plan.py): it reads the run state
# (runs/runstate.py) to schedule only unfinished runs, an arrow recipe/ may not have, so it is
# a wing of its own, held to the workflow's rule below, not a module of recipe/.
WINGS = ("recipe", "data", "layers", "methods", "nets", "train", "runs", "track", "report", "host", "bench",
         "workflow")
WORKFLOW_PY = sorted((REPO / "workflow").rglob("*.py"))
WORKFLOW_SMK = [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (REPO / rel).with_suffix(".py").is_file() or (REPO / rel / "__init__.py").is_file()


def imports_of(path: Path, module: str | None) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every import in the file;
    `from X import Y` names module X.Y when that is a module, else name Y of X."""
    return _imports_in(ast.parse(path.read_text()), path, module)


def _imports_in(tree: ast.AST, path: Path, module: str | None) -> list[tuple[str, str | None, int]]:
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module
            for a in node.names:
                full = f"{src}.{a.name}"
                found.append((full, None, node.lineno) if _is_module(full) else (src, a.name, node.lineno))
    return found


def _smk_imports(path: Path) -> list[tuple[str, str | None, int]]:
    found = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if m := re.match(r"\s*from\s+([\w.]+)\s+import\s+([\w, ]+)", line):
            found += [(m.group(1), n.strip().split(" as ")[0], i) for n in m.group(2).split(",")]
        elif m := re.match(r"\s*import\s+([\w.]+)", line):
            found.append((m.group(1), None, i))
    return found


def package_imports() -> dict[str, list[tuple[str, str | None, int]]]:
    return {_module_name(p): imports_of(p, _module_name(p)) for p in sorted(PKG.rglob("*.py"))}


def wing(module: str) -> str | None:
    """recipe, data, ... for a wing's module; 'foundation', 'cli'; None outside the package."""
    parts = module.split(".")
    if parts[0] != "locallearn":
        return None
    if len(parts) == 1 or parts[1] in FOUNDATION:
        return "foundation"
    if parts[1] in ("cli", "__main__"):
        return "cli"
    return parts[1] if parts[1] in WINGS else "unknown"


def top(module: str) -> str:
    return module.split(".")[0]


def arrows(sources: set[str], forbidden) -> list[str]:
    """Each import of a module in `sources` (wings, or 'workflow') for which forbidden(target, name) holds."""
    out = []
    for mod, found in package_imports().items():
        if wing(mod) in sources:
            out += [f"{mod} -> {t}{'.' + n if n else ''}" for t, n, line in found if forbidden(t, n)]
    if "workflow" in sources:
        for p in WORKFLOW_PY:
            rel = p.relative_to(REPO)
            out += [f"{rel} -> {t}{'.' + n if n else ''}"
                    for t, n, line in imports_of(p, _module_name(p)) if forbidden(t, n)]
        for p in WORKFLOW_SMK:
            rel = p.relative_to(REPO)
            out += [f"{rel} -> {t}{'.' + n if n else ''}" for t, n, line in _smk_imports(p) if forbidden(t, n)]
    return sorted(set(out))


def into(*wings):
    return lambda t, n: wing(t) in wings


def workflow_may_not(t, n):
    """The workflow (its rules and its plan) plans from the recipe, asks the run state, and
    uses the foundation."""
    if wing(t) is None:
        return top(t) in ("torch", "torchvision", "mlflow", "matplotlib")
    return not (wing(t) in ("recipe", "foundation", "workflow") or t in ("locallearn.runs.runstate", REGISTRY))


# The one list of method names, torch-free (a method imports torch only where it builds its
# head): the recipe's flags and cost model and the workflow's grid read it.
REGISTRY = "locallearn.methods.registry"

RULES = {
    "recipe imports neither torch nor mlflow nor any wing but the method registry":
        ({"recipe"}, lambda t, n: top(t) in ("torch", "torchvision", "mlflow", "matplotlib")
         or (wing(t) not in (None, "foundation", "recipe") and t != REGISTRY)),
    # "workflow": the package's workflow/ wing (the plan) and the Snakefile, rules and scripts
    "the workflow imports only recipe/, the method registry, the run state and the foundation":
        ({"workflow"}, workflow_may_not),
    # the CLI, the top, may: `locallearn train --cell` runs a row of the workflow's presets
    "no module of the package but the CLI imports the workflow's plan":
        ((set(WINGS) - {"workflow"}) | {"foundation"}, lambda t, n: wing(t) == "workflow"),
    "data imports none of train, nets, report, runs": ({"data"}, into("train", "nets", "report", "runs")),
    "layers imports none of methods, nets, train": ({"layers"}, into("methods", "nets", "train")),
    "methods imports none of nets, train": ({"methods"}, into("nets", "train")),
    "runs imports none of train, track, report": ({"runs"}, into("train", "track", "report")),
    "track imports none of train, report (the mirror draws nothing)": ({"track"}, into("train", "report")),
    "report imports none of train, track, host (it reads metrics.json)": ({"report"}, into("train", "track", "host")),
    "train imports nothing from report": ({"train"}, into("report")),
    "no module of the package imports the CLI":
        (set(WINGS) | {"foundation"}, lambda t, n: wing(t) == "cli"),
    # the backward arrows of issue 40, each by name
    "the local losses do not import the cost model":
        ({"layers"}, lambda t, n: t == "locallearn.recipe.cost"),
    "the dataset table is read from recipe/specs.py, not through the torch-importing readers":
        (set(WINGS) | {"foundation", "cli", "workflow"}, lambda t, n: t == "locallearn.data.datasets" and n == "SPECS"),
    # a record older than metrics.json's head_macs (the committed runs) is counted by the
    # recipe itself (recipe/cost.py recorded_head_macs), which fills in its own flags
    "report builds no train parser and runs no cost model (it reads metrics.json)":
        ({"report"}, lambda t, n: (t == "locallearn.recipe.config" and n == "build_parser")
         or (t == "locallearn.recipe.cost" and n != "recorded_head_macs")),
}

# Arrows still to mend (issue 40): each rule's violations as they stand. A mend empties
# its entry; a new violation, or a mended one left listed, fails.
PENDING: dict[str, set[str]] = {}


@pytest.mark.parametrize("rule", RULES)
def test_forbidden_arrows(rule):
    sources, forbidden = RULES[rule]
    assert set(arrows(sources, forbidden)) == PENDING.get(rule, set())


def test_methods_import_torch_only_where_a_head_is_built():
    """A method file's module-level imports (what importing it runs) hold no torch and no
    wing that imports torch; its head builder imports them."""
    found = []
    for path in sorted((PKG / "methods").glob("*.py")):
        module = _module_name(path)
        top_level = ast.Module(body=[n for n in ast.parse(path.read_text()).body
                                     if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
        for t, n, line in _imports_in(top_level, path, module):
            if top(t) in ("torch", "torchvision") or wing(t) not in (None, "foundation", "recipe", "methods"):
                found.append(f"{module}:{line} -> {t}")
    assert found == []


def test_the_recipe_and_the_registry_import_no_torch_when_run():
    """What the workflow imports while it builds its DAG, imported for real: no torch, no mlflow."""
    import subprocess
    import sys
    code = ("import sys, locallearn.methods.registry as r, locallearn.recipe.config, locallearn.recipe.cost, "
            "locallearn.workflow.plan, locallearn.workflow.schemas; r.registry(); "
            "print(sorted(m for m in ('torch', 'mlflow', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_pending_names_only_rules():
    assert set(PENDING) <= set(RULES)


def test_no_import_circle():
    """Tarjan's strongly connected components over module -> imported module (a name
    imported from a package counts as an arrow to the package's __init__)."""
    graph = {mod: sorted({t for t, _, _ in found if wing(t) is not None and t != mod})
             for mod, found in package_imports().items()}
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                circles.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert circles == []


def test_no_private_name_across_modules():
    found = []
    for mod, imports in package_imports().items():
        found += [f"{mod}:{line} -> {t}.{n}" for t, n, line in imports
                  if n and n.startswith("_") and not n.startswith("__") and wing(t) is not None]
    for p in WORKFLOW_PY:
        found += [f"{p.relative_to(REPO)}:{line} -> {t}.{n}" for t, n, line in imports_of(p, _module_name(p))
                  if n and n.startswith("_") and not n.startswith("__") and wing(t) is not None]
    assert found == []


def test_every_module_is_in_a_wing_or_the_foundation():
    assert [m for m in package_imports() if wing(m) == "unknown"] == []


def test_wings_init_files_hold_only_a_docstring():
    """Importing one module of a wing imports nothing else of it."""
    for w in (*WINGS, "cli"):
        body = ast.parse((PKG / w / "__init__.py").read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), w


def test_a_flag_is_read_from_the_config_not_defaulted_again():
    """The parsed config holds every flag (recipe/config.py): nothing outside the recipe
    reads one with a default of its own, and one rule says what a number is."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(REPO)
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"getattr\((cfg|args|self\.cfg),\s*\"\w+\",", line) and path.parent.name != "recipe":
                found.append(f"{rel}:{i} reads a flag with its own default")
            if re.search(r"isinstance\([^)]*\(int, float\)\)", line) and rel.as_posix() != "locallearn/runs/runstate.py":
                found.append(f"{rel}:{i} has its own number rule (runs/runstate.py is_number)")
    assert found == []
