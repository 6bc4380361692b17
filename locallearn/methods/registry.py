"""The registry of local-learning methods: METHODS, the one list of their names, each with
the function that builds its head (docs/methods.md, Adding a method)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import auglocal, dgl, infopro, paper


@dataclass(frozen=True)
class Method:
    build_head: Callable          # (cfg, Site) -> head module
    needs_image: bool = False     # the head reads the network's input (no pipeline stages after the first)


METHODS: dict[str, Method] = {
    "paper": Method(paper.build_head),
    "dgl": Method(dgl.build_head),
    "infopro": Method(infopro.build_head, needs_image=True),
    "auglocal": Method(auglocal.build_head),
}
