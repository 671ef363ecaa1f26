"""The texts every system embeds: STS-B dev sentences, ~200-token passages, calibration sentences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from benchmarks.config import Settings
from export.data import StsPair, pair_texts, read_sts
from runtime.artifact import TOKENIZER_FILE


@dataclass(frozen=True)
class Workloads:
    """``dev`` is s1 of each pair then s2 of each pair, so pair i is (dev[i], dev[n + i])."""

    pairs: list[StsPair]
    dev: list[str]
    long: list[str]


def build(settings: Settings, artifact: Path) -> Workloads:
    """The dev pairs (all, or the first ``dev_pairs``) and ``long_passages`` passages of train sentences."""
    pairs = read_sts("dev")[: settings.dev_pairs]
    dev = pair_texts(pairs)
    long = long_passages(counter(artifact), settings.long_passages, settings.long_min_tokens, settings.long_max_tokens)
    return Workloads(pairs=pairs, dev=dev, long=long)


def counter(artifact: Path) -> Tokenizer:
    """The artifact's tokenizer without truncation, to count tokens ([CLS] and [SEP] included)."""
    tokenizer = Tokenizer.from_file(str(artifact / TOKENIZER_FILE))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def token_counts(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text as the models see them (before any truncation)."""
    return [len(e.ids) for e in tokenizer.encode_batch(texts)]


def long_passages(tokenizer: Tokenizer, count: int, min_tokens: int, max_tokens: int) -> list[str]:
    """``count`` passages of ``min_tokens``..``max_tokens`` tokens, consecutive STS-B train sentences joined by spaces.

    Passages stay within the models' 256-token window so that no system is measured on less text than another.
    """
    sentences = list(dict.fromkeys(p.s1 for p in read_sts("train")))
    lengths = [n - 2 for n in token_counts(tokenizer, sentences)]  # without [CLS]/[SEP]
    passages: list[str] = []
    current: list[str] = []
    size = 2
    for sentence, length in zip(sentences, lengths, strict=True):
        if size + length > max_tokens:
            continue
        current.append(sentence)
        size += length
        if size >= min_tokens:
            passages.append(" ".join(current))
            current, size = [], 2
            if len(passages) == count:
                return passages
    raise ValueError(f"STS-B train yields only {len(passages)} passages of {min_tokens}+ tokens, {count} asked")


def calibration_sentences(count: int) -> list[str]:
    """The first ``count`` distinct STS-B train sentences (static int8 calibration; never dev)."""
    return list(dict.fromkeys(p.s1 for p in read_sts("train")))[:count]
