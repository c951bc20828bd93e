#!/usr/bin/env bash
# mount.sh: browsing a backup through FUSE, snap mount next to restic mount and borg
# mount on the same data, in one run.
#
# What it measures
#   DATA holds a 1 GiB file of incompressible bytes (a raster) and a tree of 100,000
#   small files (100 directories of 1,000 files of 200-2,000 bytes of text). Each tool
#   backs DATA up once: snap unencrypted and encrypted, borg unencrypted
#   (`--encryption none`), restic (always encrypted). Then, REPS times each:
#   - restore: the 1 GiB file alone restored into an empty directory (`snap restore
#     --include`, `restic restore --include`, `borg extract PATH`);
#   - read: a fresh mount, then `cat` of the same file through it to /dev/null; the
#     mount is ended and its process's peak RSS taken (/usr/bin/time %M);
#   - find, du: a fresh mount, `find SNAPSHOT | wc -l`, then `du -s SNAPSHOT`, then the
#     same end and peak RSS.
#   A fresh mount for each repetition, so no answer comes from the kernel's cache of an
#   earlier one. The repositories stay in the page cache (hot) for every tool alike.
#   The table gives medians; "read share" is read over restore, per tool.
#
# How to run (root, /dev/fuse, restic and borg with llfuse: apt-get install restic
# borgbackup python3-llfuse fuse3)
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/mount.sh
# Knobs: WORK (default /tmp/mount-bench, wiped first), SNAP, REPS (3), FILES (100000).
#   Needs ~6 GB free in WORK; takes ~15 minutes on 2 cores.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/mount-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
REPS=${REPS:-3}
FILES=${FILES:-100000}
. "$HERE/benches/lib.sh"

rm -rf "$WORK"
mkdir -p "$WORK/data/big" "$WORK/mnt"
DATA=$WORK/data
BIG=$DATA/big/raster.bin
unset SNAP_REPO SNAP_PASSWORD SNAP_PASSWORD_FILE RESTIC_REPOSITORY BORG_REPO
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/cache/restic
export BORG_CACHE_DIR=$WORK/cache/borg BORG_CONFIG_DIR=$WORK/cache/borg-config
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export SNAP_CACHE_DIR=$WORK/cache/snap
echo bench >"$WORK/pass"

log "making data: 1 GiB file, $FILES small files"
random_bytes $((1 << 30)) raster >"$BIG"
python3 - "$DATA/tree" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
words = [f"w{i:x}" for i in range(5000)]
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03}")
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i:06}.txt"), "w") as f:
        f.write(" ".join(rnd.choices(words, k=rnd.randint(40, 400))))
PY

TOOLS="snap snap_enc restic borg"
for t in $TOOLS; do
    log "backup: $t"
    case $t in
        snap) "$SNAP" --repo "$WORK/repo-$t" init >/dev/null
              "$SNAP" --repo "$WORK/repo-$t" backup -q "$DATA" >/dev/null ;;
        snap_enc) SNAP_PASSWORD_FILE=$WORK/pass "$SNAP" --repo "$WORK/repo-$t" init --encrypt >/dev/null
              SNAP_PASSWORD_FILE=$WORK/pass "$SNAP" --repo "$WORK/repo-$t" backup -q "$DATA" >/dev/null ;;
        restic) restic --repo "$WORK/repo-$t" init >/dev/null
                restic --repo "$WORK/repo-$t" backup -q "$DATA" ;;
        borg) borg init --encryption none "$WORK/repo-$t"
              borg create "$WORK/repo-$t::a" "$DATA" ;;
    esac
done

# The snapshot's DATA directory as each tool's mount shows it.
snapshot_dir() {
    case $1 in
        snap*|restic) echo "$WORK/mnt/snapshots/latest$DATA" ;;
        borg) echo "$WORK/mnt/a${DATA}" ;;
    esac
}

