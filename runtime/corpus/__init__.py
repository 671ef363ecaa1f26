"""Corpus jobs: embed files of texts in bounded memory into .npy, .jsonl or resumable Parquet shards, locally or
on a Ray Data actor pool, and check the result against the input.

``import runtime`` does not import this package; this package imports pyarrow and ray only when a job needs them.
"""

from runtime.corpus.check import CheckReport, check
from runtime.corpus.errors import CorpusError
from runtime.corpus.job import DEFAULTS, JobResult, encode_files

__all__ = ["DEFAULTS", "CheckReport", "CorpusError", "JobResult", "check", "encode_files"]
