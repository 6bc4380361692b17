"""The lists of names in the workflow's schema files, generated from the registries.

`python -m locallearn.workflow.schemas` writes them into workflow/schemas/*.json (and
`--check` only says whether they are current): the datasets (recipe/specs.py SPECS),
the models (recipe/specs.py MODEL_NAMES), the grid's `loss` values (recipe/cells.py:
the paper's losses and the built-in methods of methods/registry.py) and the precisions
(recipe/config.py CHOICES). The files are committed with them, so Snakemake's
validate() and any JSON Schema tool read the same rules; tests/test_workflow.py checks
that generating them again changes nothing. Installed plugin methods are not written
into the files: the plan adds their names when it loads a grid (`with_plugins`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..methods import registry
from ..recipe.cells import PAPER_LOSSES
from ..recipe.config import CHOICES
from ..recipe.specs import MODEL_NAMES, SPECS

SCHEMAS = Path(__file__).resolve().parents[2] / "workflow" / "schemas"
FILES = ("cells.schema.json", "config.schema.json")


def built_in_losses() -> list[str]:
    """The `loss` column's values without plugins: the paper's, then the built-in methods but the paper's."""
    return list(PAPER_LOSSES) + [m.name for m in registry.BUILT_IN if m.name != "paper"]


def plugin_losses() -> list[str]:
    """The `loss` values installed plugins add (the registry's names beyond the built-in ones)."""
    built_in = {m.name for m in registry.BUILT_IN}
    return [n for n in registry.names() if n not in built_in]


def registry_lists() -> dict[str, list[str]]:
    """A schema property's name -> the list its enum holds."""
    return {"dataset": list(SPECS), "model": list(MODEL_NAMES), "loss": built_in_losses(),
            "precision": list(CHOICES["precision"])}


def generated_enums(schema) -> list[tuple[list, list]]:
    """(the enum as it stands, as the registries make it) of every property named in
    registry_lists() that holds an enum, anywhere in a schema."""
    lists, found = registry_lists(), []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in lists and isinstance(value, dict) and "enum" in value:
                    found.append((value["enum"], lists[key]))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(schema)
    return found


def regenerate(text: str) -> str:
    """A schema file's text with its generated enums made from the registries; every
    other byte as it was (the enums are written as json.dumps writes a list)."""
    for old, new in generated_enums(json.loads(text)):
        text = text.replace(f'"enum": {json.dumps(old)}', f'"enum": {json.dumps(new)}')
    again = generated_enums(json.loads(text))
    if any(old != new for old, new in again):
        raise ValueError("a generated enum could not be rewritten in place (is it written on one line?)")
    return text


def with_plugins(schema: dict) -> dict:
    """cells.schema.json as the plan checks a grid against it: the `loss` enum with the
    names of installed plugin methods added."""
    extra = plugin_losses()
    if extra:
        schema = json.loads(json.dumps(schema))
        schema["properties"]["loss"]["enum"] += [n for n in extra if n not in schema["properties"]["loss"]["enum"]]
    return schema


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m locallearn.workflow.schemas", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is not current")
    args = p.parse_args(argv)
    stale = []
    for name in FILES:
        path = SCHEMAS / name
        text = path.read_text()
        new = regenerate(text)
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    verb = "not current" if args.check else "written"
    print(f"{', '.join(stale)}: {verb}" if stale else "workflow/schemas: current")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
