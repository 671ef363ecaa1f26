"""tools/gpu_payload.py: packing, cutting into checksummed parts, re-cutting; what gpu_device.sh reassembles."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from tools.gpu_payload import pack, place, resplit


def parts_of(out: Path, name: str = "payload") -> bytes:
    parts = sorted(out.glob(f"*/{name}.tar.xz.part-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return b"".join(p.read_bytes() for p in parts)


@pytest.mark.parametrize("word", [0, 4])
def test_pack_round_trips(tmp_path: Path, word: int) -> None:
    folder = tmp_path / "payload"
    (folder / "artifact").mkdir(parents=True)
    (folder / "artifact" / "model.onnx").write_bytes(os.urandom(5000) + bytes(3000))
    tar = pack(folder, tmp_path / "payload.tar.xz", 1, word=word)
    with tarfile.open(tar, "r:xz") as archive:
        member = archive.extractfile("payload/artifact/model.onnx")
        assert member is not None and member.read() == (folder / "artifact" / "model.onnx").read_bytes()


def test_parts_reassemble_and_recut(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    data = os.urandom(int(2.5 * 2**20))
    (tmp_path / "payload.tar.xz").write_bytes(data)
    folders = place(tmp_path / "payload.tar.xz", out, "payload", 1.0)
    assert [f.name for f in folders] == ["1", "2", "3"] and parts_of(out) == data
    assert (out / "3" / "payload.tar.xz.SHA256SUMS").read_text().count("\n") == 3  # every folder lists all parts
    resplit(out, 2.0)
    assert sorted(p.name for p in out.iterdir()) == ["1", "2"] and parts_of(out) == data
    damaged = out / "2" / "payload.tar.xz.part-02"
    damaged.write_bytes(b"x" + damaged.read_bytes()[1:])
    with pytest.raises(SystemExit, match="checksum mismatch"):
        resplit(out, 1.0)
    assert not (out / "payload.tar.xz").exists(), "nothing half-written is left behind"
