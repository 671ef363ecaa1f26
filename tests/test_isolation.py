"""The runtime never pulls in torch, transformers or optimum, even indirectly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
import runtime
vec = runtime.load().encode(["hello"])
HEAVY = {"torch", "transformers", "optimum", "sentence_transformers"}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print(json.dumps({"shape": list(vec.shape), "heavy": heavy, "runtime": runtime.__file__}))
"""


def test_import_and_encode_leave_torch_out(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    # Run from an unrelated folder; when the package is installed it is found in site-packages, else via PYTHONPATH.
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, 384]
    assert result["heavy"] == []
