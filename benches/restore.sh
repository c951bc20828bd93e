#!/usr/bin/env bash
# restore.sh: the restore race, fair and cold: snap beside restic, rustic and borg.
#
# What it measures
#   Every tool backs up the same SRC once (repositories in WORK; restic and rustic
#   always encrypt, borg runs with `--encryption none`, snap unencrypted). Then, for
#   ROUNDS rounds, every tool restores its snapshot twice: from a hot page cache (the
#   repository just read) and from a cold one (`echo 3 > /proc/sys/vm/drop_caches`
#   right before, as after a reboot or on a machine that did other work since the
#   backup: the real emergency). Each restore lands on a fresh ext4 loop file system of
#   its own (with a journal), so no tool pays for what an earlier one left or deleted.
#   A restore runs under /usr/bin/time (wall, user, system, peak RSS); `sync` after it
#   is timed apart, so "synced" is the time until the restored bytes are on the disk.
#   The disk's limit from the same run: `dd bs=4M conv=fdatasync` of as many bytes as
#   the restore onto a fresh file system of the same kind, the best of ROUNDS.
#   Every restore is checked: the restored tree must equal SRC (`diff -r`, once a tool).
#
# How to run (root: it mounts loop file systems and drops the page cache)
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/restore.sh
# Knobs: WORK (default /tmp/restore-race, wiped first), SNAP, RESTIC, RUSTIC, BORG
#   (a tool that is not installed is left out), SRC (default /usr/share: ~45,000 files,
#   ~660 MB), ROUNDS (default 2). Needs SRC's size x (tools + 3) free in WORK.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/restore-race}
SNAP=${SNAP:-$HERE/target/release/snap}
RESTIC=${RESTIC:-$(command -v restic || true)}
RUSTIC=${RUSTIC:-$(command -v rustic || true)}
BORG=${BORG:-$(command -v borg || true)}
SRC=${SRC:-/usr/share}
ROUNDS=${ROUNDS:-2}
. "$HERE/benches/lib.sh"

[ "$(id -u)" = 0 ] || { log "run as root: restores go onto loop file systems"; exit 1; }
SRC=$(cd "$SRC" && pwd)
for m in "$WORK"/mnt-*; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
rm -rf "$WORK"
mkdir -p "$WORK"
unset SNAP_REPO SNAP_PASSWORD SNAP_PASSWORD_FILE RESTIC_REPOSITORY BORG_REPO
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/cache/restic SNAP_CACHE_DIR=$WORK/cache/snap \
    BORG_BASE_DIR=$WORK/cache/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
RUSTIC_ARGS=(--password bench --cache-dir "$WORK/cache/rustic")
TOOLS=snap
[ -n "$RESTIC" ] && TOOLS="$TOOLS restic"
[ -n "$RUSTIC" ] && TOOLS="$TOOLS rustic"
[ -n "$BORG" ] && TOOLS="$TOOLS borg"
SIZE=$(bytes "$SRC")
NFILES=$(find "$SRC" -type f | wc -l)
log "SRC $SRC: $SIZE bytes in $NFILES files; tools: $TOOLS"

# Every tool stores SRC by its absolute path and restores it under the target the same
# way (TARGET/SRC), so one check fits all.
for t in $TOOLS; do
    log "backing up with $t"
    case $t in
        snap) "$SNAP" --repo "$WORK/snap" init >/dev/null
              "$SNAP" --repo "$WORK/snap" backup -q "$SRC" >/dev/null ;;
        restic) "$RESTIC" --repo "$WORK/restic" init >/dev/null
                "$RESTIC" --repo "$WORK/restic" backup -q "$SRC" ;;
        rustic) "$RUSTIC" -r "$WORK/rustic" "${RUSTIC_ARGS[@]}" init >/dev/null 2>&1
                "$RUSTIC" -r "$WORK/rustic" "${RUSTIC_ARGS[@]}" backup "$SRC" >/dev/null 2>&1 ;;
        borg) "$BORG" init --encryption none "$WORK/borg"
              "$BORG" create "$WORK/borg::one" "$SRC" ;;
    esac
done

# fresh NAME: a fresh ext4 loop file system mounted at $WORK/mnt-NAME.
fresh() {
    local img=$WORK/$1.img mnt=$WORK/mnt-$1
    mkdir -p "$mnt"
    truncate -s "$((SIZE * 3 / 1048576 + 1024))M" "$img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
    mount -o loop "$img" "$mnt"
}
drop() { umount "$WORK/mnt-$1"; rm -f "$WORK/$1.img"; rmdir "$WORK/mnt-$1"; }

