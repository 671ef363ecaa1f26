"""Shrink a CUDA shared library for one GPU generation: keep only the cubins of the wanted SM architectures.

onnxruntime-gpu's libonnxruntime_providers_cuda.so is 284 MB, 219 MB of it the `.nv_fatbin` section: the same
kernels compiled for sm_75, 80, 86, 89, 90 and 120. A GPU loads only the cubin of its own architecture, so for an
H100/H200 (sm_90) everything else is dead weight when the library has to travel over a size-limited link.

Layout (NVIDIA's fatbinary format, as documented by reverse-engineering projects such as nvopen-tools'
fatbin/FORMAT_SPECIFICATION.md): the section is a run of containers, each a 16-byte header (magic 0xBA55ED50,
version 1, header size 16, payload size) followed by entries, each a header (kind, header size, padded payload size,
architecture, ...) and its payload. Pruning rewrites each container in place with only the wanted entries and a
smaller payload size, and zeroes the bytes it frees; every container keeps its offset, so the ELF relocations and the
host-side registration records that point at container starts stay valid. A container without any wanted entry is
left as it was (the GPU could not have used it either way). The file keeps its size; the zeroes compress to nothing.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0xBA55ED50
CONTAINER = struct.Struct("<IHHQ")  # magic, version, header size, payload size
ENTRY = struct.Struct("<HHIIIIIII")  # kind, ?, header size, padded payload size, ?, payload size, ?, minor, arch
SECTION = ".nv_fatbin"
NONZERO = re.compile(rb"[^\x00]")


@dataclass(frozen=True)
class Entry:
    """One cubin (or PTX) inside a container: its architecture and its bytes (header and payload)."""

    arch: int
    kind: int
    raw: bytes


@dataclass(frozen=True)
class Report:
    """What pruning did: containers seen, rewritten and left alone (no wanted entry), entries kept and dropped per
    architecture, bytes zeroed."""

    containers: int
    rewritten: int
    untouched: int
    kept: dict[int, int]
    dropped: dict[int, int]
    freed_bytes: int


def section(image: bytes, name: str = SECTION) -> tuple[int, int]:
    """File offset and size of an ELF64 little-endian section, by name."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", image, shoff + i * shentsize) for i in range(shnum)]
    strtab_offset = headers[shstrndx][4]
    for sh_name, _type, _flags, _addr, offset, size, *_ in headers:
        end = image.index(b"\0", strtab_offset + sh_name)
        if image[strtab_offset + sh_name : end].decode() == name:
            return offset, size
    raise ValueError(f"no {name} section")


def containers(blob: bytes | bytearray, start: int, end: int) -> list[tuple[int, list[Entry]]]:
    """Every container in ``blob[start:end]``: its offset and entries (raises on anything unexpected)."""
    found = []
    pos = start
    while pos < end:
        magic, version, header, size = CONTAINER.unpack_from(blob, pos) if pos + CONTAINER.size <= end else (0,) * 4
        if magic != MAGIC or version != 1 or header != CONTAINER.size or pos + CONTAINER.size + size > end:
            raise ValueError(f"unexpected bytes at offset {pos:#x}: magic {magic:#x}")
        stop = pos + CONTAINER.size + size
        entries = []
        at = pos + CONTAINER.size
        while at < stop:
            kind, _, head, padded, _, _, _, _, arch = ENTRY.unpack_from(blob, at)
            if head < 64 or at + head + padded > stop:
                raise ValueError(f"malformed fatbin entry at offset {at:#x}")
            entries.append(Entry(arch=arch, kind=kind, raw=bytes(blob[at : at + head + padded])))
            at += head + padded
        found.append((pos, entries))
        following = NONZERO.search(blob, stop, end)  # zero padding (or bytes freed by pruning) up to the next one
        pos = following.start() if following else end
    return found


def prune(path: Path, keep: set[int]) -> Report:
    """Rewrite the shared library ``path`` in place keeping only cubins for the architectures in ``keep``."""
    image = bytearray(path.read_bytes())
    offset, size = section(bytes(image))
    report = prune_section(image, offset, size, keep)
    path.write_bytes(bytes(image))
    return report


def prune_section(image: bytearray, offset: int, size: int, keep: set[int]) -> Report:
    """Prune the fatbin containers in ``image[offset:offset + size]`` in place (see the module docstring)."""
    found = containers(image, offset, offset + size)
    kept: dict[int, int] = {}
    dropped: dict[int, int] = {}
    expected = []
    rewritten = untouched = freed = 0
    for pos, entries in found:
        wanted = [e for e in entries if e.arch in keep]
        expected.append((pos, wanted or entries))
        if not wanted:
            untouched += 1
            continue
        for e in entries:
            counts = kept if e.arch in keep else dropped
            counts[e.arch] = counts.get(e.arch, 0) + 1
        if len(wanted) == len(entries):
            continue
        old_size = sum(len(e.raw) for e in entries)
        body = b"".join(e.raw for e in wanted)
        image[pos : pos + CONTAINER.size] = CONTAINER.pack(MAGIC, 1, CONTAINER.size, len(body))
        start = pos + CONTAINER.size
        image[start : start + old_size] = body + bytes(old_size - len(body))
        rewritten += 1
        freed += old_size - len(body)
    if containers(image, offset, offset + size) != expected:  # re-read what a loader will see
        raise AssertionError("pruned fatbin does not read back as intended")
    return Report(len(found), rewritten, untouched, kept, dropped, freed)
