#!/usr/bin/env python3
"""solid.py: how much smaller would the file tree's blobs be with other compression?

The repository-size goal of issue 31 (0.9x the smallest peer's) meets a file tree of
real /usr files, which every tool compresses with zstd one blob at a time. This takes
the same files as ../shared/bench (its fsgen.py picks them: the same seeded shuffle,
the first TARGET_MB), in tree order, and sums the stored size:
  - each blob alone (files whole, those over 1 MiB in 1 MiB pieces, as the files
    profile's ~1 MiB chunks), at zstd levels 3 (snap's), 6 and 9;
  - "solid": files under GROUP bytes packed together in tree order into groups of at
    most GROUP bytes, each group compressed as one frame (what no peer does; a
    restore of one file would decompress its group), at level 3, and at 9 for the
    largest groups.
A blob that would grow is counted raw, as snap stores it.

    pip install zstandard
    python3 benches/solid.py [TARGET_MB, default 1024]

Results: benches/results/compression-20261205.md.
"""
import os, sys, time
import zstandard as zs

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench", "lib"))
import fsgen  # noqa: E402

target = int(sys.argv[1] if len(sys.argv) > 1 else 1024) << 20
files, total = [], 0
for path, size in fsgen.candidates():
    if total >= target:
        break
    files.append((fsgen.rel_name(path), path, size))
    total += size
files.sort()
print("%d files, %.1f MB" % (len(files), total / 1e6))


def pieces(data):
    return [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)] or [data]


def stored(c, b):
    return min(len(c.compress(b)), len(b))


def report(what, n, t):
    print("%-34s %7.1f MB  %5.1f %%  %4.0f MB/s" % (what, n / 1e6, 100 * n / total, total / 1e6 / t))


for level in (3, 6, 9):
    c = zs.ZstdCompressor(level=level)
    t = time.time()
    n = sum(stored(c, b) for _, p, _ in files for b in pieces(open(p, "rb").read()))
    report("each blob alone, level %d" % level, n, time.time() - t)
for group, level in ((128 << 10, 3), (512 << 10, 3), (2 << 20, 3), (2 << 20, 9)):
    c = zs.ZstdCompressor(level=level)
    t, n, buf, held = time.time(), 0, [], 0
    for _, p, size in files:
        data = open(p, "rb").read()
        if size >= group:
            n += sum(stored(c, b) for b in pieces(data))
            continue
        if held + size > group:
            n += stored(c, b"".join(buf))
            buf, held = [], 0
        buf.append(data)
        held += size
    n += stored(c, b"".join(buf)) if buf else 0
    report("solid groups of %d KiB, level %d" % (group >> 10, level), n, time.time() - t)
