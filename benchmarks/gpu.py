"""GPU benchmark: this runtime's fp16 graph on onnxruntime's CUDAExecutionProvider vs PyTorch fp16
(sentence-transformers, ``model.half()``), at batch 1, 32, 128 and 512 on STS-B dev and on 200-256-token passages,
with single-text latency, accuracy (STS-B dev spearman, cosine to the PyTorch fp32 embeddings) and GPU memory.

    python -m benchmarks.gpu --checkpoint DIR --artifact DIR --out DIR [--reference dev_fp32.npy] [--device cpu --quick]

Each system runs in its own process (its own CUDA context), so GPU memory is the device-wide use that process added
(NVML), the same measure for both. Writes ``gpu.json``, ``gpu.md`` and, with matplotlib, ``gpu.png`` into ``--out``;
the goals of issue 14 (>= 1.2x PyTorch fp16 throughput at batch >= 128, p50 latency at batch 1 below PyTorch's) are
judged in all three. ``--device cpu --quick`` is the smoke mode for machines without a GPU (runtime fp16 graph on the
CPU provider, PyTorch fp32 on the CPU, a few texts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = (1, 32, 128, 512)
GOAL_BATCHES = (128, 512)
GOAL_RATIO = 1.2
LATENCY_CALLS = 500
LONG_PASSAGES = 256
B1_TEXTS = 300  # batch 1 runs one text per call: a subset keeps it short
MIN_PASS_SECONDS = 1.0
MAX_PASSES = 5
WORKER_TIMEOUT_S = 300
SYSTEMS = ("runtime", "pytorch")
Embed = Callable[[list[str], int], np.ndarray]


# --- worker side: one system, one process -------------------------------------------------------------------------


def device_memory_mib() -> float | None:
    """Memory in use on GPU 0, device-wide (NVML, else nvidia-smi); None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        used = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used
        return float(used) / 2**20
    except Exception:  # no NVML bindings or no driver: try the CLI
        pass
    used = nvidia_smi("memory.used", "nounits")
    try:
        return float(used[0]) if used else None
    except ValueError:
        return None


def nvidia_smi(query: str, *formats: str) -> list[str] | None:
    """GPU 0's comma-separated answer to ``nvidia-smi --query-gpu=QUERY``; None without nvidia-smi or a GPU."""
    options = ",".join(("csv", "noheader", *formats))
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", f"--format={options}", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [field.strip() for field in done.stdout.strip().splitlines()[0].split(",")]


def load_runtime(args: argparse.Namespace) -> tuple[Embed, dict[str, Any]]:
    """The runtime's fp16 graph on ``args.device``. On CUDA a child process first tries it without torch (the CUDA
    libraries found by the runtime's own preload); if that fails, this process imports torch first, whose CUDA
    libraries onnxruntime-gpu can share, and the report says why."""
    import runtime

    info: dict[str, Any] = {"cuda_without_torch": None}
    if args.device == "cuda":
        probe = "import runtime, sys; runtime.load(sys.argv[1], provider='cuda', precision='fp16')"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", probe, str(args.artifact)], capture_output=True, text=True, timeout=120, check=False
        )
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        info["cuda_without_torch"] = "ok" if done.returncode == 0 else "failed: " + " | ".join(lines[-3:])
        info["probe_s"] = time.perf_counter() - started
        if done.returncode != 0:
            import torch  # noqa: F401  (loads the CUDA/cuDNN libraries onnxruntime-gpu needs)
    encoder = runtime.load(args.artifact, provider=args.device, precision="fp16", backend="onnxruntime")
    info["onnxruntime_build"] = runtime.session.onnxruntime_build()
    info["session_providers"] = encoder.info["providers"]  # what the session really runs on
    info["precision"] = encoder.precision.value
    info["graph"] = str(encoder.folder / encoder.precision.file_name)

    def embed(texts: list[str], batch: int) -> np.ndarray:
        return encoder.encode(texts, batch_size=batch)

    return embed, info


