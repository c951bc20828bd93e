#!/usr/bin/env bash
# sync.sh: what it costs to send one new daily snapshot offsite, snap sync next to
# rclone sync of the same repository directory, both to one S3-compatible server (moto)
# on loopback.
#
# Workload: a 200 MB file storage (200 files of 1 MB) and a 100 MB dump file; each day
# 4 files are rewritten, 2 added, and 1 % of the dump changes in place. Seven days are
# backed up and synced by both tools; the eighth day's sync is measured.
#
#   SNAP_BIN=target/release/snap WORK=/tmp/snap-sync-bench benches/sync.sh
# Needs: rclone, python3 with moto[server], openssl. Prints a markdown table.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SNAP=${SNAP_BIN:-target/release/snap}
WORK=${WORK:-/tmp/snap-sync-bench}
DAYS=${DAYS:-7}
rm -rf "$WORK" && mkdir -p "$WORK/data/files"
PORT=$((20000 + RANDOM % 10000))
python3 -m moto.server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true' EXIT
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT))" 2>/dev/null; do sleep 0.2; done
python3 -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$PORT/bench', method='PUT'))"

export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other RCLONE_CONFIG_MOTO_ENDPOINT=$AWS_ENDPOINT_URL \
    RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=bench RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=bench
export SNAP_REPO=$WORK/repo SNAP_CACHE_DIR=$WORK/cache

for i in $(seq 1 200); do random_bytes 1000000 "file $i" >"$WORK/data/files/f$i"; done
random_bytes 100000000 dump >"$WORK/data/dump"
"$SNAP" init >/dev/null

day() {
    local d=$1
    for k in 1 2 3 4; do random_bytes 1000000 "day $d file $k" >"$WORK/data/files/f$(((d * 7 + k * 13) % 200 + 1))"; done
    random_bytes 1000000 "new $d a" >"$WORK/data/files/new-$d-a"
    random_bytes 1000000 "new $d b" >"$WORK/data/files/new-$d-b"
    for k in $(seq 1 10); do # 10 x 100 KB = 1 % of the dump, in place
        random_bytes 100000 "day $d dump $k" |
            dd of="$WORK/data/dump" bs=100000 seek=$(((d * 31 + k * 97) % 1000)) conv=notrunc status=none
    done
    "$SNAP" backup -q "$WORK/data" >/dev/null
}

# rclone reports what it transferred on its last stats line.
rclone_sync() {
    # rclone 1.60 refuses AWS_CA_BUNDLE with its own HTTP transport; loopback needs none.
    env -u AWS_CA_BUNDLE rclone sync "$SNAP_REPO" moto:bench/rclone -v --stats 0 >"$WORK/rclone.log" 2>&1
    # The bytes of the files it says it copied.
    sed -n 's/.*INFO  : \(.*\): Copied.*/\1/p' "$WORK/rclone.log" |
        (cd "$SNAP_REPO" && xargs -r stat -c %s) | awk '{ n += $1 } END { print n + 0 }'
}

for d in $(seq 1 "$DAYS"); do
    log "day $d"
    day "$d"
    "$SNAP" sync -q --to s3://bench/snap >/dev/null
    rclone_sync >/dev/null
done

log "day $((DAYS + 1)): measured"
day $((DAYS + 1))
t0=$(now)
"$SNAP" sync --json --to s3://bench/snap >"$WORK/snap-sync.json"
t1=$(now)
rc=$(rclone_sync)
t2=$(now)
snap_s=$(secs "$t0" "$t1")
rclone_s=$(secs "$t1" "$t2")
snap_b=$(python3 -c "import json; print(json.load(open('$WORK/snap-sync.json'))['bytes_sent'])")
repo_b=$(bytes "$SNAP_REPO")
cache_b=$(du -cb "$SNAP_REPO"/index.sqlite* | tail -1 | cut -f1)

# Working on the remote directly: restore the latest snapshot from S3 with an empty
# cache, next to the same restore from the local repository.
t3=$(now)
"$SNAP" restore -q latest --target "$WORK/restore-local" >/dev/null
t4=$(now)
SNAP_CACHE_DIR=$WORK/empty-cache "$SNAP" --repo s3://bench/snap restore -q latest --target "$WORK/restore-s3" >/dev/null
t5=$(now)
diff -r "$WORK/restore-local" "$WORK/restore-s3"
restored_b=$(bytes "$WORK/restore-local")

cat <<EOF
| | snap sync | rclone sync of the repository directory |
|---|---|---|
| time for day $((DAYS + 1)) | ${snap_s} s | ${rclone_s} s |
| bytes sent | ${snap_b} (packs, index file, record) | ${rc} (the same, and the index cache) |

repository after $((DAYS + 1)) days: ${repo_b} bytes, of which the local index cache ${cache_b}
(rclone copies the cache too whenever it changed; snap sync never sends it).
time ratio snap/rclone: $(awk -v a="$snap_s" -v b="$rclone_s" 'BEGIN { printf "%.2f", a / b }')

restore of the latest snapshot (${restored_b} bytes): local $(secs "$t3" "$t4") s,
from S3 with an empty cache $(secs "$t4" "$t5") s (byte-identical)
EOF
