"""STS-B reading and the evaluation metric."""

from __future__ import annotations

import math

import numpy as np
import pytest

from export.data import _average_ranks, dev_sentences, pair_texts, read_sts, score_stacked, sts_score


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


def _pairs_with_cosines(cos: list[float], scale: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs whose cosines are exactly ``cos``; the second rows scaled by ``scale`` (cosine ignores length)."""
    c = np.array(cos)
    emb1 = np.tile([1.0, 0.0], (len(c), 1))
    emb2 = np.stack([c, np.sqrt(1 - c**2)], axis=1) * np.array(scale)[:, None]
    return emb1, emb2


def test_sts_score_matches_a_table_computed_by_hand() -> None:
    # cosines 0.1 0.4 0.4 0.9 0.6 -> ranks 1 2.5 2.5 5 4; gold 1 2 3 5 3 -> ranks 1 2 3.5 5 3.5.
    # Rank deviations from the mean 3: (-2 -.5 -.5 2 1) and (-2 -1 .5 2 .5): sum of products 8.75, squares 9.5 and 9.5,
    # so spearman = 8.75 / 9.5 = 35/38. Pearson on the values: deviations (-.38 -.08 -.08 .42 .12) and
    # (-1.8 -.8 .2 2.2 .2): sum of products 1.68, squares .348 and 8.8.
    emb1, emb2 = _pairs_with_cosines([0.1, 0.4, 0.4, 0.9, 0.6], scale=[3.0, 0.5, 2.0, 1.0, 7.0])
    score = sts_score(emb1, emb2, np.array([1.0, 2.0, 3.0, 5.0, 3.0]))
    assert score.spearman == pytest.approx(35 / 38, abs=1e-12)
    assert score.pearson == pytest.approx(1.68 / math.sqrt(0.348 * 8.8), abs=1e-12)


def test_score_stacked_pairs_row_i_with_row_n_plus_i() -> None:
    emb1, emb2 = _pairs_with_cosines([0.1, 0.4, 0.4, 0.9, 0.6], scale=[1.0] * 5)
    gold = [1.0, 2.0, 3.0, 5.0, 3.0]
    assert score_stacked(np.vstack([emb1, emb2]), gold) == sts_score(emb1, emb2, np.array(gold))
    assert score_stacked(np.vstack([emb1, emb2[::-1]]), gold).spearman < 0.5  # a misaligned half scores low
    with pytest.raises(ValueError, match="9 embeddings for 5 pairs"):
        score_stacked(np.vstack([emb1, emb2])[:9], gold)
    pairs = read_sts("dev")[:3]
    assert pair_texts(pairs) == [p.s1 for p in pairs] + [p.s2 for p in pairs]


def test_sts_score_agrees_with_scipy_on_many_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    cos = rng.choice(np.linspace(-0.9, 0.95, 12), size=400)  # 12 cosine values over 400 pairs: ties everywhere
    gold = rng.integers(0, 6, size=400).astype(float) + (cos > 0.3)  # correlated, and heavily tied too
    emb1, emb2 = _pairs_with_cosines(list(cos), scale=list(2.0 + cos))  # equal cosines stay bit-equal ties
    score = sts_score(emb1, emb2, gold)
    assert score.spearman == pytest.approx(stats.spearmanr(cos, gold).statistic, abs=1e-9)
    assert score.pearson == pytest.approx(stats.pearsonr(cos, gold).statistic, abs=1e-9)
