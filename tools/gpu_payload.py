"""Build what the one-shot GPU run (``tools/gpu_device.sh``) needs beside a checkout of this repository.

    python -m tools.gpu_payload [--out build/gpu-payload] [--part-mib N] [--fp32]

Everything the GPU machine may lack or that git does not track goes into one xz-compressed tar:

* onnxruntime-gpu, unpacked from its wheel (Python 3.12, manylinux x86-64) with its CUDA provider library pruned to
  the GPU generation that will run it (``--sm 90``: H100/H200; ``tools/fatbin.py``): 70 MB instead of 255 MB;
* the fp16 graph with the artifact's manifest and tokenizer (the int8 graph is tracked, so the checkout brings it);
* the fine-tuned checkpoint's configuration and tokenizer; its fp16 weights are rebuilt on the GPU machine from the
  fp16 graph, which holds the same numbers (``tools/graph_weights.py``; what the graph lacks, 0.3 MB, travels);
* the PyTorch fp32 embeddings of the 3,000 STS-B dev sentences (the accuracy reference);
* with ``--fp32``, the fp32 graph too, in a second tar (the runtime's fp32 CPU figures; 72 MiB more).

``--part-mib`` splits each tar into numbered folders (``1/``, ``2/``, ...; ``fp32-1/``, ...) no larger than that, for
links that move a limited number of bytes at a time; every folder holds ``SHA256SUMS`` of all parts, so the GPU side
can tell a missing or damaged part before it unpacks anything; ``--resplit --part-mib N`` re-cuts a built folder.
Needs the export environment (torch, sentence-transformers) and a checkpoint and artifact from ``python -m export all``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from benchmarks.config import DEFAULT_CHECKPOINT, REPO
from runtime.artifact import MANIFEST_FILE, TOKENIZER_FILE, Precision, read_manifest, sha256_file, verify
from tools.fatbin import prune

ORT_VERSION = "1.31.1"
CUDA_LIBRARY = "onnxruntime/capi/libonnxruntime_providers_cuda.so"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_payload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "gpu-payload")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="fine-tuned ST checkpoint")
    parser.add_argument("--artifact", type=Path, default=REPO / "artifacts" / "minilm-l6-stsb")
    parser.add_argument("--ort-version", default=ORT_VERSION, help="onnxruntime-gpu version (default %(default)s)")
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python (default %(default)s)")
    parser.add_argument("--wheel", type=Path, help="an onnxruntime-gpu wheel already downloaded (else pip downloads)")
    parser.add_argument("--sm", type=int, action="append", help="GPU architectures to keep (default 90: H100/H200)")
    parser.add_argument("--part-mib", type=float, help="split each tar into folders of at most this many MiB")
    parser.add_argument("--fp32", action="store_true", help="also pack the fp32 graph (runtime fp32 CPU figures)")
    parser.add_argument("--xz-level", type=int, default=6)
    parser.add_argument("--resplit", action="store_true", help="only re-cut --out's parts to --part-mib (seconds)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.resplit:
        report(args.out, resplit(args.out, args.part_mib))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    architectures = set(args.sm or [90])
    fp16 = verify(args.artifact, read_manifest(args.artifact).variants[Precision.FP16].graph)  # present and intact
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-payload-", dir=args.out.parent) as tmp:
        stage = Path(tmp) / "payload"
        facts = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": _git_commit(),
            "onnxruntime_gpu": stage_onnxruntime(args, stage / "site", architectures),
            "checkpoint": stage_checkpoint(args.checkpoint, fp16, stage),
        }
        artifact = stage / "artifact"
        artifact.mkdir()
        for name in (MANIFEST_FILE, TOKENIZER_FILE):
            shutil.copy2(args.artifact / name, artifact / name)
        shutil.copy2(fp16, artifact / fp16.name)
        facts["files"] = {str(p.relative_to(stage)): sha256_file(p) for p in sorted(stage.rglob("*")) if p.is_file()}
        (stage / "PAYLOAD.json").write_text(json.dumps(facts, indent=1) + "\n")
        bundles = {"payload": pack(stage, Path(tmp) / "payload.tar.xz", args.xz_level)}
        if args.fp32:  # unpacks over the main payload: payload/artifact/model.fp32.onnx
            extra = Path(tmp) / "fp32" / "payload"
            (extra / "artifact").mkdir(parents=True)
            fp32 = verify(args.artifact, read_manifest(args.artifact).variants[Precision.FP32].graph)
            shutil.copy2(fp32, extra / "artifact" / fp32.name)
            bundles["fp32"] = pack(extra, Path(tmp) / "fp32.tar.xz", args.xz_level, word=4)
        for old in args.out.iterdir():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        folders = [f for name, tar in bundles.items() for f in place(tar, args.out, name, args.part_mib)]
    report(args.out, folders)


def stage_onnxruntime(args: argparse.Namespace, site: Path, architectures: set[int]) -> dict[str, object]:
    """Unpack the onnxruntime-gpu wheel into ``site`` (what ``pip install --target`` does) and prune its CUDA code."""
    wheel = args.wheel or download(args.ort_version, args.python, REPO / "build" / "gpu-dl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    library = site / CUDA_LIBRARY
    before = library.stat().st_size
    pruned = prune(library, architectures)
    if not pruned.kept:
        raise SystemExit(f"{wheel.name} has no cubin for sm_{sorted(architectures)}: nothing would run")
    print(f"{wheel.name}: {CUDA_LIBRARY} keeps {pruned.kept} cubins, drops {pruned.dropped}")
    return {
        "wheel": wheel.name,
        "wheel_sha256": sha256_file(wheel),
        "kept_sm": sorted(architectures),
        "cubins_kept": pruned.kept,
        "cubins_dropped": pruned.dropped,
        "library_bytes": before,
        "bytes_zeroed": pruned.freed_bytes,
    }


def download(version: str, python: str, cache: Path) -> Path:
    """The onnxruntime-gpu wheel for ``python`` on manylinux x86-64, from pip's index (kept in ``cache``)."""
    tag = "cp" + python.replace(".", "")
    found = sorted(cache.glob(f"onnxruntime_gpu-{version}-{tag}-{tag}-manylinux*_x86_64.whl"))
    if found:
        return found[-1]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            python,
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(cache),
            f"onnxruntime-gpu=={version}",
        ],
        check=True,
    )
    return download(version, python, cache)


