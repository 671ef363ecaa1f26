"""How texts are grouped into engine runs, and the float32 renormalisation: one home for the library and the server.

A run is a list of row indices that one engine call embeds as one padded batch. :func:`plan_runs` plans them for
``Encoder.encode`` (a whole call), ``Encoder.batch_plan`` and the server's pool alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Padded tokens per run, whatever batch_size asks for: this bounds memory (attention grows with batch * seq_len^2)
# and, on the CPU, keeps activations cache-sized: 1,024-token runs measured 30 % faster than 16,384-token runs on
# 200-token texts and at batch 128 (int8 and fp32, onnxruntime). GPUs want large runs. An engine may ask for its own
# (Runner.tokens_per_run: OpenVINO's are larger).
TOKENS_PER_RUN = {"cpu": 1024, "cuda": 32768}
# What one run costs beyond its padded tokens, in tokens' worth of time: the engine's per-call work and the Python
# around it. Measured on the int8 graph, one thread, AVX-512 VNNI EPYC (docs: decisions, 2026-12-04).
RUN_OVERHEAD_TOKENS = 12
# Attention grows with the square of the padded length: a row of w tokens costs w * (1 + w / ATTENTION_TOKENS).
ATTENTION_TOKENS = 512


def plan_runs(
    lengths: Sequence[int],
    batch_size: int,
    max_tokens: int | Callable[[int], int],
    *,
    cuts: Sequence[int] = (),
    equal_lengths: bool = False,
    overhead: int = RUN_OVERHEAD_TOKENS,
    attention: int = ATTENTION_TOKENS,
) -> list[list[int]]:
    """Row indices of each run for rows of these token lengths, longest first.

    Each run holds at most ``batch_size`` rows and ``max_tokens`` padded tokens (a longer row runs alone; a function
    of the run's longest row gives each engine of a length rule its own bound); no run
    holds rows on both sides of a length in ``cuts`` (rows of ``c`` tokens or more apart from shorter ones: the
    engines of a length rule); with ``equal_lengths`` a run holds rows of one length only. Within that, runs are cut
    where the padded tokens plus ``overhead`` tokens per run, the cost model of one run, are fewest in all: cutting
    only at ``batch_size`` pads a few dozen texts of mixed lengths to their longest (twice the tokens for 22 STS-B
    sentences).
    """
    bound = max_tokens if callable(max_tokens) else (lambda _width: max_tokens)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    widths = [lengths[i] for i in order]
    n = len(order)
    # limit[i]: the first position a run starting at i may not reach (a cut between engines, or another length)
    limit = [n] * n
    boundary = n
    for i in range(n - 1, -1, -1):
        if i + 1 < n and _apart(widths[i], widths[i + 1], cuts, equal_lengths):
            boundary = i + 1
        limit[i] = boundary
    best = [0.0] * (n + 1)  # best[i]: cost of the rows order[i:]
    end = [n] * (n + 1)
    for i in range(n - 1, -1, -1):
        width = widths[i]
        row_cost = width * (1 + width / attention)
        stop = min(limit[i], i + max(1, min(batch_size, bound(width) // max(width, 1))))
        # the run order[i:j] costs overhead + (j - i) * row_cost; max() keeps the first best j counting down from
        # stop, so on a tie the longer run wins: fewer, fuller runs
        j = max(range(stop, i, -1), key=lambda j: -(j - i) * row_cost - best[j])
        best[i], end[i] = overhead + (j - i) * row_cost + best[j], j
    runs = []
    i = 0
    while i < n:
        runs.append(order[i : end[i]])
        i = end[i]
    return runs


def _apart(longer: int, shorter: int, cuts: Sequence[int], equal_lengths: bool) -> bool:
    if equal_lengths:
        return longer != shorter
    return any(shorter < c <= longer for c in cuts)


def renormalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32 (a zero row stays zero), in place when ``vectors`` is float32."""
    out = np.asarray(vectors, dtype=np.float32)
    if out.size:
        out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), np.float32(1e-12))
    return out