# restore TOOL STATE ROUND: one timed restore, a line of $WORK/rows.
restore() {
    local t=$1 state=$2 r=$3 mnt=$WORK/mnt-$1 cmd
    case $t in
        snap) cmd=("$SNAP" --repo "$WORK/snap" restore -q latest --target "$mnt") ;;
        restic) cmd=("$RESTIC" --repo "$WORK/restic" restore -q latest --target "$mnt") ;;
        rustic) cmd=("$RUSTIC" -r "$WORK/rustic" "${RUSTIC_ARGS[@]}" restore latest "$mnt") ;;
        borg) cmd=(sh -c 'cd "$1" && shift && exec "$@"' - "$mnt" "$BORG" extract "$WORK/borg::one") ;;
    esac
    fresh "$t"
    sync
    [ "$state" = cold ] && echo 3 >/proc/sys/vm/drop_caches
    /usr/bin/time -f "%e %U %S %M" -o "$WORK/t" "${cmd[@]}" >"$WORK/out" 2>&1 || {
        log "$t restore failed:"; tail -5 "$WORK/out" >&2; exit 1; }
    local t0 t1 synced
    t0=$(now); sync; t1=$(now)
    synced=$(awk -v a="$(cut -d' ' -f1 "$WORK/t")" -v s="$(secs "$t0" "$t1")" 'BEGIN { printf "%.2f", a + s }')
    if [ ! -e "$WORK/checked-$t" ]; then
        diff -r --no-dereference "$SRC" "$mnt$SRC" >"$WORK/diff" 2>&1 || {
            log "$t restored something else:"; head -5 "$WORK/diff" >&2; exit 1; }
        touch "$WORK/checked-$t"
    fi
    echo "$t $state $r $(cat "$WORK/t") $synced" >>"$WORK/rows"
    log "$t $state round $r: $(cat "$WORK/t") synced $synced"
    drop "$t"
}

for r in $(seq 1 "$ROUNDS"); do
    fresh dd
    sync
    t0=$(now)
    dd if=/dev/zero of="$WORK/mnt-dd/zeros" bs=4M count=$((SIZE / 4194304 + 1)) conv=fdatasync status=none
    t1=$(now)
    echo "dd - $r $(secs "$t0" "$t1") 0 0 0 $(secs "$t0" "$t1")" >>"$WORK/rows"
    drop dd
    for state in hot cold; do
        for t in $TOOLS; do
            [ "$state" = hot ] && find "$WORK/$t" -type f -exec cat {} + >/dev/null
            restore "$t" "$state" "$r"
        done
    done
done

# The table: medians over rounds; ratios against the fastest peer in the same state.
python3 - "$WORK/rows" "$SIZE" "$NFILES" <<'EOF'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
size, nfiles = int(sys.argv[2]), int(sys.argv[3])
def med(tool, state, i):
    return st.median(float(r[i]) for r in rows if r[0] == tool and r[1] == state)
dd = min(float(r[7]) for r in rows if r[0] == "dd")
tools = [t for t in dict.fromkeys(r[0] for r in rows) if t != "dd"]
print(f"{size / 1e6:.0f} MB in {nfiles} files; disk limit (dd conv=fdatasync, best): "
      f"{dd:.2f} s, {size / dd / 1e6:.0f} MB/s\n")
print("| state | tool | wall s | user s | sys s | peak RSS MB | synced s | synced MB/s | of disk | vs fastest peer (wall / synced) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for state in ("hot", "cold"):
    peers = [t for t in tools if t != "snap"]
    fw = min((med(t, state, 3) for t in peers), default=None)
    fs = min((med(t, state, 7) for t in peers), default=None)
    for t in tools:
        w, s = med(t, state, 3), med(t, state, 7)
        vs = f"{w / fw:.2f}x / {s / fs:.2f}x" if fw else "-"
        print(f"| {state} | {t} | {w:.2f} | {med(t, state, 4):.2f} | {med(t, state, 5):.2f} | "
              f"{med(t, state, 6) / 1024:.0f} | {s:.2f} | {size / s / 1e6:.0f} | {dd / s:.2f} | {vs} |")
EOF
