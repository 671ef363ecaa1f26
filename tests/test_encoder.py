"""Encoder behaviour on the shipped default model: shapes, order, batching, bad input, threads, providers."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.batching import TOKENS_PER_RUN

DIM = 384
SENTENCES = [
    "A man is playing a guitar.",
    "A woman is slicing an onion.",
    "The stock market fell sharply today.",
    "Two dogs are running through a field of tall grass on a sunny afternoon.",
    "ok",
]


def test_single_string_gives_vector_and_list_gives_matrix(encoder: runtime.Encoder) -> None:
    one = encoder.encode(SENTENCES[0])
    many = encoder.encode(SENTENCES)
    assert one.shape == (DIM,) and one.dtype == np.float32
    assert many.shape == (len(SENTENCES), DIM) and many.dtype == np.float32


def test_str_and_singleton_list_agree(encoder: runtime.Encoder) -> None:
    np.testing.assert_array_equal(encoder.encode(SENTENCES[3]), encoder.encode([SENTENCES[3]])[0])


def test_dimension_and_max_seq_length(encoder: runtime.Encoder) -> None:
    assert encoder.get_sentence_embedding_dimension() == DIM
    assert encoder.max_seq_length == 256


def test_embeddings_are_unit_length(encoder: runtime.Encoder) -> None:
    norms = np.linalg.norm(encoder.encode(SENTENCES), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)


def test_encode_restores_input_order(encoder: runtime.Encoder) -> None:
    together = encoder.encode(SENTENCES, batch_size=2)
    for i, text in enumerate(SENTENCES):
        np.testing.assert_allclose(together[i], encoder.encode(text), atol=1e-5)


def test_batch_size_does_not_change_results(encoder: runtime.Encoder, dev_pairs) -> None:
    texts = [p.s1 for p in dev_pairs[:300]]
    ref = encoder.encode(texts, batch_size=1)
    for batch_size in (32, 1000):
        np.testing.assert_allclose(encoder.encode(texts, batch_size=batch_size), ref, atol=1e-5)


def test_batch_mates_do_not_change_a_text(encoder: runtime.Encoder, dev_pairs) -> None:
    """The int8 graph quantises activations per row block, so a text's vector does not depend on its batch."""
    target = "A man is playing a flute."
    alone = encoder.encode(target)
    short_mates = encoder.encode([target] + [p.s1 for p in dev_pairs[:31]])[0]
    long_mates = encoder.encode([target] + ["word " * 300] * 7)[0]
    np.testing.assert_allclose(short_mates, alone, atol=1e-5)
    np.testing.assert_allclose(long_mates, alone, atol=1e-5)


def test_similarity_matrix(encoder: runtime.Encoder) -> None:
    emb = encoder.encode(SENTENCES)
    sim = encoder.similarity(emb, emb[:2])
    assert sim.shape == (len(SENTENCES), 2)
    np.testing.assert_allclose(np.diag(sim[:2]), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim, emb @ emb[:2].T, atol=1e-6)
    np.testing.assert_allclose(encoder.similarity(SENTENCES[0], SENTENCES[1]), sim[:1, 1:2], atol=1e-5)


def test_similarity_ranks_paraphrase_above_unrelated(encoder: runtime.Encoder) -> None:
    sim = encoder.similarity("A man is playing a guitar.", ["A man plays the guitar.", "The stock market fell."])
    assert sim[0, 0] > 0.8 > sim[0, 1]


def test_similarity_rejects_wrong_dimension(encoder: runtime.Encoder) -> None:
    with pytest.raises(ValueError, match=r"shape \(n, 384\)"):
        encoder.similarity(np.ones((2, 10)), np.ones((2, 384)))


def test_texts_beyond_max_seq_length_are_truncated_not_rejected(encoder: runtime.Encoder) -> None:
    base = " ".join(f"word{i}" for i in range(400))
    ids = encoder.tokenize([base])[0]
    assert len(ids) == 256
    # Anything past the 256th token cannot change the embedding.
    np.testing.assert_allclose(encoder.encode(base), encoder.encode(base + " completely different tail"), atol=1e-6)


