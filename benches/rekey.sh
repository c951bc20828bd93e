#!/usr/bin/env bash
# rekey.sh: copying snapshots into a repository with another key (a re-encrypting
# copy), `snap sync --to DEST` next to `restic -r DEST copy --from-repo SRC`, on the same
# data.
#
# What it measures
#   A source of SIZE_MB MiB, half incompressible (AES-CTR output) and half text that
#   compresses about 4:1 (base64 of random bytes), in 64 MiB files, as in encryption.sh.
#   Not timed: it is backed up once into an encrypted snap repository and a restic
#   repository (snapshot A); then one new NEW_MB MiB incompressible file is added and
#   both back up again (snapshot B; the file is taken out of the source afterwards).
#   Timed, RUNS times, the tools taking turns, each run into fresh destinations made
#   first with the other passphrase (`SNAP_PASSWORD=other snap init --encrypt`,
#   `restic init`):
#     full         snapshot A into the empty destination: every chunk decrypted,
#                  decompressed, (snap: re-hashed with the destination's id key,)
#                  compressed and sealed again
#     nothing new  snapshot A again: snap's report should show 0 chunks read
#     +NEW_MB      snapshot B: only the new file's chunks are new
#   and, as a reference for the full copy (which does about a backup's work), a backup
#   of the source into a fresh encrypted repository by each tool.
#   Per step: wall time, CPU time (user + sys, both cores together) and peak RSS, from
#   `/usr/bin/time -f "%e %M %U %S"`; printed as medians, with snap/restic ratios and
#   snap's chunks_read, blobs_sent, bytes_sent from `snap sync --json`. CPU time is the
#   firmer figure on a noisy shared machine; wall is what users see. Everything is read
#   from the page cache. Snapshots are chosen by id (`snap sync --to DEST ID`,
#   `restic copy ID`) so that every run starts from the same source.
#   Passphrases: sources `bench`; destinations `other` (snap sync reads it from
#   SNAP_TO_PASSWORD, restic copy reads the source's from --from-password-file).
#
# How to run
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/rekey.sh
# Knobs: WORK (default /tmp/rekey-bench, wiped first), SNAP, RESTIC, SIZE_MB (1024),
#   NEW_MB (64), RUNS (5). Needs ~7x SIZE_MB free in WORK.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/rekey-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
RESTIC=${RESTIC:-$(command -v restic)}
SIZE_MB=${SIZE_MB:-1024}
NEW_MB=${NEW_MB:-64}
RUNS=${RUNS:-5}
. "$HERE/benches/lib.sh"

rm -rf "$WORK"
mkdir -p "$WORK/src" "$WORK/extra"
unset SNAP_REPO RESTIC_REPOSITORY SNAP_PASSWORD_FILE SNAP_KEY_FILE SNAP_TO_PASSWORD_FILE SNAP_TO_KEY_FILE \
    RESTIC_PASSWORD_FILE RESTIC_FROM_REPOSITORY RESTIC_FROM_PASSWORD_FILE RESTIC_FROM_PASSWORD_COMMAND
# Source passphrase `bench`, destination `other`; restic's RESTIC_PASSWORD is set per command.
export SNAP_PASSWORD=bench SNAP_TO_PASSWORD=other RESTIC_CACHE_DIR=$WORK/cache-restic
echo bench >"$WORK/pw-src"
n=$((SIZE_MB / 64))
log "making $SIZE_MB MiB of source data"
for i in $(seq 1 "$n"); do
    if [ $((i % 2)) = 1 ]; then
        random_bytes $((64 << 20)) "$i" >"$WORK/src/r$i"
    else
        random_bytes $((48 << 20)) "$i" | base64 -w 76 >"$WORK/src/t$i"
    fi
