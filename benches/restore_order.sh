#!/usr/bin/env bash
# restore_order.sh: why a restore's time depends on what was deleted just before it.
#
# What it measures
#   SRC (default /usr/share: ~45,000 files, ~660 MB) is backed up once by snap and by
#   restic (repositories in WORK). Then, on a fresh ext4 loop file system with a
#   journal and on one without (`mkfs.ext4 -O ^has_journal`, as this machine's root
#   file system is), each tool restores latest and its restore is deleted at once
#   (`rm -rf`, as ../shared/bench does between tools), in both orders, twice. Each
#   restore runs under /usr/bin/time: wall, user and system seconds.
#   Without a journal, ext4 avoids reusing inodes deleted in the last 5 s (300 s while
#   their inode table block is dirty) and scans past each of them for every new inode
#   (`recently_deleted` in fs/ext4/ialloc.c): a restore that follows a deletion of
#   tens of thousands of files pays that in system time, whichever tool it is.
#
# How to run (root: it mounts loop file systems)
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/restore_order.sh
# Knobs: WORK (default /tmp/restore-order, wiped first), SNAP, RESTIC, SRC.
#   Needs ~8 GB free in WORK; takes ~5 minutes on 2 cores.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/restore-order}
SNAP=${SNAP:-$HERE/target/release/snap}
RESTIC=${RESTIC:-$(command -v restic)}
SRC=${SRC:-/usr/share}
. "$HERE/benches/lib.sh"

rm -rf "$WORK"
mkdir -p "$WORK"
unset SNAP_REPO SNAP_PASSWORD SNAP_PASSWORD_FILE RESTIC_REPOSITORY
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic-cache
log "backing up $SRC with snap and restic"
"$SNAP" --repo "$WORK/snap" init >/dev/null
"$SNAP" --repo "$WORK/snap" backup -q "$SRC" >/dev/null
"$RESTIC" --repo "$WORK/restic" init >/dev/null
"$RESTIC" --repo "$WORK/restic" backup -q "$SRC"

# restore TOOL TARGET: one timed restore, a row of the table.
restore() {
    local cmd
    case $1 in
        snap) cmd=("$SNAP" --repo "$WORK/snap" restore -q latest --target "$2") ;;
        restic) cmd=("$RESTIC" --repo "$WORK/restic" restore latest --target "$2") ;;
    esac
    /usr/bin/time -f "%e %U %S" -o "$WORK/t" "${cmd[@]}" >/dev/null 2>"$WORK/err" || {
        log "$1 restore failed:"; tail -5 "$WORK/err" >&2; exit 1; }
    read -r wall user sys <"$WORK/t"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$fs" "$order" "$1" "$wall" "$user" "$sys"
}

echo "| file system | order | tool | wall s | user s | sys s |"
echo "|---|---|---|---|---|---|"
for fs in journal no-journal; do
    img=$WORK/$fs.img mnt=$WORK/mnt-$fs
    mkdir -p "$mnt"
    truncate -s 6G "$img"
    if [ "$fs" = journal ]; then mkfs.ext4 -q -F "$img"; else mkfs.ext4 -q -F -O ^has_journal "$img"; fi
    mount -o loop "$img" "$mnt"
    trap 'umount "$mnt" 2>/dev/null || true' EXIT
    for _ in 1 2; do
        for order in "restic, snap" "snap, restic"; do
            for tool in ${order//,/}; do
                restore "$tool" "$mnt/r-$tool"
                rm -rf "${mnt:?}/r-$tool"
            done
        done
    done
    umount "$mnt"
    rm -f "$img"
done
rm -rf "$WORK"
