"""One adapter per peer system. Each module offers ``load(system, paths, threads) -> Peer`` and, when the peer needs
model files built from the checkpoint first, ``prepare(system, paths, settings) -> None`` (idempotent, cached).

Heavy libraries are imported inside those functions, so that importing an adapter costs nothing and a cold-start
measurement times the library's own import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from benchmarks.timing import Embed


@dataclass(frozen=True)
class Peer:
    """A loaded system: its embed function, the model files it read, and facts worth recording."""

    embed: Embed
    model_files: tuple[Path, ...]
    notes: dict[str, object] = field(default_factory=dict)


def adapter(name: str) -> ModuleType:
    """The adapter module ``benchmarks.peers.<name>``."""
    return importlib.import_module(f"benchmarks.peers.{name}")
