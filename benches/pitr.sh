#!/usr/bin/env bash
# pitr.sh: PostgreSQL point-in-time recovery, snap against pgBackRest on one cluster in
# one run. A pgbench scale SCALE cluster (default 50, ~0.75 GB) archives every WAL
# segment into both (archive_command runs `snap wal push` then pgBackRest's
# `archive-push`). Each of NIGHTS nights (default 7): pgbench churn (-c 2 -j 2 -t TX,
# default 20000 per client), then a base backup by each: snap `backup --pg-base`,
# pgBackRest full on night 1, incremental after, and on the last night a differential
# too (after the incremental, so that each has its own reference).
#
# Then:
#   WAL push: PUSH_SEGS (default 32) real segments of the archive pushed one at a time
#     into fresh repositories: snap `wal push` against pgBackRest `archive-push`,
#     synchronous and asynchronous (archive-async, process-max=2: the first push starts
#     a background process that pushes ahead every segment marked .ready, as in pg_wal),
#     segments per second and milliseconds per push.
#   Keeping up: during each night's churn, WAL made per second, and the segments the
#     archiver was behind at its end (pg_stat_archiver).
#   Recovery: a day's churn after the last base backup, a time T at its end; each tool
#     restores its latest backup to T into a new directory, a server starts on it and
#     recovers to T (promote); time from the restore command to the promotion.
#
# Run (about 15 minutes; keep the machine quiet):
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/pitr.sh
# Needs PostgreSQL's server (initdb, pg_ctl, pgbench) and pgbackrest (Debian packages).
# Knobs: WORK (default /tmp/pitr-bench, wiped first), SNAP, SCALE, NIGHTS, TX, PUSH_SEGS.
# Output: a table on stdout; $WORK/nights.csv.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/pitr-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
SCALE=${SCALE:-50}
NIGHTS=${NIGHTS:-7}
TX=${TX:-20000}
PUSH_SEGS=${PUSH_SEGS:-32}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
. "$HERE/benches/lib.sh"
command -v pgbackrest >/dev/null || { echo "pgbackrest is not installed (apt-get install pgbackrest)" >&2; exit 2; }

rm -rf "$WORK"
mkdir -p "$WORK"
unset SNAP_REPO SNAP_PASSWORD SNAP_PASSWORD_FILE
export SNAP_CACHE_DIR=$WORK/cache PATH=$PGBIN:$PATH
REPO=$WORK/snap-repo CONF=$WORK/pgbackrest.conf CSV=$WORK/nights.csv
start_pg
DSN="host=$SOCK user=postgres"

owned() { mkdir -p "$@"; if [ "$(id -u)" = 0 ]; then chown -R postgres: "$@"; fi; }
"$SNAP" --repo "$REPO" init >/dev/null
owned "$REPO" "$WORK/pgbr" "$WORK/pgbr-push" "$WORK/pgbr-push-async" "$WORK/pgbr-spool" "$WORK/pgbr-log" "$WORK/pgbr-lock" "$WORK/snap-push"
pgbr_conf() { # repo path [extra global option...]
    cat <<EOF
[global]
repo1-path=$1
$(printf '%s\n' "${@:2}")
repo1-retention-full=99
compress-type=zst
start-fast=y
log-level-console=warn
log-level-file=off
lock-path=$WORK/pgbr-lock
log-path=$WORK/pgbr-log

[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-port=$PGPORT
EOF
}
pgbr_conf "$WORK/pgbr" >"$CONF"
pgbr_conf "$WORK/pgbr-push" >"$WORK/pgbackrest-push.conf"
pgbr_conf "$WORK/pgbr-push-async" archive-async=y "spool-path=$WORK/pgbr-spool" process-max=2 \
    >"$WORK/pgbackrest-push-async.conf"
chmod 644 "$CONF" "$WORK/pgbackrest-push.conf" "$WORK/pgbackrest-push-async.conf"
pgbr() { as_pg pgbackrest --config="$CONF" --stanza=bench "$@"; }

psql -X -q -c "ALTER SYSTEM SET archive_mode = on" \
    -c "ALTER SYSTEM SET archive_command = '$SNAP --repo $REPO wal push %p && pgbackrest --config=$CONF --stanza=bench archive-push %p'" postgres
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w restart -l "$PGDATA/server.log" \
    -o "-c listen_addresses='' -c unix_socket_directories=$SOCK -c port=$PGPORT" >/dev/null
pgbr stanza-create
log "pgbench -i -s $SCALE"
createdb bench
pgbench -i -s "$SCALE" -q bench 2>"$WORK/pgbench-init.log"
psql -X -q -c CHECKPOINT postgres

lsn() { psql -X -A -t -c "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn" postgres; }
# Segments between the current one and the last archived.
segno() { # SQL expression of a segment name: its number (16 MiB segments)
    echo "(('x' || substr($1, 9, 8))::bit(32)::bigint * 256 + ('x' || substr($1, 17, 8))::bit(32)::bigint)"
}
behind() {
    psql -X -A -t -c "SELECT $(segno "pg_walfile_name(pg_current_wal_lsn())") - 1
        - $(segno "coalesce(last_archived_wal, '000000010000000000000000')") FROM pg_stat_archiver" postgres
}
timed() { # out-file command...: wall seconds into the file
    local t0 t1
    t0=$(now)
    "${@:2}" >/dev/null
    t1=$(now)
    secs "$t0" "$t1" >"$1"
}
pgbr_last_delta() {
    pgbr info --output=json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["backup"][-1]["info"]["repository"]["delta"])'
}

