"""The registry of local-learning methods: the one list of their names, torch-free.

A method is one `Method` object (methods/method.py), the whole of it in one file: the
built-in ones are the `METHOD` of each module listed in BUILT_IN below; a method from another
package is an entry point in the group `locallearn.methods` whose object is a `Method`
(docs/methods.md, Adding a method). Everything that needs the names reads them here:
the `--method` flag, its choices, help and checks, the method's own flags (recipe/config.py),
the cost model (recipe/cost.py), the grid's `loss` column (recipe/cells.py) and the
tests. Importing this module imports no torch: a method imports torch only where it
builds its head.

A plugin that fails to load, or that takes a name already registered, is left out with
one line on stderr naming its distribution and entry point; asking for it by name gives
that line as the error. The other methods keep working.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, replace
from importlib import metadata

from . import auglocal, dgl, greedysl, infopro, infoprocontrast, paper
from ..errors import ConfigError
from .method import Method

ENTRY_POINT_GROUP = "locallearn.methods"


BUILT_IN: tuple[Method, ...] = (paper.METHOD, dgl.METHOD, infopro.METHOD, auglocal.METHOD, greedysl.METHOD,
                                 infoprocontrast.METHOD)


@dataclass(frozen=True)
class Registry:
    methods: dict[str, Method]
    broken: dict[str, str]      # name -> the one line that says why it is left out


@functools.lru_cache(maxsize=1)
def registry() -> Registry:
    """The built-in methods, then every installed plugin's, discovered once per process."""
    methods = {m.name: m for m in BUILT_IN}
    broken: dict[str, str] = {}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
        version = ep.dist.version if ep.dist is not None else None
        where = f"plugin {ep.name!r} (distribution {dist}{' ' + version if version else ''}, " \
                f"entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP})"
        try:
            method = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not stop the others
            broken[ep.name] = f"{where} failed to load: {type(e).__name__}: {e}"
            continue
        if not isinstance(method, Method):
            broken[ep.name] = f"{where} is a {type(method).__name__}, not a locallearn.methods.method.Method"
        elif method.name in methods:
            broken[ep.name] = f"{where} takes the name {method.name!r}, which {_owner(methods[method.name])} has"
        else:
            methods[method.name] = _with_source(method, dist, version, f"{ep.name} = {ep.value}")
    for line in broken.values():
        print(f"locallearn: error: {line}; left out", file=sys.stderr)
    return Registry(methods, broken)


def _owner(method: Method) -> str:
    return f"distribution {method.distribution}" if method.distribution else "locallearn"


def _with_source(method: Method, dist: str, version: str | None, entry_point: str) -> Method:
    return replace(method, distribution=dist, version=version, entry_point=entry_point)


def names() -> tuple[str, ...]:
    """Every method's name: the built-in ones in their order, then the plugins'."""
    return tuple(registry().methods)


def get(name: str) -> Method:
    """The method called `name`; ConfigError naming --method otherwise."""
    reg = registry()
    if name in reg.methods:
        return reg.methods[name]
    if name in reg.broken:
        raise ConfigError(f"--method {name}: {reg.broken[name]}")
    raise ConfigError(f"--method: unknown method {name!r} (known: {', '.join(reg.methods)})")


def method_flags() -> list:
    """Every method's own flags, in the registry's order."""
    return [(m, f) for m in registry().methods.values() for f in m.flags]


def source_of(name: str) -> dict | None:
    """Where a plugin method comes from, as a run records it (metrics.json `method_source`,
    MLflow tags): {"method", "distribution", "version", "entry_point"}; None for a built-in."""
    m = registry().methods.get(name)
    if m is None or m.distribution is None:
        return None
    return {"method": m.name, "distribution": m.distribution, "version": m.version, "entry_point": m.entry_point}
