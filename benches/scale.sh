#!/usr/bin/env bash
# scale.sh: snap at scale: a million small files, a 20 GiB stream, a hundred snapshots
# on a repository of over a million chunks; peak memory first, times beside restic.
#
# What it measures (each step under /usr/bin/time: wall seconds and peak RSS)
#   files   FILES small files (default 1,000,000 of 40-300 bytes, 1000 per directory):
#           first backup, no-op backup and restore, by snap, restic and bupstash.
#   stream  `snap backup --command 'seq 1 N'`: STREAM_GB GiB (default 20) of text that
#           never repeats (so every chunk is new) but compresses well (so the repository
#           stays a few GB), chunked with the dump profile: ~1.3M chunks.
#   history SNAPSHOTS-1 more snapshots (default 100 in all) into the stream's repository,
#           each of a 2,000-file tree (32 MiB) with 1 % of files rewritten and a 147 MiB dump
#           with 1 % of its lines changed; at snapshots 2, 10, 50 and 100: `list`,
#           `ls latest`, a single-file restore and a no-op backup, with the repository
#           size and the index (cache) size.
#
# How to run
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/scale.sh
# Knobs: WORK (default /tmp/scale-bench, wiped first), SNAP, RESTIC, BUPSTASH, FILES (1000000),
#   STREAM_GB (20), SNAPSHOTS (100), PARTS ("files stream history"), KEEP (0; 1 keeps
#   WORK, so PARTS=history continues the stream's repository).
#   Needs ~15 GB free in WORK (a million files take 4 KiB each, three times over); takes
#   30-60 minutes on 2 cores.
# Output: tables on stdout, also in $WORK/summary.txt.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/scale-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
RESTIC=${RESTIC:-$(command -v restic)}
# bupstash (../shared/bench/setup.sh installs it); the files part runs it when found.
BUPSTASH=${BUPSTASH:-$(command -v bupstash || echo "$HERE/../shared/bench/.tools/bin/bupstash")}
FILES=${FILES:-1000000}
STREAM_GB=${STREAM_GB:-20}
SNAPSHOTS=${SNAPSHOTS:-100}
PARTS=${PARTS:-files stream history}
. "$HERE/benches/lib.sh"

# KEEP=1 resumes in an existing WORK (e.g. PARTS=history after the stream).
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
mkdir -p "$WORK"
unset SNAP_REPO SNAP_PASSWORD SNAP_PASSWORD_FILE RESTIC_REPOSITORY
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic-cache SNAP_CACHE_DIR=$WORK/snap-cache
SUMMARY=$WORK/summary.txt
[ "${KEEP:-0}" = 1 ] || : >"$SUMMARY"
out() { printf "$@" | tee -a "$SUMMARY"; }

# timed NAME CMD...: runs CMD under /usr/bin/time, prints a row: wall s, peak RSS MiB.
timed() {
    local name=$1; shift
    /usr/bin/time -f "%e %M" -o "$WORK/t" "$@" >"$WORK/last.out" 2>"$WORK/last.err" || {
        log "$name failed:"; tail -5 "$WORK/last.err" >&2; return 1; }
    read -r wall rss <"$WORK/t"
    out '%-44s %9.2f %9.0f\n' "$name" "$wall" "$((rss / 1024))"
}
header() { out '\n%s\n%-44s %9s %9s\n' "$1" step "wall s" "RSS MiB"; }

if [[ " $PARTS " == *" files "* ]]; then
    log "files: writing $FILES small files"
    python3 - "$WORK/tree" "$FILES" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i % 1000:03d}.txt"), "w") as f:
        f.write(f"file {i} " + "x" * rnd.randrange(30, 290) + "\n")
