"""STS-B reading and the evaluation metric."""

from __future__ import annotations

import numpy as np

from export.data import _average_ranks, dev_sentences, read_sts, sts_score


def test_split_sizes() -> None:
    assert len(read_sts("train")) == 5749
    assert len(read_sts("dev")) == 1500
    assert len(dev_sentences()) == 3000


def test_rows_with_extra_columns_and_quotes_are_read_verbatim() -> None:
    pairs = read_sts("train")
    assert all(0.0 <= p.score <= 5.0 for p in pairs)
    assert any('"' in p.s1 or '"' in p.s2 for p in pairs), "QUOTE_NONE keeps quote characters"
    assert pairs[0].s1 == "A plane is taking off." and pairs[0].score == 5.0


def test_average_ranks_handle_ties() -> None:
    np.testing.assert_array_equal(_average_ranks(np.array([10.0, 20.0, 10.0, 5.0])), [2.5, 4.0, 2.5, 1.0])


def test_sts_score_perfect_and_inverted() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    b = a + rng.normal(scale=np.linspace(0.01, 3, 50)[:, None], size=(50, 8))
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert sts_score(a, b, cos).spearman > 0.999999
    assert sts_score(a, b, -cos).spearman < -0.999999
