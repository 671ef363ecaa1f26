"""tools/fatbin.py: pruning a CUDA fatbin to one GPU architecture keeps exactly that architecture's cubins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools.fatbin import CONTAINER, ENTRY, MAGIC, containers, prune_section, section


def entry(arch: int, payload: bytes, kind: int = 2) -> bytes:
    """A 64-byte entry header (as nvcc writes it) and its payload padded to 8 bytes."""
    padded = payload + bytes(-len(payload) % 8)
    head = ENTRY.pack(kind, 0x101, 64, len(padded), 0, len(payload), 0, 0, arch)
    return head + bytes(64 - len(head)) + padded


def container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return CONTAINER.pack(MAGIC, 1, CONTAINER.size, len(body)) + body


def test_prune_keeps_only_wanted_cubins_at_unchanged_offsets() -> None:
    multi = container(entry(80, b"A" * 40), entry(90, b"B" * 33), entry(120, b"C" * 50))
    only90 = container(entry(90, b"D" * 16))
    only120 = container(entry(120, b"E" * 24))
    blob = bytearray(b"\x7fprefix!" + multi + only90 + only120 + bytes(8))
    start, size = 8, len(blob) - 8
    before = containers(blob, start, start + size)
    report = prune_section(blob, start, size, {90})
    after = containers(blob, start, start + size)
    assert [pos for pos, _ in after] == [pos for pos, _ in before], "containers must not move"
    assert [[e.arch for e in entries] for _, entries in after] == [[90], [90], [120]]
    assert after[0][1][0].raw == before[0][1][1].raw, "the kept cubin is byte-identical"
    assert after[2][1] == before[2][1], "a container without sm_90 is left as it was"
    assert (report.rewritten, report.untouched, report.kept, report.dropped) == (1, 1, {90: 2}, {80: 1, 120: 1})
    assert report.freed_bytes == (64 + 40) + (64 + 56)
    assert blob[:8] == b"\x7fprefix!" and len(blob) == 8 + size


def test_garbage_in_the_section_is_refused() -> None:
    blob = bytearray(container(entry(90, b"x" * 8)) + b"\x01junk\x00\x00\x00")
    with pytest.raises(ValueError, match="unexpected bytes"):
        containers(blob, 0, len(blob))


def test_section_lookup_on_a_real_elf() -> None:
    image = Path(sys.executable).resolve().read_bytes()
    if image[:4] != b"\x7fELF":
        pytest.skip("not an ELF platform")
    offset, size = section(image, ".text")
    assert 0 < offset < len(image) and 0 < size < len(image)
    with pytest.raises(ValueError, match=r"no \.nv_fatbin section"):
        section(image)