echo "night,churn_s,wal_mb,wal_mb_s,behind,snap_s,snap_stored,pgbr_type,pgbr_s,pgbr_stored" >"$CSV"
for night in $(seq "$NIGHTS"); do
    churn_s=0 wal_mb=0 rate=0
    if [ "$night" -gt 1 ]; then
        l0=$(lsn)
        t0=$(now)
        pgbench -n -c 2 -j 2 -t "$TX" bench >"$WORK/pgbench-$night.log" 2>&1
        t1=$(now)
        churn_s=$(secs "$t0" "$t1")
        wal_mb=$(awk -v a="$l0" -v b="$(lsn)" 'BEGIN { printf "%.0f", (b - a) / 1048576 }')
        rate=$(awk -v m="$wal_mb" -v s="$churn_s" 'BEGIN { printf "%.1f", m / s }')
    fi
    late=$(behind)
    snap_json=$WORK/snap-$night.json
    t0=$(now)
    "$SNAP" --repo "$REPO" backup -q --json --pg-base "$DSN" >"$snap_json"
    t1=$(now)
    snap_s=$(secs "$t0" "$t1")
    snap_stored=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["bytes_added"])' "$snap_json")
    type=incr
    [ "$night" = 1 ] && type=full
    timed "$WORK/t" pgbr backup --type=$type
    echo "$night,$churn_s,$wal_mb,$rate,$late,$snap_s,$snap_stored,$type,$(cat "$WORK/t"),$(pgbr_last_delta)" >>"$CSV"
    if [ "$night" = "$NIGHTS" ] && [ "$night" -gt 1 ]; then
        timed "$WORK/t" pgbr backup --type=diff
        echo "$night,,,,,,,diff,$(cat "$WORK/t"),$(pgbr_last_delta)" >>"$CSV"
    fi
    log "night $night: $(tail -1 "$CSV")"
done

log "a day's churn after the last base backup, then recovery to its end"
pgbench -n -c 2 -j 2 -t "$TX" bench >"$WORK/pgbench-after.log" 2>&1
sleep 1
T=$(psql -X -A -t -c "SELECT now()" postgres)
sleep 1
psql -X -q -c "CREATE TABLE after_t AS SELECT 1" bench
psql -X -A -t -c "SELECT pg_switch_wal()" postgres >/dev/null
seg=$(psql -X -A -t -c "SELECT pg_walfile_name(pg_current_wal_lsn() - 1)" postgres)
until [ "$(psql -X -A -t -c "SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver" postgres)" = t ]; do sleep 0.2; done
count_at_t() { # socket dir
    psql -X -A -t -h "$1" -c "SELECT count(*) FROM pg_class WHERE relname = 'after_t'" bench
}

owned "$WORK/r-snap-parent" "$WORK/r-pgbr" "$WORK/r-pgbr-sock"
t0=$(now)
"$SNAP" --repo "$REPO" restore -q --json --pg-base latest --pg-data "$WORK/r-snap-parent/data" \
    --target-time "$T" --target-action promote --start >"$WORK/r-snap.json"
t1=$(now)
snap_rec=$(secs "$t0" "$t1")
snap_sock=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["socket_dir"])' "$WORK/r-snap.json")
[ "$(count_at_t "$snap_sock")" = 0 ] || { echo "snap recovered past T" >&2; exit 1; }
as_pg "$PGBIN/pg_ctl" -D "$WORK/r-snap-parent/data" -m immediate -w stop >/dev/null

rmdir "$WORK/r-pgbr" && owned "$WORK/r-pgbr"
t0=$(now)
as_pg pgbackrest --config="$CONF" --stanza=bench --pg1-path="$WORK/r-pgbr" restore \
    --type=time "--target=$T" --target-action=promote >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/r-pgbr" -l "$WORK/r-pgbr-sock/log" -W \
    -o "-c listen_addresses='' -c unix_socket_directories=$WORK/r-pgbr-sock -c archive_mode=off" start >/dev/null
