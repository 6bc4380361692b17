"""What a local-learning method is: one `Method` object (and the `Flag`s it brings),
all of the method in one file (methods/registry.py lists them; docs/methods.md, Adding
a method). A plugin builds one of these and names it in an entry point."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Flag:
    """A flag of `locallearn train` that a method brings: `--aux-depth` becomes cfg.aux_depth.

    type: int, float or str (a value flag), or bool (an on switch, default False).
    check: value -> why it cannot run, or None. Every flag enters a run's config hash
    only when set away from its default, so adding one leaves earlier runs as they were."""
    name: str
    type: type
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Method:
    """All of one local-learning method.

    name:         the value of --method, and of the grid's `loss` column.
    summary:      one line for --method's help.
    build_head:   (cfg, Site) -> the head module (torch is imported here, not before). A
                  head is called as head(h, x, y, y_onehot, image=...) -> (loss, stats).
    head_cost:    (cfg, Site) -> recipe.tally.Tally: the head's multiply-adds and
                  parameters, from the same plain numbers the head is built from
                  (tests/test_cost.py checks it against FlopCounterMode). None only
                  for the paper's heads, which recipe/cost.py counts itself.
    flags:        the method's own flags (Flag).
    check:        cfg -> why the recipe cannot run with this method, or None (the
                  network it needs, flags it cannot take).
    module_count: (cfg, K) -> the local modules it builds for --local-modules K, where
                  that differs from K (AugLocal's K - d), else None.
    needs_image:  its head reads the network's input (no pipeline stage after the first).
    distribution, version: the package it comes from (a plugin's; None for built-ins).
    """
    name: str
    summary: str
    build_head: Callable
    head_cost: Callable | None = None
    flags: tuple[Flag, ...] = ()
    check: Callable | None = None
    module_count: Callable | None = None
    needs_image: bool = False
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = field(default=None, compare=False)
