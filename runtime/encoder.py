"""Encoder: sentences in, embeddings out, with the sentence-transformers calling conventions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from runtime.artifact import Manifest, Precision, read_manifest, verify
from runtime.backends import Backend, Decision, Runner, choose
from runtime.batching import TOKENS_PER_RUN, plan_runs, renormalize
from runtime.errors import ArtifactError
from runtime.quantization import (
    CALIBRATED,
    OUTPUT_PRECISIONS,
    OutputPrecision,
    check_output_precision,
    quantize,
    ranges_array,
)
from runtime.session import Provider

__all__ = ["TOKENS_PER_RUN", "Encoder"]

Texts = str | Sequence[str]


class Encoder:
    """A loaded sentence-embedding model; thread-safe, one instance can serve many threads."""

    def __init__(
        self,
        folder: Path,
        provider: Provider = Provider.AUTO,
        precision: Precision | None = None,
        threads: int | None = None,
        backend: Backend = Backend.AUTO,
    ) -> None:
        folder = Path(folder)
        self.folder = folder
        self.manifest: Manifest = read_manifest(folder)
        self._runner: Runner
        self.decision: Decision
        self._runner, self.decision = choose(self.manifest, folder, provider, precision, backend, threads)
        self.device: str = self.decision.device
        self.precision: Precision = self.decision.precision
        self.backend: str = self.decision.backend
        self.max_seq_length: int = self.manifest.max_seq_length
        self._tokenizer = _load_tokenizer(verify(folder, self.manifest.tokenizer), self.max_seq_length)
        # tokenizers rebuilds its whole vocabulary map to count it (~8 ms for 30,522 entries): count once.
        self._vocab_size = int(self._tokenizer.get_vocab_size())
        ranges = self.manifest.output_ranges
        self._ranges = None if ranges is None else ranges_array(ranges)

    @property
    def rule(self) -> str:
        """Which engine embeds which texts, in words (:attr:`Decision.rule`); corpus jobs record it."""
        return self.decision.rule

    @property
    def info(self) -> dict[str, object]:
        """How this encoder computes: backend and rule, engine(s), device, graph precision, inference precision,
        threads, whether its vectors are the same on every CPU, and why it was chosen so."""
        details = self._runner.info()
        inference = details.pop("inference_precision", None) or ("fp16" if self.precision is Precision.FP16 else "f32")
        return {
            "backend": self.backend,
            "rule": self.rule,
            "device": self.device,
            "graph_precision": self.precision.value,
            "inference_precision": inference,
            "packed_tokens": self.packs_tokens,
            "portable": self.decision.portable,
            **details,
            "reasons": list(self.decision.reasons),
        }

    @property
    def packs_tokens(self) -> bool:
        """Whether the graph runs its token-wise layers on the real tokens only (``export.pack``): a run then costs
        about its real tokens, and padding only in attention, instead of its rows times its longest row."""
        return bool(self.manifest.variants[self.precision].settings.get("packed_tokens", False))

    def __repr__(self) -> str:
        return (
            f"Encoder({str(self.folder)!r}, backend={self.backend!r}, device={self.device!r}, "
            f"precision={self.precision.value!r})"
        )

    def get_sentence_embedding_dimension(self) -> int:
        """Length of each embedding (384 for the shipped model)."""
        return self.manifest.dimension

    def tokenize(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, with [CLS]/[SEP], truncated to max_seq_length; no padding."""
        texts = _check_texts(sentences)[0]
        return self._token_ids(texts)

    def encode(
        self,
        sentences: Texts,
        batch_size: int = 32,
        normalize_embeddings: bool = True,
        show_progress_bar: bool = False,
        *,
        precision: OutputPrecision = "float32",
    ) -> np.ndarray:
        """Embed one text (-> (dim,)) or a list of texts (-> (n, dim)), in input order.

        Texts longer than ``max_seq_length`` tokens are truncated. The model ends in an L2 normalisation, so vectors
        are unit length either way; ``normalize_embeddings=True`` renormalises in float32 to remove the rounding of
        reduced-precision graphs. Empty or whitespace-only text embeds as the empty sentence ([CLS] [SEP]); lone
        surrogates are replaced by U+FFFD before tokenisation.

        ``precision`` is the type of the returned vectors, as sentence-transformers names it (the graph variant is
        ``runtime.load(precision=...)``'s choice): "float32"; "int8" / "uint8" (one byte per dimension on the
        artifact's calibrated grid); "binary" (int8) / "ubinary" (uint8): sign bits packed 8 per byte, (dim + 7) // 8
        bytes. See :mod:`runtime.quantization`.
        """
        texts, single = _check_texts(sentences)
        _check_batch_size(batch_size)
        precision = self._check_output_precision(precision)
        ids = self._token_ids(texts)
        out = np.empty((len(ids), self.manifest.dimension), dtype=np.float32)
        with _progress_bar(len(ids), show_progress_bar) as advance:
            for rows in self._plan([len(r) for r in ids], batch_size):
                out[rows] = self._run([ids[i] for i in rows])
                advance(len(rows))
        if normalize_embeddings:
            renormalize(out)
        out = quantize(out, precision, self._ranges)
        return out[0] if single else out

    @property
    def output_precisions(self) -> tuple[OutputPrecision, ...]:
        """The output types ``encode(precision=...)`` offers with this artifact (int8/uint8 need calibrated ranges)."""
        return tuple(p for p in OUTPUT_PRECISIONS if self._ranges is not None or p not in CALIBRATED)

    def quantize(self, embeddings: np.ndarray, precision: OutputPrecision) -> np.ndarray:
        """Float embeddings of this model ((dim,) or (n, dim)) -> ``precision``, exactly as ``encode`` returns it."""
        return quantize(embeddings, self._check_output_precision(precision), self._ranges)

    def _check_output_precision(self, value: object) -> OutputPrecision:
        precision = check_output_precision(value)
        if precision in CALIBRATED and self._ranges is None:
            raise ArtifactError(
                f"{self.folder}: the manifest has no calibrated output ranges, so precision={precision!r} "
                f"(int8/uint8 vectors) is unavailable; add them with python -m export calibrate-outputs --out "
                f"{self.folder} (float32, binary and ubinary need none)"
            )
        return precision

    def similarity(self, a: Texts | np.ndarray, b: Texts | np.ndarray) -> np.ndarray:
        """Cosine similarity matrix (n, m) of two sets of embeddings or texts, as SentenceTransformer.similarity."""
        x, y = self._as_unit_matrix(a, "a"), self._as_unit_matrix(b, "b")
        return np.asarray(x @ y.T, dtype=np.float32)

    def _as_unit_matrix(self, value: Texts | np.ndarray, name: str) -> np.ndarray:
        if isinstance(value, str) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value) and value
        ):
            matrix = np.atleast_2d(self.encode(value))
        else:
            matrix = np.atleast_2d(np.asarray(value, dtype=np.float32))
        if matrix.ndim != 2 or matrix.shape[1] != self.manifest.dimension:
            expected = f"(n, {self.manifest.dimension})"
            raise ValueError(f"{name}: expected texts or embeddings of shape {expected}, got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise ValueError(f"{name}: embeddings contain NaN or infinity")
        return renormalize(matrix.copy())

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._encodings(texts)]

    def _encodings(self, texts: list[str]) -> list[Encoding]:
        try:
            return list(self._tokenizer.encode_batch(texts))
        except TypeError:  # tokenizers rejects str that is not valid UTF-8 (lone surrogates)
            return list(self._tokenizer.encode_batch([_scrub(t) for t in texts]))

    def _run(self, rows: list[list[int]]) -> np.ndarray:
        width = max(len(r) for r in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = r
            attention_mask[i, : len(r)] = 1
        try:
            emb = self._runner.run(input_ids, attention_mask)
        except Exception as err:
            raise RuntimeError(f"{self.backend} failed on a batch of shape {input_ids.shape}: {err}") from err
        if not np.isfinite(emb).all():
            raise RuntimeError(
                f"{self.folder}: graph produced non-finite embeddings for a batch of shape {input_ids.shape}"
            )
        return np.asarray(emb, dtype=np.float32)

    # Token-level entry points, for callers that gather many encode requests into shared batches (runtime.server).

    @property
    def vocab_size(self) -> int:
        """Number of token ids the model's embedding table holds; valid ids are 0 .. vocab_size - 1."""
        return self._vocab_size

    def tokenize_with_truncation(self, sentences: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids of each text as ``tokenize`` returns them, and whether each text was cut at max_seq_length."""
        texts = _check_texts(sentences)[0]
        encodings = self._encodings(texts)
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]

    def batch_plan(self, ids: Sequence[Sequence[int]], batch_size: int = 32) -> list[list[int]]:
        """Row indices of each engine run ``encode`` makes for these token sequences (:func:`runtime.batching.plan_runs`
        with this encoder's token bound and engine boundaries)."""
        _check_batch_size(batch_size)
        return self._plan([len(r) for r in ids], batch_size)

    def _plan(self, lengths: list[int], batch_size: int) -> list[list[int]]:
        runner, default = self._runner, TOKENS_PER_RUN[self.device]

        def bound(width: int) -> int:
            return runner.tokens_per_run(width) or default

        return plan_runs(lengths, batch_size, bound, cuts=runner.cuts, equal_lengths=runner.equal_lengths)

    def embed_ids(self, rows: Sequence[Sequence[int]], normalize_embeddings: bool = True) -> np.ndarray:
        """Embed token-id sequences in ONE session run -> float32 (n, dim); plan runs with ``batch_plan``.

        Each sequence is used as given (no [CLS]/[SEP] added): 1 to max_seq_length ids in 0 .. vocab_size - 1.
        With ``normalize_embeddings`` the rows are renormalised exactly as ``encode`` does.
        """
        if not rows:
            return np.empty((0, self.manifest.dimension), dtype=np.float32)
        vocab = self.vocab_size
        for i, r in enumerate(rows):
            if not 1 <= len(r) <= self.max_seq_length:
                raise ValueError(f"rows[{i}] has {len(r)} token ids, expected 1 to {self.max_seq_length}")
            if min(r) < 0 or max(r) >= vocab:
                raise ValueError(f"rows[{i}] holds token ids outside 0 .. {vocab - 1}")
        out = self._run([list(r) for r in rows])
        return renormalize(out) if normalize_embeddings else out


def _load_tokenizer(path: Path, max_seq_length: int) -> Tokenizer:
    """The artifact's tokenizer with truncation and padding set here, never inherited from tokenizer.json."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:
        raise ArtifactError(f"{path}: not a valid tokenizers file: {err}") from err
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length, strategy="longest_first", direction="right")
    return tokenizer


def _scrub(text: str) -> str:
    """Replace lone surrogates with U+FFFD (surrogate pairs written as two code points are joined)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _check_texts(sentences: object) -> tuple[list[str], bool]:
    """Validate the public input once: a str, or a list/tuple of str."""
    if isinstance(sentences, str):
        return [sentences], True
    if not isinstance(sentences, (list, tuple)):
        raise TypeError(f"sentences must be a str or a list of str, got {type(sentences).__name__}")
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"sentences[{i}] must be a str, got {type(s).__name__}")
    return list(sentences), False


def _check_batch_size(batch_size: object) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


@contextlib.contextmanager
def _progress_bar(total: int, show: bool) -> Iterator[Callable[[int], object]]:
    """A tqdm bar on stderr (rate, ETA) when asked for; tqdm is imported only then."""
    if not show:
        yield lambda _: None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit=" texts", desc="encode") as bar:
        yield bar.update
