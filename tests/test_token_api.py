"""Encoder's token-level entry points (what the server batches with) reproduce encode() exactly."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from export.data import dev_sentences

LONG = " ".join(["token level entry points"] * 80)


def test_plan_and_embed_ids_reproduce_encode(encoder: runtime.Encoder) -> None:
    texts = [*dev_sentences()[:70], LONG, LONG[:300]]
    ids = encoder.tokenize(texts)
    out = np.empty((len(texts), encoder.get_sentence_embedding_dimension()), dtype=np.float32)
    plan = encoder.batch_plan(ids, batch_size=32)
    assert sorted(i for rows in plan for i in rows) == list(range(len(texts)))
    assert all(len(rows) <= 32 and len(rows) * max(len(ids[i]) for i in rows) <= 1024 for rows in plan)
    for rows in plan:
        out[rows] = encoder.embed_ids([ids[i] for i in rows])
    assert np.array_equal(out, encoder.encode(texts))  # same runs, same bits


def test_tokenize_with_truncation_flags_cut_texts(encoder: runtime.Encoder) -> None:
    ids, cut = encoder.tokenize_with_truncation(["short text", LONG])
    assert ids == encoder.tokenize(["short text", LONG]) and cut == [False, True]
    assert len(ids[1]) == encoder.max_seq_length


def test_embed_ids_validates_rows(encoder: runtime.Encoder) -> None:
    cls, sep = encoder.tokenize([""])[0]
    assert encoder.embed_ids([[cls, encoder.vocab_size - 1, sep]]).shape == (1, 384)
    assert encoder.embed_ids([]).shape == (0, 384)
    for bad in ([], [cls] * (encoder.max_seq_length + 1), [cls, encoder.vocab_size, sep], [cls, -1, sep]):
        with pytest.raises(ValueError, match=r"rows\[0\]"):
            encoder.embed_ids([bad])
    with pytest.raises(ValueError):
        encoder.batch_plan([[cls, sep]], batch_size=0)


class _CountingTokenizer:
    """Delegates to a real tokenizer and counts get_vocab_size calls."""

    def __init__(self, inner: object) -> None:
        self.inner, self.vocab_calls = inner, 0

    def get_vocab_size(self, *args: object, **kwargs: object) -> int:
        self.vocab_calls += 1
        return int(self.inner.get_vocab_size(*args, **kwargs))  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_vocabulary_is_counted_once_at_load_not_per_run(default_dir) -> None:
    # tokenizers rebuilds its 30,522-entry vocabulary map on every get_vocab_size(): once per server batch, that was
    # 8 ms added to every request's inference time.
    encoder = runtime.load(default_dir, provider="cpu", threads=1)
    counting = _CountingTokenizer(encoder._tokenizer)
    encoder._tokenizer = counting  # type: ignore[assignment]
    ids = encoder.tokenize(["a cat sat on the mat", "a dog"])
    for _ in range(3):
        encoder.embed_ids(ids)
    assert encoder.vocab_size == 30522
    assert counting.vocab_calls == 0
