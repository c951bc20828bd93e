#!/usr/bin/env python3
"""zstd_dict.py: would a trained zstd dictionary shrink a dump's chunks?

Cuts two dumps into pieces near the dump profile's 16 KiB mean (at the first line end
past a length drawn from 4-28 KiB), then compresses each piece of the second alone: at
levels 3, 6, 9 and 19 without a dictionary, the whole second dump as one stream, and
with dictionaries of 64, 112 and 512 KiB trained on 4,000 pieces of the first.

    pip install zstandard
    python3 benches/zstd_dict.py TRAIN_DUMP TEST_DUMP

Results: benches/results/history-20261204.md (last section).
"""
import random, sys, time, zstandard as zs
def chunks(path, seed):
    data = open(path, "rb").read()
    rng = random.Random(seed); out = []; i = 0
    while i < len(data):
        t = i + rng.randint(4096, 28672)
        j = data.find(b"\n", t)
        j = len(data) if j < 0 else j + 1
        out.append(data[i:j]); i = j
    return out
train = chunks(sys.argv[1], 1)
test = chunks(sys.argv[2], 2)
raw = sum(map(len, test))
print("test: %d chunks, %.1f MB raw" % (len(test), raw / 1e6))
for level in (3, 6, 9, 19):
    c = zs.ZstdCompressor(level=level)
    t = time.time(); n = sum(len(c.compress(x)) for x in test); dt = time.time() - t
    print("level %2d, no dict: %.1f MB (%.2f%%), %.0f MB/s" % (level, n / 1e6, 100 * n / raw, raw / 1e6 / dt))
whole = len(zs.ZstdCompressor(level=3).compress(b"".join(test)))
print("level  3, whole stream: %.1f MB" % (whole / 1e6))
for size in (64 << 10, 112 << 10, 512 << 10):
    sample = random.Random(3).sample(train, min(len(train), 4000))
    t = time.time(); d = zs.train_dictionary(size, sample, level=3); tt = time.time() - t
    for level in (3, 6):
        c = zs.ZstdCompressor(level=level, dict_data=d)
        t = time.time(); n = sum(len(c.compress(x)) for x in test); dt = time.time() - t
        print("dict %3d KiB (trained in %.1f s), level %d: %.1f MB (%.2f%%), %.0f MB/s" % (size >> 10, tt, level, n / 1e6, 100 * n / raw, raw / 1e6 / dt))