PY
    sync
    header "$FILES files of 40-300 bytes ($(bytes "$WORK/tree") bytes)"
    "$SNAP" --repo "$WORK/snap-files" init >/dev/null
    timed "snap: first backup" "$SNAP" --repo "$WORK/snap-files" backup -q "$WORK/tree"
    timed "snap: no-op backup" "$SNAP" --repo "$WORK/snap-files" backup -q "$WORK/tree"
    timed "snap: restore" "$SNAP" --repo "$WORK/snap-files" restore -q latest --target "$WORK/r"
    [ "$(find "$WORK/r" -type f | wc -l)" = "$FILES" ] || { log "snap restored a wrong count"; exit 1; }
    rm -rf "$WORK/r"
    "$RESTIC" init --repo "$WORK/restic-files" >/dev/null
    timed "restic: first backup" "$RESTIC" --repo "$WORK/restic-files" backup -q "$WORK/tree"
    timed "restic: no-op backup" "$RESTIC" --repo "$WORK/restic-files" backup -q "$WORK/tree"
    timed "restic: restore" "$RESTIC" --repo "$WORK/restic-files" restore latest --target "$WORK/r"
    rm -rf "$WORK/r" "$WORK/restic-files"
    if [ -x "$BUPSTASH" ]; then
        export BUPSTASH_REPOSITORY=$WORK/bupstash-files BUPSTASH_KEY=$WORK/bupstash.key \
            XDG_CACHE_HOME=$WORK/bupstash-cache BUPSTASH_QUERY_CACHE=$WORK/bupstash-cache/q.sqlite3
        mkdir -p "$WORK/bupstash-cache" "$WORK/r"
        "$BUPSTASH" init -r "$BUPSTASH_REPOSITORY" && "$BUPSTASH" new-key -o "$BUPSTASH_KEY"
        put=("$BUPSTASH" put -q --send-log "$WORK/bupstash-cache/files.sendlog" name=tree)
        timed "bupstash: first backup" "${put[@]}" "$WORK/tree"
        timed "bupstash: no-op backup" "${put[@]}" "$WORK/tree"
        id=$(tail -1 "$WORK/last.out")
        timed "bupstash: restore" "$BUPSTASH" restore --into "$WORK/r" id="$id"
        rm -rf "$WORK/r" "$WORK/bupstash-files"
    else
        log "bupstash not found ($BUPSTASH): its rows are left out"
    fi
    rm -rf "$WORK/snap-files" "$WORK/tree"
fi

if [[ " $PARTS " == *" stream "* ]]; then
    n=$((STREAM_GB * 1024 * 1024 * 1024 / 10))
    "$SNAP" --repo "$WORK/repo" init >/dev/null
    header "a stream of $STREAM_GB GiB (seq 1 $n), then $SNAPSHOTS snapshots in all"
    timed "snap: backup --command 'seq 1 $n'" \
        "$SNAP" --repo "$WORK/repo" backup -q --command "seq 1 $n" --as db/seq.sql
    out '%-44s %9s %9.0f\n' "  stored (repository MiB)" "" "$(($(bytes "$WORK/repo") >> 20))"
    "$SNAP" --repo "$WORK/repo" stats --json >"$WORK/stats.json"
    out '%-44s %19s\n' "  blobs in the repository" \
        "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["repository"]["blobs"])' "$WORK/stats.json")"
fi

if [[ " $PARTS " == *" history "* ]]; then
    [ -e "$WORK/repo/config" ] || "$SNAP" --repo "$WORK/repo" init >/dev/null
    src=$WORK/app
    mkdir -p "$src/files"
    for i in $(seq 0 1999); do random_bytes 16384 "f$i" >"$src/files/f$i"; done
    seq 1 6000000 | awk '{ printf "%d\taccount %d\t%d\n", $1, $1 % 997, $1 * 7 % 100003 }' >"$src/dump.sql"
    day() { # one day's churn: 20 files rewritten, 1 % of the dump's lines changed
        for i in $(shuf -i 0-1999 -n 20 --random-source=<(yes "$1")); do
            random_bytes 16384 "f$i-$1" >"$src/files/f$i"
        done
        awk -v d="$1" 'NR % 100 == d % 100 { $3 = $3 + d } { print }' OFS='\t' "$src/dump.sql" >"$src/dump.new"
        mv "$src/dump.new" "$src/dump.sql"
    }
    backup=("$SNAP" --repo "$WORK/repo" backup -q "$src/files" --command "cat $src/dump.sql" --as db/app.sql)
    probe() {
        out '%-44s %9s %9.0f\n' "after $1 snapshots: repository MiB" "" "$(($(bytes "$WORK/repo") >> 20))"
        out '%-44s %9s %9.0f\n' "  index cache MiB" "" "$(($(bytes "$WORK/repo/index.sqlite") >> 20))"
        timed "  list" "$SNAP" --repo "$WORK/repo" list
        timed "  ls latest" "$SNAP" --repo "$WORK/repo" ls latest
        rm -rf "$WORK/one"
        timed "  restore of one file" "$SNAP" --repo "$WORK/repo" restore -q latest --include "$src/files/f7" --target "$WORK/one"
        timed "  no-op backup (2,000 files + 147 MiB dump)" "${backup[@]}"
    }
    have=$("$SNAP" --repo "$WORK/repo" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    for s in $(seq $((have + 1)) "$SNAPSHOTS"); do
        day "$s"
        "${backup[@]}" >/dev/null
        case $s in 2 | 10 | 50 | "$SNAPSHOTS") probe "$s" ;; esac
    done
fi
log "done; summary in $SUMMARY"