until grep -q "database system is ready to accept connections" "$WORK/r-pgbr-sock/log" 2>/dev/null &&
    grep -q "selected new timeline ID" "$WORK/r-pgbr-sock/log"; do
    if grep -q FATAL "$WORK/r-pgbr-sock/log" 2>/dev/null; then cat "$WORK/r-pgbr-sock/log" >&2; exit 1; fi
    sleep 0.1
done
t1=$(now)
pgbr_rec=$(secs "$t0" "$t1")
[ "$(count_at_t "$WORK/r-pgbr-sock")" = 0 ] || { echo "pgBackRest recovered past T" >&2; exit 1; }
as_pg "$PGBIN/pg_ctl" -D "$WORK/r-pgbr" -m immediate -w stop >/dev/null

log "WAL push: $PUSH_SEGS segments, one at a time, into fresh repositories"
segs=$WORK/segs
mkdir -p "$segs"
names=$(find "$REPO/wal" -name '????????????????????????' -printf '%f\n' | sort | tail -n "$PUSH_SEGS")
for n in $names; do "$SNAP" --repo "$REPO" wal fetch "$n" "$segs/$n"; done
chmod -R a+rX "$segs"
"$SNAP" --repo "$WORK/snap-push" init >/dev/null
owned "$WORK/snap-push"
t0=$(now)
for n in $names; do as_pg "$SNAP" --repo "$WORK/snap-push" wal push "$segs/$n"; done
t1=$(now)
snap_push=$(secs "$t0" "$t1")
as_pg pgbackrest --config="$WORK/pgbackrest-push.conf" --stanza=bench stanza-create
t0=$(now)
for n in $names; do as_pg pgbackrest --config="$WORK/pgbackrest-push.conf" --stanza=bench archive-push "$segs/$n"; done
t1=$(now)
pgbr_push=$(secs "$t0" "$t1")
# The asynchronous push reads ahead in pg_wal/archive_status of its pg1-path: a copy of
# the cluster's pg_control and PG_VERSION with the segments in its pg_wal stands in.
as_pg pgbackrest --config="$WORK/pgbackrest-push-async.conf" --stanza=bench stanza-create
apg=$WORK/async-pg
mkdir -p "$apg/global" "$apg/pg_wal/archive_status"
cp "$PGDATA/global/pg_control" "$apg/global/"
cp "$PGDATA/PG_VERSION" "$apg/"
for n in $names; do cp "$segs/$n" "$apg/pg_wal/"; touch "$apg/pg_wal/archive_status/$n.ready"; done
owned "$apg"
t0=$(now)
for n in $names; do
    as_pg pgbackrest --config="$WORK/pgbackrest-push-async.conf" --stanza=bench --pg1-path="$apg" \
        archive-push "$apg/pg_wal/$n"
done
t1=$(now)
pgbr_async=$(secs "$t0" "$t1")
seg_mb=$(( $(stat -c %s "$segs/$(echo "$names" | head -1)") / 1048576 ))
snap_wal=$(du -sb "$WORK/snap-push/wal" | cut -f1)
pgbr_wal=$(du -sb "$WORK/pgbr-push/archive" | cut -f1)
# Would chunking the segments dedup them? snap backs up the same segments as files.
"$SNAP" --repo "$WORK/snap-push" backup -q --json "$segs" >"$WORK/segs-backup.json"
chunked=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["bytes_added"])' "$WORK/segs-backup.json")

echo
echo "PostgreSQL $(psql -X -A -t -c 'SHOW server_version' postgres), pgbench scale $SCALE ($(psql -X -A -t -c "SELECT pg_size_pretty(pg_database_size('bench'))" postgres)), pgBackRest $(pgbackrest version | cut -d' ' -f2) (zstd), $(nproc) cores"
echo "night  churn s  WAL MB  MB/s  behind | snap s  snap stored MB | pgBackRest type  s  stored MB"
awk -F, 'NR > 1 { printf "%5s  %7s  %6s  %4s  %6s | %6s  %14.1f | %15s %5s  %9.1f\n",
    $1, $2, $3, $4, $5, $6, ($7 == "" ? 0 : $7 / 1048576), $8, $9, $10 / 1048576 }' "$CSV"
echo "recovery to T (a day's churn after the last base backup): snap ${snap_rec} s, pgBackRest ${pgbr_rec} s"
rate() { awk -v n="$PUSH_SEGS" -v s="$1" 'BEGIN { printf "%.1f seg/s, %.0f ms a push", n / s, 1000 * s / n }'; }
echo "WAL push of $PUSH_SEGS segments of ${seg_mb} MiB, one at a time: snap ${snap_push} s ($(rate "$snap_push"), $((snap_wal / 1048576)) MiB stored), pgBackRest ${pgbr_push} s ($(rate "$pgbr_push"), $((pgbr_wal / 1048576)) MiB stored), pgBackRest async ${pgbr_async} s ($(rate "$pgbr_async"))"
echo "the same segments chunked and deduplicated as files: $((chunked / 1048576)) MiB stored"
