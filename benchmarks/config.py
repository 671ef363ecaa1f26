"""What a benchmark run measures (sizes, rounds, threads) and where it reads and writes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "build" / "minilm-l6-stsb"
DEFAULT_CACHE = REPO / "build" / "bench-cache"
DEFAULT_OUT = REPO / "benchmarks" / "results"
QUICK_OUT = REPO / "build" / "bench-quick"  # smoke runs never overwrite the committed results
BASELINE = "pytorch-fp32"


@dataclass(frozen=True)
class Settings:
    """Sizes of one run. ``dev_pairs`` None means all 1,500 STS-B dev pairs (3,000 sentences)."""

    rounds: int
    dev_pairs: int | None
    long_passages: int
    latency_calls: int
    gemm_size: int
    threads: int = 2
    batch_sizes: tuple[int, ...] = (1, 32, 128)
    long_batch: int = 32
    accuracy_batch: int = 32
    long_min_tokens: int = 200
    long_max_tokens: int = 256
    calibration_sentences: int = 300
    worker_timeout_s: int = 900

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.threads < 1 or self.latency_calls < 2 or self.long_passages < 1:
            raise ValueError(f"invalid settings: {self}")
        if self.accuracy_batch not in self.batch_sizes or 1 not in self.batch_sizes:
            raise ValueError(f"batch_sizes {self.batch_sizes} must include 1 and accuracy_batch {self.accuracy_batch}")
        if self.dev_pairs is not None and self.dev_pairs < 2:
            raise ValueError(f"dev_pairs must be >= 2 or None, got {self.dev_pairs}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        return cls(**{**data, "batch_sizes": tuple(data["batch_sizes"])})


FULL = Settings(rounds=2, dev_pairs=None, long_passages=128, latency_calls=500, gemm_size=2048)
QUICK = Settings(
    rounds=1,
    dev_pairs=16,
    long_passages=4,
    latency_calls=20,
    gemm_size=256,
    calibration_sentences=16,
    worker_timeout_s=300,
)


@dataclass(frozen=True)
class Paths:
    """The fine-tuned checkpoint every peer starts from, this runtime's artifact, the peers' build cache."""

    checkpoint: Path
    artifact: Path
    cache: Path

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Paths:
        return cls(checkpoint=Path(data["checkpoint"]), artifact=Path(data["artifact"]), cache=Path(data["cache"]))


def write_study(stem: Path, doc: dict[str, Any], md: str) -> None:
    """``stem``.json and ``stem``.md of a study's result, each through a temporary file, so an interrupted write
    leaves the previous result whole."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(doc, indent=2, default=str) + "\n"), (".md", md)):
        tmp = stem.with_suffix(suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(stem.with_suffix(suffix))
