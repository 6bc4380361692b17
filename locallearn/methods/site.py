"""Where a local head sits (archspec.Site: what a method needs to know to build one),
and the weight schedule over the heads."""
from __future__ import annotations

from ..recipe.archspec import Site


def interpolate(first: float, last: float, site: Site) -> float:
    """A weight that moves linearly from `first` at the first local head to `last` at
    the last one (InfoPro's lambda schedule over modules; AugLocal's ixx/ixy)."""
    return first * (1 - site.ratio) + last * site.ratio