# mount_start TOOL: mounts in the background under /usr/bin/time, waits until the
# snapshot directory can be listed.
mount_start() {
    local cmd
    case $1 in
        snap) cmd=("$SNAP" --repo "$WORK/repo-$1" mount "$WORK/mnt") ;;
        snap_enc) cmd=(env SNAP_PASSWORD_FILE="$WORK/pass" "$SNAP" --repo "$WORK/repo-$1" mount "$WORK/mnt") ;;
        restic) cmd=(restic --repo "$WORK/repo-$1" mount "$WORK/mnt") ;;
        borg) cmd=(borg mount -f "$WORK/repo-$1" "$WORK/mnt") ;;
    esac
    /usr/bin/time -f "%M" -o "$WORK/rss" "${cmd[@]}" >"$WORK/mount.log" 2>&1 &
    MOUNT_PID=$!
    local dir
    dir=$(snapshot_dir "$1")
    for _ in $(seq 1 600); do
        if ls "$dir" >/dev/null 2>&1; then return; fi
        sleep 0.1
    done
    log "$1 mount did not come up:"; cat "$WORK/mount.log" >&2; exit 1
}

# mount_end: unmounts, waits for the mount process; prints its peak RSS in MB.
mount_end() {
    fusermount -u "$WORK/mnt"
    wait "$MOUNT_PID" || true
    awk '{ printf "%.0f", $1 / 1024 }' "$WORK/rss"
}

# timed CMD...: runs CMD (a shell string), prints its wall seconds.
timed() {
    local t0 t1
    t0=$(now)
    bash -c "$1" >/dev/null
    t1=$(now)
    secs "$t0" "$t1"; echo
}

restore_cmd() {
    local target=$WORK/restore
    case $1 in
        snap) echo "'$SNAP' --repo '$WORK/repo-$1' restore -q latest --include '$BIG' --target '$target'" ;;
        snap_enc) echo "SNAP_PASSWORD_FILE='$WORK/pass' '$SNAP' --repo '$WORK/repo-$1' restore -q latest --include '$BIG' --target '$target'" ;;
        restic) echo "restic --repo '$WORK/repo-$1' restore -q latest --include '$BIG' --target '$target'" ;;
        borg) echo "cd '$target' && borg extract '$WORK/repo-$1::a' '${BIG#/}'" ;;
    esac
}

for t in $TOOLS; do
    : >"$WORK/$t.restore"; : >"$WORK/$t.read"; : >"$WORK/$t.find"; : >"$WORK/$t.du"
    : >"$WORK/$t.rss_read"; : >"$WORK/$t.rss_find"
done
for r in $(seq 1 "$REPS"); do
    for t in $TOOLS; do
        log "rep $r: $t"
        rm -rf "$WORK/restore" && mkdir "$WORK/restore"
        timed "$(restore_cmd "$t")" >>"$WORK/$t.restore"
        got=$(find "$WORK/restore" -type f -name raster.bin -printf '%s')
        [ "$got" = $((1 << 30)) ] || { log "$t restore gave '$got' bytes"; exit 1; }
        rm -rf "$WORK/restore"

        mount_start "$t"
        dir=$(snapshot_dir "$t")
        timed "cat '$dir/big/raster.bin' > /dev/null" >>"$WORK/$t.read"
        if [ "$r" = 1 ]; then cmp "$dir/big/raster.bin" "$BIG"; fi
        mount_end >>"$WORK/$t.rss_read"; echo >>"$WORK/$t.rss_read"

        mount_start "$t"
        dir=$(snapshot_dir "$t")
        timed "find '$dir' | wc -l" >>"$WORK/$t.find"
        n=$(find "$dir" | wc -l)
        [ "$n" = $((FILES + FILES / 1000 + 4)) ] || { log "$t find saw $n entries"; exit 1; }
        timed "du -s '$dir'" >>"$WORK/$t.du"
        mount_end >>"$WORK/$t.rss_find"; echo >>"$WORK/$t.rss_find"
    done
done

med() { median <"$WORK/$1"; }
echo "| tool | restore 1 GiB s | read via mount s | read share | find \| wc -l s | du -s s | peak RSS read MB | peak RSS find+du MB |"
echo "|---|---|---|---|---|---|---|---|"
for t in $TOOLS; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$(med "$t.restore")" "$(med "$t.read")" \
        "$(ratio "$(med "$t.read")" "$(med "$t.restore")")" "$(med "$t.find")" "$(med "$t.du")" \
        "$(sort -n "$WORK/$t.rss_read" | tail -1)" "$(sort -n "$WORK/$t.rss_find" | tail -1)"
done
echo
echo "All runs (wall s): restore / read / find / du per tool:"
for t in $TOOLS; do
    echo "- $t: $(paste -sd, "$WORK/$t.restore") / $(paste -sd, "$WORK/$t.read") / $(paste -sd, "$WORK/$t.find") / $(paste -sd, "$WORK/$t.du")"
done
rm -rf "$WORK"
