"""Large exports are verified in several processes, one slice of the file each.

Each worker runs the same scan as the serial verifier, starting from the stored hash of the last
entry before its slice, but gives up at the first line that is not a perfectly linked entry or a
checkpoint. The parent then joins the slices (their seqs must meet) into the one ChainChecker, or,
if any worker gave up, returns None and the caller verifies serially to locate every problem.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from controlplane.audit.chain import LINE_START
from controlplane.audit.checker import ChainChecker
from controlplane.audit.checkpoint import Checkpoint
from controlplane.audit.scan import CONTENT_START, scan_lines

MIN_PARALLEL_BYTES = 32 << 20  # below this, process start-up costs more than it saves
SLICES_PER_WORKER = 2  # some slack when one worker's core is busier
LOOK_BACK = 1 << 16


class _GiveUp(Exception):
    """This slice is not pristine: the serial verifier must locate the problem."""


class _StrictChecker(ChainChecker):
    def entry(self, *args: object, **kwargs: object) -> None:
        raise _GiveUp

    def problem(self, *args: object, **kwargs: object) -> None:
        raise _GiveUp


@dataclass
class _Slice:
    hashes: bytes
    expected: int
    prev: bytes | None
    entries: int
    withheld: int
    checkpoints: list[tuple[Checkpoint, int | None]]
    lines: int


def _scan_slice(path: str, start: int, stop: int, base: int, prev: bytes) -> _Slice | None:
    checker = _StrictChecker(base, prev, {})
    counted = [0]
    with open(path, "rb", buffering=1 << 20) as handle:
        handle.seek(start)
        try:
            checkpoints = scan_lines(_read_until(handle, stop - start, counted), checker, 0)
        except _GiveUp:
            return None
    report = checker.report
    return _Slice(bytes(checker.hashes), checker.expected, checker.prev, report.entries,
                  report.entries_withheld, checkpoints, counted[0])  # fmt: skip


def _read_until(handle: BinaryIO, budget: int, counted: list[int]) -> Iterator[bytes]:
    """The lines of the next `budget` bytes; counts them in counted[0]."""
    for line in handle:
        counted[0] += 1
        yield line
        budget -= len(line)
        if budget <= 0:
            return


def _last_entry_before(handle: BinaryIO, offset: int) -> tuple[int, bytes] | None:
    """(seq, stored hash) of the last entry line that ends before `offset`."""
    start = max(0, offset - LOOK_BACK)
    handle.seek(start)
    for line in reversed(handle.read(offset - start).splitlines()[1:]):
        if line.startswith(LINE_START):
            return orjson.loads(line)["e"]["seq"], bytes.fromhex(line[6:70].decode())
    return None


def _boundaries(handle: BinaryIO, start: int, size: int, count: int) -> list[int]:
    cuts = [start]
    for index in range(1, count):
        handle.seek(start + (size - start) * index // count)
        handle.readline()
        cut = handle.tell()
        while handle.readline().startswith(CONTENT_START):  # it stays with its entry
            cut = handle.tell()
        if cuts[-1] < cut < size:
            cuts.append(cut)
    return [*cuts, size]


def _spare_cpus() -> int:
    """CPUs not busy right now: on a machine that is already saturated, more processes only
    add start-up and contention (measured: slower than one process at load 6 on 2 cores)."""
    cpus = os.cpu_count() or 1
    return min(cpus, max(1, round(cpus - os.getloadavg()[0])))


def parallel_scan(
    path: Path, start: int, checker: ChainChecker, workers: int | None = None
) -> list[tuple[Checkpoint, int | None]] | None:
    """Scan from byte `start` (after the header) into `checker`; None: scan serially instead."""
    workers = workers or _spare_cpus()
    size = path.stat().st_size
    if workers < 2 or size - start < MIN_PARALLEL_BYTES or checker.prev is None:
        return None
    with path.open("rb") as handle:
        cuts = _boundaries(handle, start, size, workers * SLICES_PER_WORKER)
        seeds: list[tuple[int, bytes]] = [(checker.expected, checker.prev)]
        for cut in cuts[1:-1]:
            found = _last_entry_before(handle, cut)
            if found is None:
                return None
            seeds.append((found[0] + 1, found[1]))
    # fork is cheap, but only safe while this process runs no other thread
    method = "fork" if threading.active_count() == 1 else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        jobs = [pool.submit(_scan_slice, str(path), cuts[i], cuts[i + 1], *seeds[i])
                for i in range(len(seeds))]  # fmt: skip
        slices = [job.result() for job in jobs]
    return _join(slices, seeds, checker)


def _join(
    slices: list[_Slice | None], seeds: list[tuple[int, bytes]], checker: ChainChecker
) -> list[tuple[Checkpoint, int | None]] | None:
    for index, part in enumerate(slices):
        following = seeds[index + 1][0] if index + 1 < len(seeds) else None
        if part is None or (following is not None and part.expected != following):
            return None
    checkpoints: list[tuple[Checkpoint, int | None]] = []
    line = 2  # the header is line 1
    for part in slices:
        assert part is not None
        checker.hashes += part.hashes
        checker.report.entries += part.entries
        checker.report.entries_valid += part.entries
        checker.report.entries_withheld += part.withheld
        checkpoints += [(cp, line + (number or 0)) for cp, number in part.checkpoints]
        line += part.lines
        checker.expected, checker.prev = part.expected, part.prev
    return checkpoints
