"""STS Benchmark reading and the STS evaluation metric, shared by export, tests and benchmarks.

Only the standard library and numpy are used here so that runtime-only test environments can import it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "stsbenchmark"
SPLIT_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv"}
MAX_SCORE = 5.0


@dataclass(frozen=True)
class StsPair:
    """One STS-B pair; ``score`` is the gold similarity on the dataset's 0-5 scale."""

    s1: str
    s2: str
    score: float

    @property
    def label(self) -> float:
        """The gold score scaled to 0-1, the target of CosineSimilarityLoss."""
        return self.score / MAX_SCORE


def read_sts(split: Literal["train", "dev"], data_dir: Path = DATA_DIR) -> list[StsPair]:
    """Read one STS-B split (tab-separated, unquoted; columns beyond s2 are ignored)."""
    path = data_dir / SPLIT_FILES[split]
    pairs = []
    with path.open(encoding="utf-8", newline="") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if len(row) < 7:
                raise ValueError(f"{path}:{line_no}: expected at least 7 tab-separated columns, got {len(row)}")
            pairs.append(StsPair(s1=row[5], s2=row[6], score=float(row[4])))
    return pairs


def pair_texts(pairs: Sequence[StsPair]) -> list[str]:
    """s1 of every pair, then s2 of every pair: the row layout :func:`score_stacked` reads back."""
    return [p.s1 for p in pairs] + [p.s2 for p in pairs]


def gold_scores(pairs: Sequence[StsPair]) -> np.ndarray:
    """The pairs' gold scores (0-5), float64."""
    return np.array([p.score for p in pairs], dtype=np.float64)


def dev_sentences(data_dir: Path = DATA_DIR) -> list[str]:
    """The 3,000 sentences of STS-B dev (s1 then s2 of each pair, duplicates kept)."""
    return pair_texts(read_sts("dev", data_dir))


@dataclass(frozen=True)
class StsScore:
    """Correlation of cosine similarity with gold scores, as sentence-transformers' EmbeddingSimilarityEvaluator."""

    spearman: float
    pearson: float


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties given their mean rank (scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, len(x)])
    mean_rank = first + (counts + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between matching rows of ``a`` and ``b`` (float64; zero rows give 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos: np.ndarray = np.sum(a * b, axis=1)
    return cos


def sts_score(emb1: np.ndarray, emb2: np.ndarray, gold: np.ndarray | Sequence[float]) -> StsScore:
    """Spearman and Pearson of cosine(emb1[i], emb2[i]) against ``gold``."""
    cos = cosines(emb1, emb2)
    gold = np.asarray(gold, dtype=np.float64)
    pearson = float(np.corrcoef(cos, gold)[0, 1])
    spearman = float(np.corrcoef(_average_ranks(cos), _average_ranks(gold))[0, 1])
    return StsScore(spearman=spearman, pearson=pearson)


def score_stacked(embeddings: np.ndarray, gold: np.ndarray | Sequence[float]) -> StsScore:
    """:func:`sts_score` of embeddings laid out by :func:`pair_texts` (n s1 rows, then n s2 rows) against n scores."""
    n = len(gold)
    if len(embeddings) != 2 * n:
        raise ValueError(f"{len(embeddings)} embeddings for {n} pairs: expected s1 rows then s2 rows, {2 * n} in all")
    return sts_score(embeddings[:n], embeddings[n:], gold)


def evaluate_pairs(embed: Callable[[list[str]], np.ndarray], pairs: Sequence[StsPair]) -> StsScore:
    """Score an ``embed(list[str]) -> (n, d) array`` function on ``pairs``."""
    return score_stacked(np.asarray(embed(pair_texts(pairs)), dtype=np.float32), gold_scores(pairs))