def load_pytorch(args: argparse.Namespace) -> tuple[Embed, dict[str, Any]]:
    """sentence-transformers from the checkpoint; fp16 on CUDA, fp32 on the CPU."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(args.checkpoint), device=args.device)
    if args.device == "cuda":
        model.half()
    else:
        model.float()  # the checkpoint may be stored in fp16 (transformers loads the stored dtype)
    info = {
        "torch": torch.__version__,
        "dtype": str(next(model.parameters()).dtype),
        "attention": getattr(model[0].auto_model.config, "_attn_implementation", None),
    }

    def embed(texts: list[str], batch: int) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch, convert_to_numpy=True), dtype=np.float32)

    return embed, info


def best_throughput(embed: Embed, texts: list[str], batch: int, quick: bool) -> dict[str, float]:
    """Texts per second at ``batch``: passes (each after its own warm-up) until MIN_PASS_SECONDS are spent or
    MAX_PASSES are done; the best and the median pass."""
    from benchmarks.measure import throughput

    rates, spent = [], 0.0
    while len(rates) < (1 if quick else MAX_PASSES):
        run = throughput(embed, texts, batch)
        rates.append(run.sentences_per_s)
        spent += run.seconds
        if len(rates) >= 2 and spent >= MIN_PASS_SECONDS:
            break
    return {"best": max(rates), "median": float(np.median(rates)), "passes": len(rates)}


def accuracy(embed: Embed, dev: list[str], gold: np.ndarray, reference: np.ndarray | None) -> dict[str, float]:
    """STS-B dev spearman (batch 128), and cosine to the PyTorch fp32 embeddings when given."""
    from benchmarks.measure import cosine_rows
    from export.data import score_stacked

    emb = embed(dev, 128)
    result = {"dev_spearman": score_stacked(emb, gold).spearman}
    if reference is not None:
        cosine = cosine_rows(emb, reference)
        result.update(min_cosine_to_fp32=cosine["min"], mean_cosine_to_fp32=cosine["mean"])
    return result


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one system in this process and return its results."""
    from benchmarks.measure import latency_ms

    before = device_memory_mib() if args.device == "cuda" else None
    dev, long_texts, gold, rows = workloads(args)
    start = time.perf_counter()
    embed, info = (load_runtime if args.worker == "runtime" else load_pytorch)(args)
    embed(dev[:8], 8)
    load_s = time.perf_counter() - start - info.get("probe_s", 0.0)  # model load and first batch
    batches = (1, 32) if args.quick else BATCHES
    result: dict[str, Any] = {"system": args.worker, "info": info, "load_s": load_s}
    result["dev_sent_per_s"] = {
        b: best_throughput(embed, dev if b > 1 else dev[:B1_TEXTS], b, args.quick) for b in batches
    }
    result["long_sent_per_s"] = {b: best_throughput(embed, long_texts, b, args.quick) for b in batches if b > 1}
    result["latency_ms"] = latency_ms(embed, dev, 20 if args.quick else LATENCY_CALLS)
    reference = np.load(args.reference)[rows] if args.reference else None
    result["accuracy"] = accuracy(embed, dev, gold, reference)
    if args.device == "cuda":
        after = device_memory_mib()
        result["gpu_memory_mib"] = None if before is None or after is None else after - before
        if args.worker == "pytorch":
            import torch

            result["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            result["torch_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return result


def workloads(args: argparse.Namespace) -> tuple[list[str], list[str], np.ndarray, list[int]]:
    """STS-B dev sentences (s1 of every pair, then s2), the long passages, the gold scores, and which rows of the
    full 3,000-sentence reference the dev sentences are."""
    from benchmarks.config import FULL
    from benchmarks.workloads import counter, long_passages
    from export.data import gold_scores, pair_texts, read_sts

    everything = read_sts("dev")
    pairs = everything[:32] if args.quick else everything
    dev = pair_texts(pairs)
    rows = list(range(len(pairs))) + [len(everything) + i for i in range(len(pairs))]
    count = 32 if args.quick else LONG_PASSAGES
    long_texts = long_passages(counter(args.artifact), count, FULL.long_min_tokens, FULL.long_max_tokens)
    return dev, long_texts, gold_scores(pairs), rows


# --- parent side: spawn the workers, judge the goals, write the report ----------------------------------------------


def spawn(args: argparse.Namespace, system: str, folder: Path) -> dict[str, Any]:
    """Run one system's worker process; a failure is recorded (with the end of its stderr), not raised."""
    result_path = folder / f"{system}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.gpu",
        *_forwarded(args),
        "--worker",
        system,
        "--result",
        str(result_path),
    ]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.worker_timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"system": system, "status": "failed", "reason": f"timed out after {args.worker_timeout} s"}
    sys.stderr.write(done.stderr)
    if done.returncode != 0 or not result_path.is_file():
        tail = [line for line in done.stderr.splitlines() if line.strip()][-5:]
        return {"system": system, "status": "failed", "reason": f"exit {done.returncode}: " + " | ".join(tail)}
    result: dict[str, Any] = json.loads(result_path.read_text())
    result.update(status="ok", wall_s=time.perf_counter() - started)
    return result


