#!/usr/bin/env bash
# history.sh: does snap's nightly backup slow down as its history grows? DAYS daily
# backups (default 60) of a PostgreSQL dump plus a file tree under the same churn every
# day, so that the input stays the same size and changes by the same amount: any growth in
# the daily cost comes from the repository's history (snapshots, packs, index rows).
#
# The workload (the shape of ../shared/bench's full mode, with its growth taken out)
#   db     pgbench scale SCALE (default 50: a 0.5 GB plain dump), its balances made random
#          and a day of churn run before day 1 (see below). Each day: pgbench -n
#          -c 2 -j 2 -t TX (default 25000 per client: ~1 % of the accounts rewritten), a
#          new layer table (2 % of the accounts), the layer of three days before thinned
#          by half, that of six days before dropped, pgbench_history cut back to its
#          newest 3 days of rows, VACUUM. `pg_dump -Fp` into a file that snap reads with
#          --command 'cat FILE', so pg_dump's time is not snap's.
#   files  FS_MB (default 1024) of real files from /usr, picked by a seeded shuffle.
#          Each day REPLACE_PCT % of the files (default 1) are deleted and as many new
#          files take their place: each a copy of a deleted one with one byte in every KiB
#          changed (new chunks, the same size and compressibility), under new/dayNN/; and
#          MODIFY_PCT % (default 0.3) get a 64 KiB region in the middle rewritten.
#
# What it measures: each day's `snap backup` under /usr/bin/time (wall, user, sys, peak
# RSS), the repository's size, pack count and index cache size after it. The verdict is
# the issue's: the mean of the last 7 days against day 2, for wall time and peak RSS
# (goal: within 1.2x). PERF_DAYS="3 50" also records `perf record -g` of those days'
# backups into $WORK/perf-dayN.data (which slows those days: keep day 2 and the last
# week out of it).
#
# How to run (about 30 minutes for 60 days on 2 cores; keep the machine quiet)
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/history.sh
# Knobs: WORK (default /tmp/history-bench, wiped first), SNAP, DAYS, SCALE, TX, FS_MB,
#   REPLACE_PCT, MODIFY_PCT, PERF_DAYS, FORGET (a `snap forget` policy run after each
#   backup, e.g. "--keep-daily 14 --prune"; default none: every snapshot is kept).
# Output: $WORK/history.csv (one row a day); on stdout every day, weekly means and the
# verdict.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/history-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
DAYS=${DAYS:-60}
SCALE=${SCALE:-50}
TX=${TX:-25000}
FS_MB=${FS_MB:-1024}
REPLACE_PCT=${REPLACE_PCT:-1}
MODIFY_PCT=${MODIFY_PCT:-0.3}
PERF_DAYS=${PERF_DAYS:-}
FORGET=${FORGET:-}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
. "$HERE/benches/lib.sh"

rm -rf "$WORK"
mkdir -p "$WORK"
unset SNAP_REPO SNAP_PASSWORD SNAP_PASSWORD_FILE
# The churn's commits need not be durable (the dump is the same): pgbench runs faster.
export SNAP_CACHE_DIR=$WORK/cache PATH=$PGBIN:$PATH PGOPTIONS='-c synchronous_commit=off'
REPO=$WORK/repo FS=$WORK/fs DUMP=$WORK/dump.sql CSV=$WORK/history.csv
start_pg
createdb ngw
log "pgbench -i -s $SCALE, balances made random, one day of churn before day 1"
pgbench -q -i -s "$SCALE" ngw >"$WORK/pgbench-init.log" 2>&1
# pgbench starts every balance at 0 and each day's updates make a few more random, so
# its dump compresses worse every day for years (a day's new chunks took 18 MB on day 3
# and 34 MB on day 60 of the same 0.5 GB): random balances from the start, and a day of
# churn so that day 2's updates land in free space as every later day's do.
psql -q -v ON_ERROR_STOP=1 ngw -c "UPDATE pgbench_accounts SET abalance = (random() * 20000)::int - 10000" \
    -c "VACUUM FULL pgbench_accounts"
pgbench -n -c 2 -j 2 -t "$TX" ngw >"$WORK/pgbench.log" 2>&1
psql -q ngw -c VACUUM

log "seeding $FS_MB MB of files from /usr"
mkdir -p "$FS"
find /usr/lib /usr/share /usr/bin -type f -readable -size +0 -printf '%s\t%p\n' 2>/dev/null |
    sort -t$'\t' -k2 |
    shuf --random-source=<(yes 7) |
    awk -F'\t' -v max=$((FS_MB * 1000000)) '!full { t += $1; if (t > max) full = 1; else print $2 }' >"$WORK/seed.list"
tar -cf - --verbatim-files-from -T "$WORK/seed.list" 2>/dev/null | tar -xf - -C "$FS"

pg_day() {
    local d=$1 n
    n=$(printf %02d "$d")
    pgbench -n -c 2 -j 2 -t "$TX" ngw >"$WORK/pgbench.log" 2>&1
    {
        echo "CREATE TABLE layer_day$n AS SELECT aid AS fid, bid, abalance AS value,"
        echo "  md5(aid::text || '$d') AS attr FROM pgbench_accounts WHERE aid % 50 = $((d % 50));"
        if [ "$d" -ge 5 ]; then echo "DELETE FROM layer_day$(printf %02d $((d - 3))) WHERE fid % 2 = 0;"; fi
        if [ "$d" -ge 8 ]; then echo "DROP TABLE layer_day$(printf %02d $((d - 6)));"; fi
        echo "DELETE FROM pgbench_history WHERE mtime < (SELECT mtime FROM pgbench_history"
        echo "  ORDER BY mtime DESC OFFSET $((6 * TX)) LIMIT 1);"
        echo "VACUUM;"
    } | psql -q -v ON_ERROR_STOP=1 ngw
}

