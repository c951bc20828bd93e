#!/usr/bin/env bash
# encryption.sh: backup throughput of snap with and without encryption, next to restic
# (always encrypted), on the same data.
#
# What it measures
#   A source of SIZE_MB MiB, half incompressible (AES-CTR output) and half text that
#   compresses about 4:1 (base64 of random bytes), in 64 MiB files. Each tool backs it up
#   into a fresh repository RUNS times (a new repository each run, so all data is new;
#   the tools take turns within a run); the median wall time gives the throughput. snap runs unencrypted and with
#   `init --encrypt`; restic 0.14 with its defaults (encryption and compression auto).
#   Everything is read from the page cache (the source is read once before timing).
#   Per tool: wall time, CPU time (user + sys, both cores together) and peak RSS, from
#   `/usr/bin/time -f "%e %M %U %S"`. CPU time is the firmer figure on a noisy shared
#   machine (others' load stretches wall time, hardly our CPU seconds); wall is what users
#   see. Printed: medians per tool, the encrypted/plain ratios of the wall and CPU
#   medians, the per-run encrypted/plain ratios (wall and CPU), and encrypted snap/restic.
#
# How to run
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/encryption.sh
# Knobs: WORK (default /tmp/encryption-bench, wiped first), SNAP, RESTIC, SIZE_MB (1024),
#   RUNS (3). Needs ~4x SIZE_MB free in WORK.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/encryption-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
RESTIC=${RESTIC:-$(command -v restic)}
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
. "$HERE/benches/lib.sh"

rm -rf "$WORK"
mkdir -p "$WORK/src"
unset SNAP_REPO RESTIC_REPOSITORY SNAP_PASSWORD_FILE SNAP_KEY_FILE
export SNAP_PASSWORD=bench RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/cache-restic
n=$((SIZE_MB / 64))
for i in $(seq 1 "$n"); do
    if [ $((i % 2)) = 1 ]; then
        random_bytes $((64 << 20)) "$i" >"$WORK/src/r$i"
    else
        random_bytes $((48 << 20)) "$i" | base64 -w 76 >"$WORK/src/t$i"
    fi
done
cat "$WORK/src"/* >/dev/null
BYTES=$(bytes "$WORK/src")

# once NAME INIT... -- BACKUP...: a fresh repository, then one timed backup.
once() {
    local name=$1; shift
    local init=()
    while [ "$1" != -- ]; do init+=("$1"); shift; done; shift
    rm -rf "$WORK/repo"
    "${init[@]}" >/dev/null 2>&1
    /usr/bin/time -f "%e %M %U %S" -o "$WORK/t" "$@" >/dev/null 2>&1
    cat "$WORK/t" >>"$WORK/$name.times"
}
# The tools take turns within each run, so the machine's drift hits all alike.
for r in $(seq 1 "$RUNS"); do
    once snap-plain "$SNAP" --repo "$WORK/repo" init -- "$SNAP" --repo "$WORK/repo" backup -q "$WORK/src"
    once snap-encrypted "$SNAP" --repo "$WORK/repo" init --encrypt -- "$SNAP" --repo "$WORK/repo" backup -q "$WORK/src"
    once restic "$RESTIC" init --repo "$WORK/repo" -- "$RESTIC" --repo "$WORK/repo" backup -q "$WORK/src"
done

{
    echo "encryption.sh: $((BYTES >> 20)) MiB (half incompressible, half base64 text), median of $RUNS runs"
    echo "  $("$SNAP" --version), $("$RESTIC" version | cut -d' ' -f1-2)"
    printf '%-16s %8s %8s %10s %12s\n' tool "wall s" "CPU s" "MiB/s" "peak RSS MB"
    for t in snap-plain snap-encrypted restic; do
        s=$(col "$t" | cut -d' ' -f1 | median)
        c=$(col "$t" | cut -d' ' -f2 | median)
        m=$(col "$t" | cut -d' ' -f3 | median)
        eval "wall_${t//-/_}=$s cpu_${t//-/_}=$c"
        awk -v t="$t" -v s="$s" -v c="$c" -v m="$m" -v b="$BYTES" \
            'BEGIN { printf "%-16s %8.2f %8.2f %10.0f %12.0f\n", t, s, c, b / 1048576 / s, m / 1024 }'
    done
    echo "encrypted/plain, by medians: wall $(ratio "$wall_snap_encrypted" "$wall_snap_plain"), CPU $(ratio "$cpu_snap_encrypted" "$cpu_snap_plain")"
    # run r of one tool against run r of the other (they ran back to back)
    w=$(per_run snap-encrypted snap-plain 1) c=$(per_run snap-encrypted snap-plain 2)
    echo "encrypted/plain per run: wall $w (median $(tr ' ' '\n' <<<"$w" | median)); CPU $c (median $(tr ' ' '\n' <<<"$c" | median))"
    echo "snap encrypted/restic, by medians: wall $(ratio "$wall_snap_encrypted" "$wall_restic"), CPU $(ratio "$cpu_snap_encrypted" "$cpu_restic")"
} | tee "$WORK/summary.txt"