def stage_checkpoint(checkpoint: Path, fp16_graph: Path, stage: Path) -> dict[str, object]:
    """The checkpoint in fp16 without its weights file (``tools/graph_weights.py`` rebuilds that from the fp16
    graph on the GPU machine: 43 MB less to carry), what the graph lacks as ``checkpoint.remainder.safetensors``, and
    the fp32 model's embeddings of the dev sentences as ``dev_fp32.npy``."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    from sentence_transformers import SentenceTransformer

    from export.data import dev_sentences
    from tools.graph_weights import WEIGHTS_FILE, digest, rebuild, remainder

    if not (checkpoint / "modules.json").is_file():
        raise SystemExit(f"{checkpoint}: not a sentence-transformers checkpoint (python -m export train makes it)")
    model = SentenceTransformer(str(checkpoint), device="cpu")
    reference = model.encode(dev_sentences(), batch_size=64, convert_to_numpy=True)
    np.save(stage / "dev_fp32.npy", reference.astype(np.float32))
    folder = stage / "checkpoint"
    model.half().save(str(folder))
    half = load_file(str(folder / WEIGHTS_FILE))
    extra = remainder(half, fp16_graph)
    if digest(rebuild(fp16_graph, extra)) != digest(half):
        raise AssertionError("the weights rebuilt from the fp16 graph differ from model.half()")
    save_file(extra, str(stage / "checkpoint.remainder.safetensors"))
    (folder / WEIGHTS_FILE).unlink()
    return {
        "source": str(checkpoint),
        "reference": "dev_fp32.npy",
        "sentences": int(reference.shape[0]),
        "weights_digest": digest(half),
        "remainder_tensors": sorted(extra),
    }


def pack(folder: Path, tar: Path, level: int, word: int = 0) -> Path:
    """``folder`` as an xz-compressed tar whose top entry is ``folder``'s name (multithreaded xz when installed).

    ``word`` = 4 tunes LZMA2 for arrays of 4-byte values (lc=0, lp=pb=2): the fp32 graph packs 8 % smaller.
    """
    options = {"preset": level} | ({"lc": 0, "lp": word.bit_length() - 1, "pb": word.bit_length() - 1} if word else {})
    if shutil.which("xz") and shutil.which("tar"):
        lzma2 = "--lzma2=" + ",".join(f"{k}={v}" for k, v in options.items())
        with tar.open("wb") as sink:
            archiver = subprocess.Popen(
                ["tar", "-C", str(folder.parent), "-cf", "-", folder.name], stdout=subprocess.PIPE
            )
            subprocess.run(["xz", "-T0", lzma2, "-c"], stdin=archiver.stdout, stdout=sink, check=True)
            if archiver.wait() != 0:
                raise RuntimeError(f"tar of {folder} failed")
        return tar
    import lzma

    filters = [{"id": lzma.FILTER_LZMA2, **options}]
    with (
        lzma.open(tar, "wb", format=lzma.FORMAT_XZ, filters=filters) as xz,
        tarfile.open(fileobj=xz, mode="w") as t,
    ):
        t.add(folder, arcname=folder.name)
    return tar


def resplit(out: Path, part_mib: float) -> list[Path]:
    """Cut an existing payload folder's bundles into parts of a new size (checksums checked, then rewritten)."""
    folders = []
    for name in ("payload", "fp32"):
        whole = out / f"{name}.tar.xz"
        parts = sorted(out.glob(f"*/{name}.tar.xz.part-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
        if not parts and not whole.is_file():
            continue
        if parts:
            sums = (parts[0].parent / f"{name}.tar.xz.SHA256SUMS").read_text().splitlines()
            if len(sums) != len(parts):
                raise SystemExit(f"{out}: {len(parts)} of {len(sums)} {name} parts present")
            with whole.open("wb") as sink:
                for part, line in zip(parts, sums, strict=True):
                    data = part.read_bytes()
                    if hashlib.sha256(data).hexdigest() != line.split()[0]:
                        sink.close()
                        whole.unlink()
                        raise SystemExit(f"{part}: checksum mismatch")
                    sink.write(data)
            for part in parts:
                shutil.rmtree(part.parent)
        folders += place(whole, out, name, part_mib)
    return folders


def place(tar: Path, out: Path, name: str, part_mib: float | None) -> list[Path]:
    """Move ``tar`` into ``out``: whole, or as ``name-1/``, ``name-2/``... (``1/``... for the main payload)."""
    if part_mib is None:
        target = out / tar.name
        shutil.move(tar, target)
        return [target]
    part = int(part_mib * 2**20)
    data = tar.read_bytes()
    chunks = [data[i : i + part] for i in range(0, len(data), part)]
    prefix = "" if name == "payload" else f"{name}-"
    folders = [out / f"{prefix}{i}" for i in range(1, len(chunks) + 1)]
    sums = "".join(
        f"{hashlib.sha256(chunk).hexdigest()}  {folder.name}/{tar.name}.part-{i:02d}\n"
        for i, (folder, chunk) in enumerate(zip(folders, chunks, strict=True), start=1)
    )
    for i, (folder, chunk) in enumerate(zip(folders, chunks, strict=True), start=1):
        folder.mkdir()
        (folder / f"{tar.name}.part-{i:02d}").write_bytes(chunk)
        (folder / f"{tar.name}.SHA256SUMS").write_text(sums)
    tar.unlink()
    return folders


def report(out: Path, folders: list[Path]) -> None:
    def mib(path: Path) -> float:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        return sum(f.stat().st_size for f in files) / 2**20

    for folder in folders:
        print(f"{folder}  {mib(folder):.1f} MiB")
    print(f"total {sum(mib(f) for f in folders):.1f} MiB in {len(folders)} piece(s)")
    relative = os.path.relpath(out, REPO) if out.resolve().is_relative_to(REPO) else str(out)
    print(
        f"\nOn the GPU machine, with this checkout and {relative}/ copied to the same place in it, run from the "
        f"checkout's root:\n    bash tools/gpu_device.sh {relative} RESULTS_DIR"
    )


def _git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


if __name__ == "__main__":
    main()
