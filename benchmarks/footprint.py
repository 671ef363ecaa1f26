"""Installed size of what a system needs: its root distributions and everything they require, summed from the
installed files that ``importlib.metadata`` lists (an estimate: it counts this environment's versions and extras).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import Distribution, PackageNotFoundError, distribution

from packaging.requirements import Requirement


@dataclass(frozen=True)
class Footprint:
    """Total MiB, the distributions counted, and any required ones not installed here."""

    mb: float
    distributions: dict[str, float]
    missing: list[str]


def installed_size(roots: tuple[str, ...]) -> Footprint:
    """Walk the requirement graph from ``roots`` (``name`` or ``name[extra,...]``) and sum each distribution once."""
    sizes: dict[str, float] = {}
    missing: list[str] = []
    queue = [Requirement(r) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        req = queue.pop()
        key = (_canonical(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            missing.append(req.name)
            continue
        sizes.setdefault(key[0], _size_mb(dist))
        queue.extend(_requirements(dist, req.extras))
    total = round(sum(sizes.values()), 1)
    return Footprint(mb=total, distributions=dict(sorted(sizes.items())), missing=sorted(set(missing)))


def _requirements(dist: Distribution, extras: set[str]) -> list[Requirement]:
    """Requirements of ``dist`` that apply here, with the named ``extras``."""
    found = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            found.append(req)
    return found


def _size_mb(dist: Distribution) -> float:
    total = 0
    for file in dist.files or []:
        path = dist.locate_file(file)
        try:
            total += path.stat().st_size  # type: ignore[union-attr]
        except OSError:
            continue
    return round(total / 2**20, 2)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
