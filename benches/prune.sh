#!/usr/bin/env bash
# prune.sh: time and peak memory of pruning a month of daily snapshots, snap next to
# restic.
#
# What it measures
#   A 1 GiB source of FILES files (incompressible, 1 GiB / FILES each) is backed up
#   once a day for DAYS days into a snap and a restic repository; each day CHURN files
#   are replaced with new content (the same files in both tools). Then
#     snap forget --keep-last KEEP --prune --max-unused 5%
#     restic forget --keep-last KEEP --prune            (restic's default 5 % too)
#   run under /usr/bin/time: wall seconds and peak RSS, and the repository size before
#   and after (du -sb). snap's check --read-data and restic check --read-data then run
#   once each, likewise timed.
#
# How to run
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/prune.sh
# Knobs (environment): WORK (default /tmp/prune-bench, wiped first), SNAP, RESTIC,
#   FILES (512), DAYS (30), CHURN (15 files a day), KEEP (7).
#   Needs ~4 GB free in WORK; takes ~5 minutes on 2 cores.
# Output: a table on stdout, also in $WORK/summary.txt.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/prune-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
RESTIC=${RESTIC:-$(command -v restic)}
FILES=${FILES:-512}
DAYS=${DAYS:-30}
CHURN=${CHURN:-15}
KEEP=${KEEP:-7}

. "$HERE/benches/lib.sh"
# timed NAME CMD...: runs CMD, appends "NAME wall_s peak_rss_kb" to $WORK/times.
timed() {
    local name=$1; shift
    /usr/bin/time -f "$name %e %M" -a -o "$WORK/times" "$@" >>"$WORK/$name.log" 2>&1
}

rm -rf "$WORK"
mkdir -p "$WORK/src"
unset SNAP_REPO RESTIC_REPOSITORY
export RESTIC_PASSWORD=x RESTIC_CACHE_DIR=$WORK/cache-restic
SIZE=$(( (1 << 30) / FILES ))
# fill FILE SEED: SIZE incompressible bytes, different for every seed.
fill() { random_bytes "$SIZE" "$2" >"$1"; }

log "source: $FILES files of $SIZE bytes"
for i in $(seq 1 "$FILES"); do fill "$WORK/src/f$i" "init-$i"; done
"$SNAP" --repo "$WORK/repo-snap" init >/dev/null
"$RESTIC" init --repo "$WORK/repo-restic" >/dev/null

for day in $(seq 1 "$DAYS"); do
    if [ "$day" -gt 1 ]; then
        for k in $(seq 1 "$CHURN"); do
            i=$(( (day * 7919 + k * 104729) % FILES + 1 ))
            fill "$WORK/src/f$i" "day$day-$k"
        done
    fi
    "$SNAP" --repo "$WORK/repo-snap" backup -q "$WORK/src" >>"$WORK/snap-backup.log"
    "$RESTIC" --repo "$WORK/repo-restic" backup -q "$WORK/src" >>"$WORK/restic-backup.log"
    log "day $day: snap $(bytes "$WORK/repo-snap") B, restic $(bytes "$WORK/repo-restic") B"
done

SB=$(bytes "$WORK/repo-snap"); RB=$(bytes "$WORK/repo-restic")
sync
log "forget --keep-last $KEEP --prune"
timed snap-prune "$SNAP" --repo "$WORK/repo-snap" forget --keep-last "$KEEP" --prune --max-unused 5%
timed restic-prune "$RESTIC" --repo "$WORK/repo-restic" forget --keep-last "$KEEP" --prune
SA=$(bytes "$WORK/repo-snap"); RA=$(bytes "$WORK/repo-restic")
log "check --read-data"
timed snap-check "$SNAP" --repo "$WORK/repo-snap" check --read-data
timed restic-check "$RESTIC" --repo "$WORK/repo-restic" check --read-data

{
    echo "prune.sh: $FILES files x $SIZE B, $DAYS daily backups, $CHURN files replaced a day, forget --keep-last $KEEP --prune"
    echo "  $("$SNAP" --version), $("$RESTIC" version | cut -d' ' -f1-2)"
    awk -v sb="$SB" -v sa="$SA" -v rb="$RB" -v ra="$RA" '
        { t[$1] = $2; m[$1] = $3 }
        END {
            printf "%-28s %12s %12s %8s\n", "", "snap", "restic", "ratio"
            printf "%-28s %12.1f %12.1f %8.2f\n", "forget --prune wall s", t["snap-prune"], t["restic-prune"], t["snap-prune"] / t["restic-prune"]
            printf "%-28s %12.0f %12.0f %8.2f\n", "forget --prune peak RSS MB", m["snap-prune"] / 1024, m["restic-prune"] / 1024, m["snap-prune"] / m["restic-prune"]
            printf "%-28s %12.1f %12.1f %8.2f\n", "check --read-data wall s", t["snap-check"], t["restic-check"], t["snap-check"] / t["restic-check"]
            printf "%-28s %12.0f %12.0f %8.2f\n", "check --read-data peak MB", m["snap-check"] / 1024, m["restic-check"] / 1024, m["snap-check"] / m["restic-check"]
            printf "%-28s %12.0f %12.0f\n", "repository MB before", sb / 1048576, rb / 1048576
            printf "%-28s %12.0f %12.0f\n", "repository MB after", sa / 1048576, ra / 1048576
        }' "$WORK/times"
} | tee "$WORK/summary.txt"