def test_texts_between_128_and_256_tokens_are_not_cut_at_128(encoder: runtime.Encoder) -> None:
    text = " ".join(["the cat sat on the mat"] * 30)  # ~182 tokens
    assert 128 < len(encoder.tokenize([text])[0]) < 256
    assert not np.allclose(encoder.encode(text), encoder.encode(" ".join(["the cat sat on the mat"] * 21)), atol=1e-3)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (None, TypeError, "got NoneType"),
        (42, TypeError, "got int"),
        (b"bytes", TypeError, "got bytes"),
        (["fine", None], TypeError, r"sentences\[1\] must be a str, got NoneType"),
        (["fine", b"x"], TypeError, r"sentences\[1\] must be a str, got bytes"),
        (["a", ["nested"]], TypeError, r"sentences\[1\] must be a str, got list"),
        ({"a": 1}, TypeError, "got dict"),
    ],
)
def test_bad_input_raises_named_error(encoder: runtime.Encoder, bad: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        encoder.encode(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("batch_size", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_bad_batch_size(encoder: runtime.Encoder, batch_size: object, error: type) -> None:
    with pytest.raises(error, match="batch_size"):
        encoder.encode(["x"], batch_size=batch_size)  # type: ignore[arg-type]


def test_empty_list_gives_empty_matrix(encoder: runtime.Encoder) -> None:
    out = encoder.encode([])
    assert out.shape == (0, DIM) and out.dtype == np.float32


def test_empty_and_whitespace_text_embed_as_empty_sentence(encoder: runtime.Encoder) -> None:
    empty, spaces, tabs = encoder.encode(["", "   ", "\t\n "])
    assert np.isfinite(empty).all() and abs(np.linalg.norm(empty) - 1) < 1e-5
    np.testing.assert_array_equal(spaces, empty)
    np.testing.assert_array_equal(tabs, empty)


def test_one_megabyte_text_is_truncated(encoder: runtime.Encoder) -> None:
    huge = "lorem ipsum dolor sit amet " * 40_000
    assert len(huge) > 1_000_000
    out = encoder.encode(huge)
    np.testing.assert_allclose(out, encoder.encode("lorem ipsum dolor sit amet " * 60), atol=1e-5)


def test_lone_surrogates_are_replaced(encoder: runtime.Encoder) -> None:
    out = encoder.encode(["bad \ud800 text", "bad \ufffd text", "emoji \U0001f600 ok", "e\u0301 \u200b\u0000"])
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], out[1])


def test_long_batch_is_split_under_token_bound(encoder: runtime.Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    bound = TOKENS_PER_RUN[encoder.device]
    # Rows of one length, so only the bound can cut them (padding gives the planner no reason to); distinct texts, so
    # a row written back to the wrong place shows. Each is truncated to 256 tokens: 2 runs' worth and one row more.
    texts = [f"text {i}: " + "word " * 300 for i in range(2 * bound // 256 + 1)]
    ids = encoder.tokenize(texts)
    assert {len(r) for r in ids} == {encoder.max_seq_length}
    unsplit = encoder.embed_ids(ids)  # every row in one session run
    shapes: list[tuple[int, int]] = []
    run = encoder._runner.run

    def spy(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        shapes.append(input_ids.shape)
        return run(input_ids, attention_mask)

    monkeypatch.setattr(encoder._runner, "run", spy)
    out = encoder.encode(texts, batch_size=10_000)
    assert len(shapes) > 1, shapes
    assert all(rows * width <= bound for rows, width in shapes), (bound, shapes)
    assert [rows for rows, _ in shapes] == [len(plan) for plan in encoder.batch_plan(ids, batch_size=10_000)]
    np.testing.assert_allclose(out, unsplit, atol=1e-5)


def test_threads_share_one_encoder(encoder: runtime.Encoder, dev_pairs) -> None:
    texts = [[p.s1, p.s2] for p in dev_pairs[:64]]
    serial = [encoder.encode(t) for t in texts]
    results: dict[int, list[np.ndarray]] = {}

    def work(worker: int) -> None:
        results[worker] = [encoder.encode(t) for t in texts]

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    for outs in results.values():
        for got, want in zip(outs, serial, strict=True):
            np.testing.assert_array_equal(got, want)


def test_explicit_cuda_without_cuda_raises(default_dir: Path) -> None:
    if "CUDAExecutionProvider" in runtime.available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(runtime.ProviderUnavailable, match="cuda"):
        runtime.load(default_dir, provider="cuda")


def test_auto_picks_cpu_int8_without_cuda(default_dir: Path) -> None:
    if "CUDAExecutionProvider" in runtime.available_providers():
        pytest.skip("this machine has CUDA")
    enc = runtime.load(default_dir)
    assert (enc.device, enc.precision) == ("cpu", runtime.Precision.INT8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"provider": "tpu"}, "provider must be one of"),
        ({"precision": "int4"}, "precision must be one of"),
        ({"threads": 0}, "threads must be"),
    ],
)
def test_bad_load_arguments(default_dir: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        runtime.load(default_dir, **kwargs)


def test_threads_setting_gives_same_vectors(default_dir: Path, encoder: runtime.Encoder) -> None:
    single = runtime.load(default_dir, threads=1, backend="onnxruntime")
    np.testing.assert_allclose(single.encode(SENTENCES), encoder.encode(SENTENCES), atol=1e-5)


def test_io_bound_run_matches_plain_run(default_dir: Path) -> None:
    """The CUDA path's IO binding, exercised with a host-side output on the CPU provider."""
    from runtime.session import infer, infer_bound

    encoder = runtime.load(default_dir, provider="cpu", backend="onnxruntime")
    ids = np.array(encoder.tokenize(["a bound run", "must equal the plain run"])[0:1] * 2, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    session = encoder._runner.session  # type: ignore[attr-defined]
    np.testing.assert_array_equal(infer_bound(session, "cpu", feeds), infer(session, "cpu", feeds))
