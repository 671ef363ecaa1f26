#!/usr/bin/env bash
# Wheels that `ray[data]` needs on a Python 3.12 x86_64 machine with no network whose image already holds
# numpy, pandas, pyarrow, fsspec, aiohttp, tqdm, click, filelock, msgpack, packaging, protobuf, pyyaml, requests,
# attrs, typing-extensions, onnxruntime and tokenizers (the lent GPU machine: /work/.library/device/KINDS.md).
# Beyond those, ray's Requires-Dist (core and the `data` extra) leaves only jsonschema and its three dependencies.
#
# Ray's own wheel is 76 MiB. It is rebuilt under the same name without what a Python-only Ray Data job never loads
# (ray/jars: the Java API, 31 MiB; rllib, serve, llm; the dashboard's web UI) and with LZMA compression, which
# pip reads like any zip: about 30 MiB, so it travels with the repository (25 MiB) in one 64 MiB carry.
# Rebuilding takes a few minutes of CPU (LZMA).
#
# usage: bash tools/ray_wheels.sh DIR        then, on the machine, from the repository root:
#   python3 -m pip install --no-index --find-links DIR 'ray[data]==2.60.0'
#   python3 -m studies.corpus scale --out OUT   (runs the checkout's runtime; no install of this project needed)
set -euo pipefail
DIR=${1:?usage: ray_wheels.sh DIR}
RAY_VERSION=${RAY_VERSION:-2.60.0}
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR"
FULL=$(mktemp -d)
trap 'rm -rf "$FULL"' EXIT

"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$FULL" \
  "ray==$RAY_VERSION" jsonschema jsonschema-specifications referencing rpds-py

for wheel in "$FULL"/*.whl; do
  case "$(basename "$wheel")" in
    ray-*) ;;
    *) cp "$wheel" "$DIR/" ;;
  esac
done

"$PYTHON" - "$FULL"/ray-*.whl "$DIR" <<'EOF'
import sys
import zipfile
from pathlib import Path

source, folder = Path(sys.argv[1]), Path(sys.argv[2])
DROP = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/", "ray/dashboard/client/build/")
target = folder / source.name
tmp = target.with_suffix(".tmp")
with zipfile.ZipFile(source) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_LZMA) as zout:
    for info in zin.infolist():
        if info.filename.startswith(DROP):
            continue
        data = zin.read(info)
        if info.filename.endswith(".dist-info/RECORD"):  # pip installs what RECORD lists; keep it truthful
            data = b"".join(line + b"\n" for line in data.splitlines() if not line.decode().startswith(DROP))
        entry = zipfile.ZipInfo(info.filename, info.date_time)
        entry.external_attr, entry.compress_type = info.external_attr, zipfile.ZIP_LZMA
        zout.writestr(entry, data)
tmp.replace(target)
print(f"{source.name}: {source.stat().st_size / 2**20:.1f} MiB -> {target.stat().st_size / 2**20:.1f} MiB")
EOF

ls -l "$DIR"
du -cb "$DIR"/*.whl | tail -1 | awk '{printf "total: %.1f MiB\n", $1 / 1048576}'
