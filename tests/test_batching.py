"""The run planner and the renormalisation that the library and the server share (runtime.batching)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime
from export.data import dev_sentences
from runtime.batching import plan_runs, renormalize


def _cost(runs: list[list[int]], lengths: list[int], overhead: int, attention: int) -> float:
    """The planner's cost model, computed independently: each run pads every row to its longest."""
    total = 0.0
    for run in runs:
        width = max(lengths[i] for i in run)
        total += overhead + len(run) * width * (1 + width / attention)
    return total


def _brute_force(
    lengths: list[int],
    batch_size: int,
    max_tokens: int,
    overhead: int,
    attention: int,
    cuts: tuple[int, ...] = (),
    equal_lengths: bool = False,
) -> float:
    """The cheapest plan over every way of cutting the longest-first order into runs that fit the limits."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = float("inf")
    for ends in itertools.product((False, True), repeat=max(0, len(order) - 1)):
        runs, current = [], [order[0]]
        for i, cut in zip(order[1:], ends, strict=True):
            if cut:
                runs.append(current)
                current = []
            current.append(i)
        runs.append(current)
        if all(_fits(r, lengths, batch_size, max_tokens, cuts, equal_lengths) for r in runs):
            best = min(best, _cost(runs, lengths, overhead, attention))
    return best


def _fits(
    run: list[int],
    lengths: list[int],
    batch_size: int,
    max_tokens: int,
    cuts: tuple[int, ...] = (),
    equal_lengths: bool = False,
) -> bool:
    widths = {lengths[i] for i in run}
    if equal_lengths and len(widths) > 1:
        return False
    if any(len({w >= c for w in widths}) > 1 for c in cuts):
        return False
    return len(run) == 1 or (len(run) <= batch_size and len(run) * max(widths) <= max_tokens)


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=9),
    batch_size=st.integers(1, 5),
    max_tokens=st.sampled_from([64, 256, 1024]),
    overhead=st.integers(0, 40),
    cuts=st.sampled_from([(), (16,), (32, 128)]),
    equal_lengths=st.booleans(),
)
def test_plan_runs_is_the_cheapest_valid_plan(
    lengths: list[int],
    batch_size: int,
    max_tokens: int,
    overhead: int,
    cuts: tuple[int, ...],
    equal_lengths: bool,
) -> None:
    runs = plan_runs(
        lengths, batch_size, max_tokens, overhead=overhead, attention=512, cuts=cuts, equal_lengths=equal_lengths
    )
    assert sorted(i for r in runs for i in r) == list(range(len(lengths)))  # every row exactly once
    assert all(_fits(r, lengths, batch_size, max_tokens, cuts, equal_lengths) for r in runs)
    cost = _cost(runs, lengths, overhead, 512)
    assert cost == pytest.approx(_brute_force(lengths, batch_size, max_tokens, overhead, 512, cuts, equal_lengths))


def test_plan_runs_keeps_short_texts_out_of_a_long_texts_run() -> None:
    # One 50-token text among 21 of 10 tokens: one run would pad 21 rows to 50 (1,100 tokens for 260 real ones).
    lengths = [10] * 10 + [50] + [10] * 11
    runs = plan_runs(lengths, 32, 1024, overhead=12)
    assert runs == [[10], [i for i in range(22) if i != 10]]
    # Equal lengths gain nothing from extra runs: cut only at the batch size, as encode() does.
    assert [len(r) for r in plan_runs([16] * 70, 32, 1024)] == [32, 32, 6]
    assert plan_runs([], 32, 1024) == []


def test_stsb_steps_pad_far_less_than_one_run() -> None:
    # The server's case: 22 one-text requests waiting together. The plan's padded tokens are what the session
    # computes; the real tokens are the floor.
    enc = runtime.load(provider="cpu", threads=1, backend="onnxruntime")
    all_lengths = [len(r) for r in enc.tokenize(dev_sentences())]
    rng = random.Random(0)
    real = padded = single = 0
    for _ in range(20):
        lengths = rng.sample(all_lengths, 22)  # requests arrive in no order of length
        real += sum(lengths)
        padded += sum(len(r) * max(lengths[i] for i in r) for r in plan_runs(lengths, 32, 1024))
        single += len(lengths) * max(lengths)
    assert padded <= 1.25 * real and single >= 1.6 * real, (padded, real, single)


def test_runs_respect_token_budget_and_batch_size_longest_first() -> None:
    lengths = [256, 10, 256, 3, 40, 40, 200, 7]
    runs = plan_runs(lengths, batch_size=3, max_tokens=512)
    assert sorted(i for r in runs for i in r) == list(range(len(lengths)))
    for r in runs:
        assert len(r) <= 3 and len(r) * max(lengths[i] for i in r) <= 512
    heads = [lengths[r[0]] for r in runs]
    assert heads == sorted(heads, reverse=True)


def test_each_engine_of_a_rule_gets_its_own_token_bound() -> None:
    lengths = [256] * 20 + [10] * 70

    def bound(width: int) -> int:
        return 4096 if width >= 16 else 1024

    runs = plan_runs(lengths, 32, bound, cuts=(16,))
    assert [len(r) for r in runs if lengths[r[0]] == 256] == [16, 4]
    assert all(len(r) <= 32 for r in runs if lengths[r[0]] == 10)
    assert [len(r) for r in plan_runs(lengths, 32, 1024, cuts=(16,)) if lengths[r[0]] == 256] == [4] * 5


def test_runs_never_straddle_an_engine_cut() -> None:
    # 33 and 31 tokens share one run (2 padded tokens a row cost less than a run) unless a cut at 32 parts them
    lengths = [33, 31] * 3
    assert len(plan_runs(lengths, 32, 1024)) == 1
    runs = plan_runs(lengths, 32, 1024, cuts=(32,))
    assert sorted(sorted(lengths[i] for i in r) for r in runs) == [[31, 31, 31], [33, 33, 33]]


def test_renormalize_gives_unit_rows_and_keeps_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]], dtype=np.float32)
    out = renormalize(x)
    assert out is x  # float32 input is scaled in place, as encode() does with its output
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0.0, 0.0])
    assert renormalize(np.empty((0, 384), np.float32)).shape == (0, 384)
