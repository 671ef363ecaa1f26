"""Compact output types (``encode(precision=...)``): accuracy, size and similarity-search speed of each.

    python -m studies.precision [--model DIR] [--corpus 100000] [--queries 1000] [--threads 2] [--prepare]

- Accuracy: STS-B dev spearman of each type's own similarity: float32 cosine, int8 dot product (int32 sums), uint8
  plain dot product (not centred: centring it, u - 128, gives the int8 codes and their result), binary / ubinary
  Hamming similarity (dimension - popcount(a XOR b)). A calibration table compares grids for int8 on STS-B train (the
  choice) and dev: the manifest's, one symmetric scale, and sentence-transformers' per-dimension min/max, with
  percentiles.
- Search: exact top-10 over the corpus for a batch of queries, scores for every corpus vector then argpartition:
  float32 matmul (numpy, OpenBLAS), int8 dot with int32 sums (onnxruntime MatMulInteger: numpy's integer matmul has no
  BLAS, its rate is measured on a few queries), uint8 plain dot (MatMulInteger u8 x u8), Hamming (numpy XOR +
  bitwise_count on 64-bit words), and binary search rescored with int8 (top 40 by Hamming, then int8 dot), each on
  ``--threads`` threads; queries/s (best of 3) with the top-10 selection (argpartition over every corpus vector,
  the same cost for every type) and for the scores alone, and recall@10 against float32 exact search.
- Corpus: the unique STS-B train sentences, then pairs of them joined by a space (seeded) up to ``--corpus``; queries:
  STS-B dev sentences that are not in train. Embeddings come from the artifact's CPU graph and are cached in
  ``build/precision-bench/`` (``--prepare`` only fills the cache, so the timed run can hold the bench lock briefly).
Writes ``benchmarks/results/precision-<machine>.{json,md}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

import runtime
from benchmarks.config import DEFAULT_OUT, REPO
from benchmarks.machine import describe, library_versions
from export.data import gold_scores, pair_texts, read_sts
from runtime.quantization import OUTPUT_PRECISIONS, calibrate, output_width, quantize, ranges_array

CACHE = REPO / "build" / "precision-bench"
K = 10
RESCORE = 40  # binary candidates rescored with int8
QUERY_BATCH = 250
CHUNK = 16384


# ---- data ----


def corpus_texts(size: int, seed: int = 0) -> list[str]:
    """Unique STS-B train sentences (first-seen order), then seeded pairs of them joined by a space."""
    unique = list(dict.fromkeys(s for p in read_sts("train") for s in (p.s1, p.s2)))
    if size <= len(unique):
        return unique[:size]
    rng = np.random.default_rng(seed)
    extra = size - len(unique)
    a, b = rng.integers(0, len(unique), extra), rng.integers(0, len(unique) - 1, extra)
    b = b + (b >= a)  # never a sentence with itself
    return unique + [f"{unique[i]} {unique[j]}" for i, j in zip(a, b, strict=True)]


def query_texts(count: int) -> list[str]:
    """STS-B dev sentences (first-seen order) that STS-B train does not hold."""
    train = {s for p in read_sts("train") for s in (p.s1, p.s2)}
    dev = dict.fromkeys(s for p in read_sts("dev") for s in (p.s1, p.s2))
    return [s for s in dev if s not in train][:count]


def embeddings(enc: runtime.Encoder, texts: list[str], cache: Path | None) -> np.ndarray:
    """float32 embeddings of ``texts``, cached by graph and text hashes."""
    graph = enc.manifest.variants[enc.precision].graph.sha256
    key = hashlib.sha256((graph + "\n" + "\n".join(texts)).encode()).hexdigest()[:20]
    path = None if cache is None else cache / f"{key}.npy"
    if path is not None and path.is_file():
        return np.load(path)
    out = enc.encode(texts, batch_size=64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


# ---- similarity of matching rows ----


def spearman(scores: np.ndarray, gold: np.ndarray) -> float:
    """Spearman correlation with average ranks for ties (as scipy.stats.spearmanr)."""
    from export.data import _average_ranks

    return float(np.corrcoef(_average_ranks(np.asarray(scores, np.float64)), _average_ranks(gold))[0, 1])


def row_similarity(precision: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each type's similarity of matching rows: cosine, integer dot product, or Hamming similarity."""
    if precision == "float32":
        return np.asarray((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    if precision in ("binary", "ubinary"):
        bits = a.shape[1] * 8
        return bits - np.bitwise_count(a.view(np.uint8) ^ b.view(np.uint8)).sum(1, dtype=np.int64)
    return (a.astype(np.int64) * b.astype(np.int64)).sum(1)


def stacked_spearman(precision: str, codes: np.ndarray, gold: np.ndarray) -> float:
    """Spearman of the pairs laid out as s1 rows, then s2 rows."""
    n = len(gold)
    return spearman(row_similarity(precision, codes[:n], codes[n:]), gold)


def calibration_table(
    train: np.ndarray, unique_train: np.ndarray, dev: np.ndarray, shipped: np.ndarray | None
) -> list[dict[str, Any]]:
    """int8 dot-product spearman on STS-B train and dev for candidate grids, all computed from ``unique_train``."""
    gold_train, gold_dev = gold_scores(read_sts("train")), gold_scores(read_sts("dev"))
    rows = [
        {
            "grid": "float32 cosine (reference)",
            "train": stacked_spearman("float32", train, gold_train),
            "dev": stacked_spearman("float32", dev, gold_dev),
        },
    ]
    grids: list[tuple[str, np.ndarray]] = [] if shipped is None else [("manifest (shipped)", shipped)]
    for method in ("symmetric", "minmax"):
        for pct in (0.0, 0.1, 1.0):
            label = f"{method}, {'extremes' if pct == 0 else f'percentile {pct} / {100 - pct}'}"
            grids.append((label, calibrate(unique_train, method, pct)))  # type: ignore[arg-type]
    for label, ranges in grids:
        rows.append(
            {
                "grid": label,
                "train": stacked_spearman("int8", quantize(train, "int8", ranges), gold_train),
                "dev": stacked_spearman("int8", quantize(dev, "int8", ranges), gold_dev),
            }
        )
    return rows


# ---- search ----


def _matmul_integer(a_type: int, b_type: int, threads: int) -> ort.InferenceSession:
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "dot",
        [
            helper.make_tensor_value_info("A", a_type, ["M", "K"]),
            helper.make_tensor_value_info("B", b_type, ["K", "N"]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, ["M", "N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def top_k(scores: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """Indices of the k best scores of each row, best first (ties in argpartition's order)."""
    n = scores.shape[1]
    if largest:
        part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        order = np.argsort(
            -np.take_along_axis(scores, part, 1).astype(np.int64 if scores.dtype.kind != "f" else np.float64),
            axis=1,
            kind="stable",
        )
    else:
        part = np.argpartition(scores, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


class Search:
    """Exact top-k over a corpus held in one output type; ``run(queries)`` -> (nq, k) corpus indices."""

    def __init__(self, name: str, corpus: np.ndarray, threads: int) -> None:
        self.name = name
        self.corpus = corpus
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads)
        self.chunks = [slice(i, min(i + CHUNK, len(corpus))) for i in range(0, len(corpus), CHUNK)]
        if name in ("int8", "uint8"):
            b_type = TensorProto.INT8 if name == "int8" else TensorProto.UINT8
            self.session = _matmul_integer(TensorProto.UINT8, b_type, threads)
            # int8 codes stored as uint8 = int8 + 128 (MatMulInteger's fast kernel wants u8 x s8); the query's
            # 128 * sum(q) is taken off so the scores are the exact int8 dot products
            self.stored = (corpus.view(np.uint8) ^ np.uint8(0x80)) if name == "int8" else corpus
        if name in ("binary", "ubinary", "binary+int8"):
            self.words = _words(corpus)

    def scores(self, q: np.ndarray) -> np.ndarray:
        """(nq, corpus) scores: larger is better, except Hamming distances (smaller)."""
        if self.name == "float32":
            return q @ self.corpus.T
        if self.name in ("int8", "uint8"):
            out = np.empty((len(q), len(self.corpus)), dtype=np.int32)
            qt = np.ascontiguousarray(q.T)

            def part(s: slice) -> None:
                out[:, s] = self.session.run(None, {"A": self.stored[s], "B": qt})[0].T

            for s in self.chunks:
                part(s)
            if self.name == "int8":
                out -= 128 * q.astype(np.int32).sum(1, keepdims=True)
            return out
        return self.hamming(q)

    def hamming(self, q: np.ndarray) -> np.ndarray:
        words, qw = self.words, _words(q)
        out = np.empty((len(q), len(self.corpus)), dtype=np.uint16)

        def part(s: slice) -> None:
            c = words[s]
            acc = np.zeros((len(q), c.shape[0]), dtype=np.uint16)
            for w in range(c.shape[1]):
                acc += np.bitwise_count(qw[:, w, None] ^ c[None, :, w])
            out[:, s] = acc

        list(self.pool.map(part, self.chunks))
        return out

    def score_all(self, queries: np.ndarray) -> None:
        """Every query batch's scores, no selection: the similarity kernel alone."""
        for start in range(0, len(queries), QUERY_BATCH):
            self.scores(queries[start : start + QUERY_BATCH])

    def run(self, queries: np.ndarray, k: int = K, rescore: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        results = []
        for start in range(0, len(queries), QUERY_BATCH):
            q = queries[start : start + QUERY_BATCH]
            s = self.scores(q)
            if self.name in ("binary", "ubinary", "binary+int8"):
                if rescore is None:
                    results.append(top_k(s, k, largest=False))
                    continue
                corpus8, queries8 = rescore
                cand = top_k(s, RESCORE, largest=False)
                q8 = queries8[start : start + QUERY_BATCH].astype(np.int32)
                exact = np.einsum("qcd,qd->qc", corpus8[cand].astype(np.int32), q8)
                results.append(np.take_along_axis(cand, top_k(exact, k), 1))
            else:
                results.append(top_k(s, k))
        return np.concatenate(results)


def _words(packed: np.ndarray) -> np.ndarray:
    """Packed bits as 64-bit words (zero bytes appended to fill the last word: they never differ)."""
    b = packed.view(np.uint8)
    pad = -b.shape[1] % 8
    if pad:
        b = np.hstack([b, np.zeros((len(b), pad), np.uint8)])
    return np.ascontiguousarray(b).view(np.uint64)


def best_of(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k found."""
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


def measure(
    enc: runtime.Encoder, corpus_size: int, query_count: int, threads: int, repeats: int, cache: Path | None
) -> dict[str, Any]:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass
    ranges = None if enc.manifest.output_ranges is None else ranges_array(enc.manifest.output_ranges)
    train_pairs, dev_pairs = read_sts("train"), read_sts("dev")
    dev = embeddings(enc, pair_texts(dev_pairs), cache)
    train = embeddings(enc, pair_texts(train_pairs), cache)
    texts = pair_texts(train_pairs)
    first = {s: i for i, s in reversed(list(enumerate(texts)))}
    unique_train = train[sorted(first.values())]
    corpus = embeddings(enc, corpus_texts(corpus_size), cache)
    queries = embeddings(enc, query_texts(query_count), cache)
    dim = enc.get_sentence_embedding_dimension()
    gold = gold_scores(dev_pairs)
    truth = Search("float32", corpus, threads).run(queries)
    rows = []
    for precision in OUTPUT_PRECISIONS:
        if precision in ("int8", "uint8") and ranges is None:
            continue
        codes_dev = quantize(dev, precision, ranges)
        c, q = quantize(corpus, precision, ranges), quantize(queries, precision, ranges)
        search = Search(precision, c, threads)
        found = search.run(q)
        rows.append(
            {
                "precision": precision,
                "similarity": SIMILARITY[precision],
                "bytes_per_vector": output_width(precision, dim) * c.itemsize,
                "dev_spearman": stacked_spearman(precision, codes_dev, gold),
                "search": ENGINE[precision],
                "queries_per_s": len(q) / best_of(lambda s=search, q=q: s.run(q), repeats),
                "scores_per_s": len(q) / best_of(lambda s=search, q=q: s.score_all(q), repeats),
                "recall_at_10": recall(found, truth),
            }
        )
    if ranges is not None:
        c8, q8 = quantize(corpus, "int8", ranges), quantize(queries, "int8", ranges)
        cb, qb = quantize(corpus, "ubinary"), quantize(queries, "ubinary")
        search = Search("binary+int8", cb, threads)
        found = search.run(qb, rescore=(c8, q8))
        rows.append(
            {
                "precision": "ubinary + int8 rescore",
                "similarity": f"Hamming top {RESCORE}, then int8 dot",
                "bytes_per_vector": output_width("ubinary", dim) + dim,
                "dev_spearman": None,
                "search": "numpy XOR + bitwise_count, then int8 dot of the candidates",
                "queries_per_s": len(qb) / best_of(lambda: search.run(qb, rescore=(c8, q8)), repeats),
                "scores_per_s": None,
                "recall_at_10": recall(found, truth),
            }
        )
        few = q8[:16].astype(np.int32)
        c32 = c8.astype(np.int32)
        seconds = best_of(lambda: top_k(few @ c32.T, K), 1)
        rows.append(
            {
                "precision": "int8 (numpy)",
                "similarity": "int8 dot, int32 sums",
                "bytes_per_vector": dim,
                "dev_spearman": None,
                "search": f"numpy int32 matmul (no BLAS), {len(few)} queries",
                "queries_per_s": len(few) / seconds,
                "scores_per_s": len(few) / best_of(lambda: few @ c32.T, 1),
                "recall_at_10": recall(top_k(few @ c32.T, K), truth[:16]),
            }
        )
    base, base_scores = rows[0]["queries_per_s"], rows[0]["scores_per_s"]
    for row in rows:
        row["speed_vs_float32"] = row["queries_per_s"] / base
        row["scores_vs_float32"] = None if row["scores_per_s"] is None else row["scores_per_s"] / base_scores
    uint8_centred = None
    if ranges is not None:
        centred = quantize(dev, "uint8", ranges).astype(np.int64) - 128
        uint8_centred = stacked_spearman("int8", centred, gold)
    return {
        "corpus": {
            "vectors": len(corpus),
            "real_sentences": min(corpus_size, len(unique_train)),
            "queries": len(queries),
        },
        "rows": rows,
        "uint8_centred_dev_spearman": uint8_centred,
        "calibration": calibration_table(train, unique_train, dev, ranges),
    }


SIMILARITY = {
    "float32": "cosine",
    "int8": "dot product, int32 sums",
    "uint8": "plain dot product (not centred)",
    "binary": "Hamming similarity",
    "ubinary": "Hamming similarity",
}
ENGINE = {
    "float32": "numpy float32 matmul (OpenBLAS)",
    "int8": "onnxruntime MatMulInteger u8 x s8",
    "uint8": "onnxruntime MatMulInteger u8 x u8",
    "binary": "numpy XOR + bitwise_count",
    "ubinary": "numpy XOR + bitwise_count",
}


def prepare(enc: runtime.Encoder, corpus_size: int, query_count: int, cache: Path) -> None:
    """Fill the embedding cache (untimed; the long part)."""
    for texts in (
        pair_texts(read_sts("dev")),
        pair_texts(read_sts("train")),
        query_texts(query_count),
        corpus_texts(corpus_size),
    ):
        embeddings(enc, texts, cache)


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(doc: dict[str, Any]) -> str:
    """The report's tables."""
    m, r = doc["machine"], doc["results"]
    corpus = r["corpus"]
    lines = [
        f"# Compact output types: {m['name']}",
        "",
        f"{m['cpu_model']} ({', '.join(m['isa'])}), {doc['created']}, {doc['threads']} threads; model "
        f"{doc['model']['artifact']} ({doc['model']['graph']} graph {doc['model']['graph_sha256'][:12]}), grid "
        f"{doc['model']['grid']}. Search: exact top-{K} over {corpus['vectors']:,} vectors "
        f"({corpus['real_sentences']:,} unique STS-B train sentences, the rest pairs of them joined), "
        f"{corpus['queries']:,} queries (STS-B dev sentences not in train), best of {doc['repeats']}; "
        f"recall@{K} against float32 exact search.",
        "",
        "| type | similarity | bytes / vector | STS-B dev spearman | search | queries/s (top-10) | vs float32 | "
        "queries/s (scores only) | vs float32 | recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['precision']} | {row['similarity']} | {row['bytes_per_vector']:,} | {_f(row['dev_spearman'])} | "
            f"{row['search']} | {row['queries_per_s']:,.0f} | {row['speed_vs_float32']:.2f}x | "
            f"{_n(row['scores_per_s'])} | {_x(row['scores_vs_float32'])} | {row['recall_at_10']:.3f} |"
        )
    if r["uint8_centred_dev_spearman"] is not None:
        lines += [
            "",
            f"uint8 centred (u - 128, which are the int8 codes): dev spearman {_f(r['uint8_centred_dev_spearman'])}.",
        ]
    lines += [
        "",
        "## Grid for int8 (dot product of the codes; chosen on STS-B train, dev shown)",
        "",
        "| grid | train spearman | dev spearman |",
        "|---|---|---|",
    ]
    for row in r["calibration"]:
        lines.append(f"| {row['grid']} | {row['train']:.5f} | {row['dev']:.5f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure, write json and md, print the md."""
    parser = argparse.ArgumentParser(prog="python -m studies.precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="artifact folder (default: the shipped one)")
    parser.add_argument("--corpus", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--prepare", action="store_true", help="only embed (and cache) the texts, untimed")
    parser.add_argument("--out", type=Path, default=None, help="output stem (default: results/precision-<machine>)")
    args = parser.parse_args(argv)
    enc = runtime.load(args.model, provider="cpu", threads=args.threads)
    if args.prepare:
        prepare(enc, args.corpus, args.queries, args.cache)
        return 0
    machine = describe()
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results = measure(enc, args.corpus, args.queries, args.threads, args.repeats, args.cache)
    ranges = enc.manifest.output_ranges
    doc = {
        "machine": machine,
        "libraries": library_versions(),
        "created": created,
        "threads": args.threads,
        "repeats": args.repeats,
        "model": {
            "artifact": str(enc.folder.relative_to(REPO) if enc.folder.is_relative_to(REPO) else enc.folder),
            "graph": enc.precision.value,
            "graph_sha256": enc.manifest.variants[enc.precision].graph.sha256,
            "grid": "none"
            if ranges is None
            else f"{ranges.calibration.get('method')} ({ranges.calibration.get('sentences')} sentences)",
        },
        "results": results,
    }
    stem = args.out or (DEFAULT_OUT / f"precision-{machine['name']}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