def _forwarded(args: argparse.Namespace) -> list[str]:
    forwarded = [
        "--checkpoint",
        str(args.checkpoint),
        "--artifact",
        str(args.artifact),
        "--out",
        str(args.out),
        "--device",
        args.device,
    ]
    if args.reference:
        forwarded += ["--reference", str(args.reference)]
    return forwarded + (["--quick"] if args.quick else [])


def goals(rt: dict[str, Any], pt: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's goals, each with the measured figures and whether it is met."""
    checks = []
    for workload in ("dev_sent_per_s", "long_sent_per_s"):
        for b in GOAL_BATCHES:
            mine, theirs = rt[workload].get(str(b)), pt[workload].get(str(b))
            if mine is None or theirs is None:
                continue
            ratio = mine["best"] / theirs["best"]
            checks.append(
                {
                    "goal": f"{workload.split('_')[0]} throughput batch {b} >= {GOAL_RATIO}x PyTorch",
                    "runtime": mine["best"],
                    "pytorch": theirs["best"],
                    "ratio": ratio,
                    "met": ratio >= GOAL_RATIO,
                }
            )
    mine, theirs = rt["latency_ms"]["p50"], pt["latency_ms"]["p50"]
    checks.append(
        {
            "goal": "p50 latency batch 1 below PyTorch's",
            "runtime": mine,
            "pytorch": theirs,
            "ratio": mine / theirs,
            "met": mine < theirs,
        }
    )
    return checks


def environment(device: str) -> dict[str, Any]:
    """GPU, driver, CPU and library versions of this machine."""
    env: dict[str, Any] = {"python": platform.python_version(), "cpu": _cpu_model(), "cores": os.cpu_count()}
    for name in ("onnxruntime-gpu", "onnxruntime", "torch", "sentence-transformers", "transformers", "numpy"):
        try:
            env[name] = version(name)
        except PackageNotFoundError:
            env[name] = None
    env["gpu"] = env["driver"] = None
    answer = nvidia_smi("name,driver_version,memory.total") if device == "cuda" else None
    if answer and len(answer) == 3:
        env["gpu"], env["driver"], env["gpu_memory_total"] = answer
    return env


def _cpu_model() -> str:
    from benchmarks.machine import cpu_model

    return cpu_model()


def markdown(report: dict[str, Any]) -> str:
    env, results = report["environment"], {r["system"]: r for r in report["results"]}
    rt, pt = results["runtime"], results["pytorch"]
    lines = [
        f"# {report['title']}",
        "",
        f"GPU: **{env['gpu'] or 'none (CPU smoke run)'}** (driver {env['driver']}), CPU {env['cpu']}, "
        f"Python {env['python']}, {report['created']}.",
    ]
    for r in (rt, pt):
        if r.get("status") != "ok":
            lines.append(f"- {r['system']}: **{r.get('status')}**: {r.get('reason')}")
    if rt.get("status") != "ok" or pt.get("status") != "ok":
        return "\n".join(lines) + "\n"
    info = rt["info"]
    lines += [
        f"- runtime: {info['onnxruntime_build']}, session providers {info['session_providers']}, "
        f"{info['precision']} graph; CUDA libraries without torch in the process: {info['cuda_without_torch']}",
        f"- PyTorch: torch {pt['info']['torch']}, sentence-transformers {env['sentence-transformers']}, "
        f"{pt['info']['dtype']}, attention {pt['info']['attention']}",
        "",
        f"| figure | {report['labels']['runtime']} | {report['labels']['pytorch']} | ratio |",
        "|---|---|---|---|",
    ]
    for key, name in (("dev_sent_per_s", "STS-B dev, texts/s"), ("long_sent_per_s", "200-256-token passages, texts/s")):
        for b, v in rt[key].items():
            other = pt[key][b]["best"]
            lines.append(f"| {name}, batch {b} | {v['best']:,.0f} | {other:,.0f} | {v['best'] / other:.2f}x |")
    for q in ("p50", "p99"):
        mine, theirs = rt["latency_ms"][q], pt["latency_ms"][q]
        lines.append(f"| latency {q}, batch 1, ms | {mine:.2f} | {theirs:.2f} | {theirs / mine:.2f}x faster |")
    for key, name in (
        ("dev_spearman", "STS-B dev spearman"),
        ("min_cosine_to_fp32", "min cosine to PyTorch fp32"),
        ("mean_cosine_to_fp32", "mean cosine to PyTorch fp32"),
    ):
        if key in rt["accuracy"] and key in pt["accuracy"]:
            lines.append(f"| {name} | {rt['accuracy'][key]:.6f} | {pt['accuracy'][key]:.6f} | |")
    if rt.get("gpu_memory_mib") is not None and pt.get("gpu_memory_mib") is not None:
        lines.append(
            f"| GPU memory added by the process, MiB | {rt['gpu_memory_mib']:,.0f} | {pt['gpu_memory_mib']:,.0f} | "
            f"{rt['gpu_memory_mib'] / pt['gpu_memory_mib']:.2f}x |"
        )
    lines.append(f"| model load + first batch, s | {rt['load_s']:.1f} | {pt['load_s']:.1f} | |")
    lines += ["", "| goal | runtime | PyTorch | ratio | met |", "|---|---|---|---|---|"]
    for g in report["goals"]:
        lines.append(
            f"| {g['goal']} | {g['runtime']:,.2f} | {g['pytorch']:,.2f} | {g['ratio']:.2f} | "
            f"{'yes' if g['met'] else '**no**'} |"
        )
    lines += [
        "",
        "Throughput is the best of up to 5 passes over the set (each after a warm-up batch); latency is "
        f"{LATENCY_CALLS} single-text calls. The runtime caps one CUDA run at 32,768 padded tokens, so its "
        "batch 512 on 256-token passages runs as 4 runs of 128.",
    ]
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> Path | None:
    """Throughput by batch size (dev, long) and latency, both systems; None without matplotlib or results."""
    try:
        import matplotlib
    except ImportError:
        return None
    results = {r["system"]: r for r in report["results"] if r.get("status") == "ok"}
    if set(results) != set(SYSTEMS):
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, title in ((axes[0], "dev_sent_per_s", "STS-B dev"), (axes[1], "long_sent_per_s", "passages")):
        for system in SYSTEMS:
            series = results[system][key]
            batches = [int(b) for b in series]
            ax.plot(batches, [series[str(b)]["best"] for b in batches], marker="o", label=report["labels"][system])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("texts / s (higher is better)")
        ax.set_title(f"Throughput, {title}")
        ax.legend(fontsize=8)
    x = np.arange(2)
    for i, system in enumerate(SYSTEMS):
        lat = results[system]["latency_ms"]
        axes[2].bar(x + (i - 0.5) * 0.4, [lat["p50"], lat["p99"]], 0.4, label=report["labels"][system])
    axes[2].set_xticks(x, ["p50", "p99"])
    axes[2].set_ylabel("ms per single text (lower is better)")
    axes[2].set_title("Latency, batch 1")
    axes[2].legend(fontsize=8)
    fig.suptitle(report["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="fine-tuned sentence-transformers folder")
    parser.add_argument("--artifact", type=Path, required=True, help="artifact folder holding model.fp16.onnx")
    parser.add_argument("--reference", type=Path, help="PyTorch fp32 embeddings of the 3,000 dev sentences (.npy)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="a few sentences: smoke test only")
    parser.add_argument("--worker-timeout", type=int, default=WORKER_TIMEOUT_S, help="seconds per system")
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        args.result.write_text(json.dumps(worker(args), indent=1) + "\n")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(args.device)
    results = [spawn(args, system, args.out) for system in SYSTEMS]  # runtime first, then PyTorch
    for system in SYSTEMS:
        (args.out / f"{system}.json").unlink(missing_ok=True)
    where = env["gpu"] or "CPU (smoke run)"
    provider = "CUDAExecutionProvider" if args.device == "cuda" else "CPUExecutionProvider"
    labels = {
        "runtime": f"runtime fp16 ({provider})",
        "pytorch": "PyTorch fp16 (sentence-transformers)" if args.device == "cuda" else "PyTorch fp32 (CPU)",
    }
    ok = {r["system"]: r for r in results if r.get("status") == "ok"}
    report = {
        "title": f"{labels['runtime']} vs {labels['pytorch']} on {where}",
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": args.device,
        "quick": args.quick,
        "labels": labels,
        "environment": env,
        "results": results,
        "goals": goals(ok["runtime"], ok["pytorch"]) if len(ok) == 2 else [],
    }
    if len(ok) == 2:
        report["all_goals_met"] = all(g["met"] for g in report["goals"])
    (args.out / "gpu.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "gpu.md").write_text(text)
    chart(report, args.out / "gpu.png")
    print(text)
    if len(ok) != 2:
        raise SystemExit("a system failed: see gpu.md")


if __name__ == "__main__":
    main()
