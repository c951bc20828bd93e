#!/usr/bin/env bash
# drill.sh: what a restore drill costs next to the restores it proves.
#
# What it measures
#   A PostgreSQL database of about 1 GiB (`pgbench -i -s $SCALE`, default 70: 7 M
#   account rows) in a throw-away cluster, backed up by `snap backup --pg`, and a file
#   tree (FILES_MB of incompressible files, default 300) backed up by `snap backup`.
#   Then, REPS times each (medians in the table):
#   - database: `snap drill` (its recorded RTO, and the whole command with the scratch
#     cluster's start); `snap restore --pg` into a new database of the running cluster;
#     `pg_restore` of a `pg_dump -Fd` directory into a new database; `psql -f` of the
#     plain `pg_dump` into a new database. The last two are the restores an admin would
#     otherwise run from a nightly dump file.
#   - files: `snap drill` (RTO) against `snap restore` of the same snapshot.
#   Every cluster here runs with fsync off, the drill's scratch cluster too.
#
# How to run (root or a user that may run PostgreSQL's binaries)
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/drill.sh
# Knobs: WORK (default /tmp/drill-bench-run, wiped first), SNAP, SCALE, FILES_MB, REPS (3),
#   PGBIN (default: the newest /usr/lib/postgresql/*/bin). Needs ~6 GB; ~15 minutes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/drill-bench-run}
SNAP=${SNAP:-$HERE/target/release/snap}
SCALE=${SCALE:-70}
FILES_MB=${FILES_MB:-300}
REPS=${REPS:-3}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
. "$HERE/benches/lib.sh"

rm -rf "$WORK"
mkdir -p "$WORK/files"
start_pg
as_pg "$PGBIN/psql" -q -c "ALTER SYSTEM SET fsync = off" -c "SELECT pg_reload_conf()" >/dev/null
unset SNAP_REPO SNAP_PASSWORD SNAP_PASSWORD_FILE
export SNAP_CACHE_DIR=$WORK/cache
log "pgbench -i -s $SCALE"
as_pg "$PGBIN/createdb" bench
as_pg "$PGBIN/pgbench" -q -i -s "$SCALE" bench >"$WORK/pgbench.log" 2>&1
for i in $(seq 1 "$FILES_MB"); do random_bytes 1000000 "file $i" >"$WORK/files/f$i"; done
"$SNAP" --repo "$WORK/repo" init >/dev/null
"$SNAP" --repo "$WORK/repo" backup -q --pg "host=$SOCK port=$PGPORT user=postgres dbname=bench" >/dev/null
"$SNAP" --repo "$WORK/frepo" init >/dev/null
"$SNAP" --repo "$WORK/frepo" backup -q "$WORK/files" >/dev/null
mkdir -p "$WORK/dumps"
if [ "$(id -u)" = 0 ]; then chown postgres: "$WORK/dumps"; fi
as_pg "$PGBIN/pg_dump" -Fd -Z0 -f "$WORK/dumps/bench.dir" bench
as_pg "$PGBIN/pg_dump" -Fp -f "$WORK/dumps/bench.sql" bench
db_size=$(as_pg "$PGBIN/psql" -Atc "SELECT pg_database_size('bench')" bench)

# timed NAME CMD...: appends the wall seconds of CMD to $WORK/NAME.
timed() {
    local name=$1 t0 t1
    shift
    t0=$(now)
    "$@" >"$WORK/out" 2>"$WORK/err" || { log "$name failed:"; tail -5 "$WORK/err" >&2; exit 1; }
    t1=$(now)
    secs "$t0" "$t1" >>"$WORK/$name"
    echo >>"$WORK/$name"
}
fresh_db() { as_pg "$PGBIN/dropdb" --if-exists r && as_pg "$PGBIN/createdb" r; }
rto() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f" % sum(s["seconds"] for g in d["drills"] for s in g["sources"]))' "$WORK/out"; }

for r in $(seq 1 "$REPS"); do
    log "rep $r"
    timed db_drill "$SNAP" --repo "$WORK/repo" drill --json
    rto >>"$WORK/db_rto"
    fresh_db
    timed db_restore "$SNAP" --repo "$WORK/repo" restore latest --pg "host=$SOCK port=$PGPORT user=postgres dbname=r"
    fresh_db
    timed db_pg_restore as_pg "$PGBIN/pg_restore" -d r "$WORK/dumps/bench.dir"
    fresh_db
    timed db_psql as_pg "$PGBIN/psql" -q -X -v ON_ERROR_STOP=1 -f "$WORK/dumps/bench.sql" r
    timed files_drill "$SNAP" --repo "$WORK/frepo" drill --json
    rto >>"$WORK/files_rto"
    rm -rf "$WORK/restore"
    timed files_restore "$SNAP" --repo "$WORK/frepo" restore latest --target "$WORK/restore"
    rm -rf "$WORK/restore"
done

med() { median <"$WORK/$1"; }
echo "Database: pgbench scale $SCALE, $((db_size / 1048576)) MiB on disk. Files: $FILES_MB MB. Medians of $REPS, seconds."
echo
echo "| what | drill RTO | drill command | snap restore | pg_restore -Fd | psql -f plain |"
echo "|---|---|---|---|---|---|"
echo "| database | $(med db_rto) | $(med db_drill) | $(med db_restore) | $(med db_pg_restore) | $(med db_psql) |"
echo "| files | $(med files_rto) | $(med files_drill) | $(med files_restore) | | |"
echo
echo "All runs: drill RTO $(paste -sd' ' "$WORK/db_rto"), snap restore $(grep . "$WORK/db_restore" | paste -sd' '), pg_restore $(grep . "$WORK/db_pg_restore" | paste -sd' '), psql $(grep . "$WORK/db_psql" | paste -sd' '); files drill RTO $(paste -sd' ' "$WORK/files_rto"), restore $(grep . "$WORK/files_restore" | paste -sd' ')"
rm -rf "$WORK"