done
random_bytes $((NEW_MB << 20)) new >"$WORK/extra/new"
cat "$WORK/src"/* "$WORK/extra/new" >/dev/null
BYTES=$(bytes "$WORK/src")

S=$WORK/snap-src R=$WORK/restic-src
json() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
# restic backup --json: the summary is the last line
restic_id() { tail -1 "$1" | python3 -c "import json, sys; print(json.load(sys.stdin)['snapshot_id'])"; }
log "source repositories: snapshot A"
"$SNAP" --repo "$S" init --encrypt >/dev/null 2>&1
RESTIC_PASSWORD=bench "$RESTIC" --repo "$R" init >/dev/null 2>&1
"$SNAP" --repo "$S" backup --json "$WORK/src" >"$WORK/snap-a.json"
RESTIC_PASSWORD=bench "$RESTIC" --repo "$R" backup --json "$WORK/src" >"$WORK/restic-a.json"
log "source repositories: snapshot B (+$NEW_MB MiB)"
cp "$WORK/extra/new" "$WORK/src/new"
"$SNAP" --repo "$S" backup --json "$WORK/src" >"$WORK/snap-b.json"
RESTIC_PASSWORD=bench "$RESTIC" --repo "$R" backup --json "$WORK/src" >"$WORK/restic-b.json"
rm "$WORK/src/new"
SA=$(json "$WORK/snap-a.json" "['id']") SB=$(json "$WORK/snap-b.json" "['id']")
RA=$(restic_id "$WORK/restic-a.json") RB=$(restic_id "$WORK/restic-b.json")

# timed NAME CMD...: one timed command; "wall peakKB user sys" appended to NAME.times,
# stdout kept in NAME.out (the last run's), stderr in NAME.err.
timed() {
    local name=$1; shift
    if ! /usr/bin/time -f "%e %M %U %S" -o "$WORK/t" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"; then
        log "$name failed:"; cat "$WORK/$name.err" >&2; exit 1
    fi
    tail -1 "$WORK/t" >>"$WORK/$name.times"
}
snap_sync() { # NAME SNAPSHOT: sync into $WORK/dst-snap, keep the JSON report
    timed "$1" "$SNAP" --repo "$S" sync --json --to "$WORK/dst-snap" "$2"
    python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print(r['chunks_read'], r['blobs_sent'], r['bytes_sent'], r['snapshots_sent'], r['snapshots_present'])" \
        "$WORK/$1.out" >>"$WORK/$1.report"
}
restic_copy() { # NAME SNAPSHOT
    RESTIC_PASSWORD=other timed "$1" "$RESTIC" --repo "$WORK/dst-restic" copy \
        --from-repo "$R" --from-password-file "$WORK/pw-src" "$2"
}
for r in $(seq 1 "$RUNS"); do
    log "run $r of $RUNS"
    rm -rf "$WORK/dst-snap" "$WORK/dst-restic" "$WORK/ref"
    SNAP_PASSWORD=other "$SNAP" --repo "$WORK/dst-snap" init --encrypt >/dev/null 2>&1
    RESTIC_PASSWORD=other "$RESTIC" --repo "$WORK/dst-restic" init >/dev/null 2>&1
    snap_sync snap-full "$SA"
    restic_copy restic-full "$RA"
    [ "$r" = 1 ] && DST_SNAP_BYTES=$(bytes "$WORK/dst-snap") DST_RESTIC_BYTES=$(bytes "$WORK/dst-restic")
    snap_sync snap-again "$SA"
    restic_copy restic-again "$RA"
    snap_sync snap-new "$SB"
    restic_copy restic-new "$RB"
    "$SNAP" --repo "$WORK/ref" init --encrypt >/dev/null 2>&1
    timed snap-backup "$SNAP" --repo "$WORK/ref" backup -q "$WORK/src"
    rm -rf "$WORK/ref"
    RESTIC_PASSWORD=bench "$RESTIC" --repo "$WORK/ref" init >/dev/null 2>&1
    RESTIC_PASSWORD=bench timed restic-backup "$RESTIC" --repo "$WORK/ref" backup -q "$WORK/src"
done
# Check the last copies: both destinations hold A and B and restore-readable trees.
SNAP_PASSWORD=other "$SNAP" --repo "$WORK/dst-snap" check >"$WORK/check-snap.log" 2>&1 || { log "snap check of the destination failed"; cat "$WORK/check-snap.log" >&2; exit 1; }
RESTIC_PASSWORD=other "$RESTIC" --repo "$WORK/dst-restic" check >"$WORK/check-restic.log" 2>&1 || { log "restic check of the destination failed"; cat "$WORK/check-restic.log" >&2; exit 1; }

med() { col "$1" | cut -d' ' -f"$2" | median; } # med NAME FIELD (1 wall, 2 cpu, 3 rss)
{
    echo "rekey.sh: $((BYTES >> 20)) MiB (half incompressible, half base64 text) + $NEW_MB MiB new, median of $RUNS runs"
    echo "  $("$SNAP" --version), $("$RESTIC" version | cut -d' ' -f1-2)"
    echo "  source repositories: snap $(($(bytes "$S") >> 20)) MiB, restic $(($(bytes "$R") >> 20)) MiB;" \
        "after the full copy: snap destination $((DST_SNAP_BYTES >> 20)) MiB, restic $((DST_RESTIC_BYTES >> 20)) MiB"
    printf '%-14s %-28s %8s %8s %8s %12s\n' step tool "wall s" "CPU s" "MiB/s" "peak RSS MB"
    row() { # STEP TOOL NAME MIB
        awk -v st="$1" -v t="$2" -v s="$(med "$3" 1)" -v c="$(med "$3" 2)" -v m="$(med "$3" 3)" -v mib="$4" \
            'BEGIN { printf "%-14s %-28s %8.2f %8.2f %8s %12.0f\n", st, t, s, c, mib ? sprintf("%.0f", mib / s) : "-", m / 1024 }'
    }
    row full "snap sync (rekey)" snap-full $((BYTES >> 20))
    row full "restic copy" restic-full $((BYTES >> 20))
    row "nothing new" "snap sync" snap-again 0
    row "nothing new" "restic copy" restic-again 0
    row "+$NEW_MB MiB" "snap sync" snap-new "$NEW_MB"
    row "+$NEW_MB MiB" "restic copy" restic-new "$NEW_MB"
    row reference "snap backup (--encrypt)" snap-backup $((BYTES >> 20))
    row reference "restic backup" restic-backup $((BYTES >> 20))
    for st in full again new; do
        echo "snap/restic $st, by medians: wall $(ratio "$(med snap-$st 1)" "$(med restic-$st 1)"), CPU $(ratio "$(med snap-$st 2)" "$(med restic-$st 2)")"
    done
    echo "snap/restic full per run: wall $(per_run snap-full restic-full 1); CPU $(per_run snap-full restic-full 2)"
    echo "snap sync full / snap backup, by medians: wall $(ratio "$(med snap-full 1)" "$(med snap-backup 1)"), CPU $(ratio "$(med snap-full 2)" "$(med snap-backup 2)")"
    echo "restic copy full / restic backup, by medians: wall $(ratio "$(med restic-full 1)" "$(med restic-backup 1)"), CPU $(ratio "$(med restic-full 2)" "$(med restic-backup 2)")"
    for st in full again new; do
        echo "snap sync $st per run (chunks_read blobs_sent bytes_sent snapshots_sent snapshots_present): $(paste -sd'|' "$WORK/snap-$st.report" | sed 's/|/ | /g')"
    done
} | tee "$WORK/summary.txt"
