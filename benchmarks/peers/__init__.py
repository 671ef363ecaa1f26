"""One adapter per peer system. Each module offers ``load(system, paths, threads) -> Peer`` and, when the peer needs
model files built from the checkpoint first, ``prepare(system, paths, settings) -> None`` (idempotent, cached).

Heavy libraries are imported inside those functions, so that importing an adapter costs nothing and a cold-start
measurement times the library's own import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

Embed = Callable[[list[str], int], np.ndarray]
"""``embed(texts, batch_size) -> (len(texts), 384) float32``, the system's own batching and pooling."""


@dataclass(frozen=True)
class Peer:
    """A loaded system: its embed function, the model files it read, and facts worth recording."""

    embed: Embed
    model_files: tuple[Path, ...]
    notes: dict[str, object] = field(default_factory=dict)


def adapter(name: str) -> ModuleType:
    """The adapter module ``benchmarks.peers.<name>``."""
    return importlib.import_module(f"benchmarks.peers.{name}")