files_day() {
    python3 - "$FS" "$1" "$REPLACE_PCT" "$MODIFY_PCT" <<'EOF'
import os, random, sys
fs, day, replace_pct, modify_pct = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rng = random.Random(day)
files = sorted(os.path.join(d, f) for d, _, fs_ in os.walk(fs) for f in fs_)
new_dir = os.path.join(fs, "new", "day%02d" % day)
os.makedirs(new_dir, exist_ok=True)
for k, p in enumerate(rng.sample(files, max(1, round(len(files) * replace_pct / 100)))):
    data = bytearray(open(p, "rb").read())
    for i in range(rng.randrange(1024), len(data), 1024):
        data[i] = (data[i] + 1 + rng.randrange(255)) % 256
    os.unlink(p)
    with open(os.path.join(new_dir, "f%d-%s" % (k, os.path.basename(p))), "wb") as f:
        f.write(data)
for p in rng.sample(files, max(1, round(len(files) * modify_pct / 100))):
    if not os.path.exists(p):
        continue
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.seek(max(0, size // 2 - 32768))
        f.write(rng.randbytes(min(65536, size)))
EOF
}

"$SNAP" --repo "$REPO" init >/dev/null
echo "day,wall_s,user_s,sys_s,rss_kb,dump_bytes,fs_bytes,files,repo_bytes,packs,index_bytes,snapshots" >"$CSV"
for d in $(seq 1 "$DAYS"); do
    if [ "$d" -gt 1 ]; then
        pg_day "$d"
        files_day "$d"
    fi
    pg_dump -Fp ngw >"$DUMP"
    backup=("$SNAP" --repo "$REPO" backup -q "$FS" --command "cat $DUMP" --as db/ngw.sql)
    sync
    if [[ " $PERF_DAYS " == *" $d "* ]]; then
        backup=(perf record -q -g -o "$WORK/perf-day$d.data" -- "${backup[@]}")
    fi
    /usr/bin/time -f "%e %U %S %M" -o "$WORK/t" "${backup[@]}" >/dev/null
    [ -z "$FORGET" ] || "$SNAP" --repo "$REPO" forget -q $FORGET >/dev/null
    read -r wall user sys rss <"$WORK/t"
    snapshots=$(find "$REPO/snapshots" -type f | wc -l)
    packs=$(find "$REPO/packs" -type f | wc -l)
    index=$(du -cb "$SNAP_CACHE_DIR"/*/*/index.sqlite* | tail -1 | cut -f1)
    echo "$d,$wall,$user,$sys,$rss,$(bytes "$DUMP"),$(bytes "$FS"),$(find "$FS" -type f | wc -l),$(bytes "$REPO"),$packs,$index,$snapshots" >>"$CSV"
    log "day $d: $wall s wall, $user+$sys s CPU, $((rss / 1024)) MiB, repo $(($(bytes "$REPO") >> 20)) MiB, $packs packs"
done

python3 - "$CSV" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def f(r, k): return float(r[k])
def mean(rs, k): return sum(f(r, k) for r in rs) / len(rs)
last = rows[-7:]
d2 = rows[1]
print("day  wall s  CPU s  sys s  RSS MiB  repo MiB  packs  index MiB  dump MB  files MB  files")
for r in rows:
    print("%3s %7.2f %6.2f %6.2f %8.0f %9.0f %6s %10.1f %8.0f %9.0f %6s" % (
        r["day"], f(r, "wall_s"), f(r, "user_s") + f(r, "sys_s"), f(r, "sys_s"),
        f(r, "rss_kb") / 1024, f(r, "repo_bytes") / 2**20, r["packs"],
        f(r, "index_bytes") / 2**20, f(r, "dump_bytes") / 1e6, f(r, "fs_bytes") / 1e6, r["files"]))
print()
print("weekly means: wall s, CPU s, peak RSS MiB, stored MiB a day")
for a in range(1, len(rows), 7):
    w = rows[a:a + 7]
    grown = (f(w[-1], "repo_bytes") - f(rows[a - 1], "repo_bytes")) / len(w) / 2**20
    print("  days %2d-%2d %6.2f %6.2f %6.0f %6.1f" % (
        a + 1, a + len(w), mean(w, "wall_s"), mean(w, "user_s") + mean(w, "sys_s"),
        mean(w, "rss_kb") / 1024, grown))
print()
print("last %d days' mean against day 2 (goal: within 1.2x)" % len(last))
for name, k, unit in (("wall s", "wall_s", 1), ("user CPU s", "user_s", 1), ("sys CPU s", "sys_s", 1),
                      ("peak RSS MiB", "rss_kb", 1024)):
    print("  %-12s day 2 %7.2f   last %7.2f   %.2fx" % (name, f(d2, k) / unit, mean(last, k) / unit, mean(last, k) / f(d2, k)))
EOF
