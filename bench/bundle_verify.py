"""Benchmark: `sparkplane bundle verify` against parallel OpenSSL over the same files.

Builds (once, then reuses) a signed bundle of >= 4 GB: a few 1 GiB weight shards plus thousands
of small files, through the real `bundle build`. Then, in one run, alternates

    sparkplane bundle verify BUNDLE --trust KEY --json
    find BUNDLE -type f -print0 | xargs -0 -P$(nproc) -n N openssl dgst -sha256

(N = 8, 64 and 512 files per openssl process; the fastest is the bar) from a warm page cache,
so that both measure hashing, not the disk; prints each throughput, the ratio and sparkplane's
peak RSS. Run by hand, not by the test suite:

    .venv/bin/python bench/bundle_verify.py [--dir /var/tmp/sparkplane-bench] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPARKPLANE = Path(sys.executable).parent / "sparkplane"
SHARD_BYTES = 1 << 30


def make_sources(root: Path, shards: int, small_files: int) -> None:
    """Model shards and a tree of small files with incompressible content."""
    rng = random.Random(42)
    block = rng.randbytes(4 << 20)
    model = root / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"architectures": ["BenchModel"], "model_type": "bench"}')
    for index in range(1, shards + 1):
        with open(model / f"model-{index:05d}-of-{shards:05d}.safetensors", "wb") as handle:
            for offset in range(0, SHARD_BYTES, len(block)):
                # A per-block prefix keeps blocks distinct without generating 1 GiB of randomness.
                handle.write(
                    index.to_bytes(4, "little") + offset.to_bytes(8, "little") + block[12:]
                )
    small = root / "site"
    for index in range(small_files):
        folder = small / f"d{index // 250:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1 << 10, 96 << 10)
        start = rng.randrange(0, len(block) - size)
        (folder / f"f{index:05d}.bin").write_bytes(block[start : start + size])


def build(work: Path, shards: int, small_files: int) -> tuple[Path, Path]:
    bundle, key_dir = work / "bundle", work / "keys"
    if (bundle / "manifest.json").is_file():
        return bundle, key_dir / "bundle.pub"
    shutil.rmtree(work, ignore_errors=True)
    make_sources(work / "src", shards, small_files)
    spec = work / "src" / "bench.yaml"
    spec.write_text(
        "schema: 1\nname: bench\nversion: '1'\nplatform: {arch: x86_64, accelerator: cpu}\n"
        "components:\n"
        "  - {name: bench-model, role: model, source: model, served_model_name: bench}\n"
        "  - {name: site, role: files, source: site, dest: site}\n"
    )
    subprocess.run([SPARKPLANE, "keygen", "--out", key_dir], check=True, capture_output=True)
    started = time.monotonic()
    subprocess.run(
        [SPARKPLANE, "bundle", "build", spec, "--key", key_dir / "bundle.key", "--out", bundle],
        check=True,
    )
    print(f"built the bench bundle in {time.monotonic() - started:.1f} s")
    shutil.rmtree(work / "src")  # only the bundle is needed from here on
    return bundle, key_dir / "bundle.pub"


def timed(command: list[str], **kwargs: object) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS (KiB) of the direct child, stdout."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed with exit {process.returncode}")
    return elapsed, usage.ru_maxrss, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/sparkplane-bench"))
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--small-files", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bundle, pub = build(args.dir, args.shards, args.small_files)
    manifest = json.loads((bundle / "manifest.json").read_text())
    total = sum(entry["size"] for entry in manifest["files"])
    count = len(manifest["files"])
    cores = os.cpu_count() or 1
    openssl = f"find {bundle} -type f -print0 | xargs -0 -P{cores} -n BATCH openssl dgst -sha256"
    print(f"bundle: {count} files, {total / 1e9:.2f} GB; {cores} cores; {openssl}")
    timed(["sh", "-c", openssl.replace("BATCH", "64") + " > /dev/null"])  # warm the page cache
    ours, theirs, inner, rss = [], [], [], []
    for round_number in range(1, args.rounds + 1):
        wall, peak, output = timed(
            [str(SPARKPLANE), "bundle", "verify", str(bundle), "--trust", str(pub), "--json"]
        )
        report = json.loads(output)
        assert report["ok"], report["findings"][:5]
        ours.append(wall)
        inner.append(report["elapsed_s"])
        rss.append(peak)
        batches = {n: timed(["sh", "-c", openssl.replace("BATCH", str(n)) + " > /dev/null"])[0]
                   for n in (8, 64, 512)}  # fmt: skip
        batch, wall_ssl = min(batches.items(), key=lambda item: item[1])
        theirs.append(wall_ssl)
        print(
            f"round {round_number}: sparkplane {total / wall / 1e6:,.0f} MB/s "
            f"(verify alone {total / report['elapsed_s'] / 1e6:,.0f} MB/s), openssl "
            + ", ".join(f"-n {n}: {total / t / 1e6:,.0f}" for n, t in batches.items())
            + f" MB/s (best -n {batch}), peak RSS {peak / 1024:.0f} MiB"
        )
    best_ours, best_inner, best_theirs = min(ours), min(inner), min(theirs)
    print(
        f"best: sparkplane {total / best_ours / 1e6:,.0f} MB/s end to end, "
        f"{total / best_inner / 1e6:,.0f} MB/s inside verify; "
        f"parallel openssl {total / best_theirs / 1e6:,.0f} MB/s; "
        f"ratio {best_theirs / best_ours:.2f} end to end, {best_theirs / best_inner:.2f} inside; "
        f"peak RSS {max(rss) / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
