#!/usr/bin/env bash
# pg_dedup.sh: what a week of daily PostgreSQL dumps costs in snap, restic and borg.
#
# What it measures
#   For each tool, how many bytes its repository grows by per daily backup of a
#   pgbench database that sees the same churn every day, as a share of the dump
#   size, and how long the backups take.
#   1. A throwaway PostgreSQL cluster (unix socket only, trust auth) with a
#      database `bench` made by `pgbench -i -s SCALE` (SCALE 20: ~300 MB of data).
#   2. Three fresh repositories: snap (defaults: zstd 3, 32 KiB "dump" chunks),
#      restic (defaults; 0.14+ makes a v2 repository, compression auto) and borg
#      (repokey, defaults: lz4, chunker buzhash,19,23,21,4095 = ~2 MiB chunks).
#   3. Day 0 .. DAYS, each day: `pgbench -n -c 2 -t CHURN_TX` (the same churn
#      every day, day 0 included), then
#        snap:   `snap backup --pg DSN --json` (snap runs pg_dump -Fd -Z0 itself);
#                records summary.bytes_added and the repository growth (du -sb);
#        pg_dump --format=directory --compress=0 into $WORK/dump (same path every
#                day, fresh directory, removed afterwards), timed on its own;
#        restic: `restic backup $WORK/dump`, repository growth (du -sb);
#        borg:   `borg create REPO::dayN $WORK/dump`, repository growth (du -sb).
#      The dump size is `du -sb $WORK/dump`.
#   4. A table: per day the dump size and, per tool, MB added and % of the dump;
#      day 0 (the first, full backup) apart, then days 1..DAYS and their average;
#      then total repository sizes and total backup wall times. snap's time
#      includes its own pg_dump; restic's and borg's do not, and pg_dump alone is
#      reported next to them.
#
# How to run (as root, or as a user that can `runuser -u postgres`):
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/pg_dedup.sh
# Knobs (environment): WORK (default /tmp/pg-dedup-bench, wiped first),
#   SNAP (default <repo>/target/release/snap), PGBIN, RESTIC, BORG, SCALE (20),
#   DAYS (7), CHURN_TX (2000 transactions per client per day), CLIENTS (2).
#   Needs ~3 GB free in WORK at SCALE 20; takes a few minutes on 2 cores.
# Output: the tables on stdout, also in $WORK/summary.txt; raw per-day numbers
#   in $WORK/days.tsv; tool output in $WORK/*.log. The cluster is stopped on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/pg-dedup-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
RESTIC=${RESTIC:-$(command -v restic || echo /tmp/benchtools/bin/restic)}
BORG=${BORG:-$(command -v borg || echo /tmp/benchtools/bin/borg)}
SCALE=${SCALE:-20}
DAYS=${DAYS:-7}
CHURN_TX=${CHURN_TX:-2000}
CLIENTS=${CLIENTS:-2}

export PATH="$PGBIN:$PATH"
for t in "$SNAP" "$RESTIC" "$BORG"; do
    [ -x "$t" ] || { echo "not found or not executable: $t" >&2; exit 1; }
done

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
bytes() { du -sb "$1" | cut -f1; }

# Run a command as the postgres user when we are root (PostgreSQL refuses root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# ---------------------------------------------------------------- work dir, PG
rm -rf "$WORK"
mkdir -p "$WORK"/{pgdata,sock}
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
if [ "$(id -u)" = 0 ]; then chown postgres: "$PGDATA" "$SOCK"; fi

export PGHOST=$SOCK PGPORT=5432 PGUSER=postgres
unset PGDATABASE PGPASSWORD
DSN="host=$SOCK port=$PGPORT user=postgres dbname=bench"

# Repositories are always passed explicitly; drop any from the environment.
unset SNAP_REPO RESTIC_REPOSITORY BORG_REPO
R_SNAP=$WORK/repo-snap
R_RESTIC=$WORK/repo-restic
R_BORG=$WORK/repo-borg
DUMP=$WORK/dump
# Keep the tools' caches and keys inside WORK, away from the user's own.
export RESTIC_PASSWORD=x RESTIC_CACHE_DIR=$WORK/cache-restic
export BORG_PASSPHRASE=x BORG_BASE_DIR=$WORK/borg-base

cleanup() {
    if [ -f "$PGDATA/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

log "initdb + start PostgreSQL ($PGDATA, socket $SOCK)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-c listen_addresses='' -c unix_socket_directories=$SOCK -c port=$PGPORT" start >/dev/null

createdb bench
log "pgbench -i -s $SCALE"
t0=$(now)
pgbench -i -s "$SCALE" -q bench >"$WORK/pgbench-init.log" 2>&1
log "  done in $(secs "$t0" "$(now)") s; database $(psql -qAtX -d bench -c \
    "SELECT pg_size_pretty(pg_database_size('bench'))")"

# ---------------------------------------------------------------- repositories
log "init repositories"
"$SNAP" --repo "$R_SNAP" init >"$WORK/snap.log" 2>&1
"$RESTIC" init --repo "$R_RESTIC" >"$WORK/restic.log" 2>&1
"$BORG" init --encryption=repokey "$R_BORG" >"$WORK/borg.log" 2>&1

# ---------------------------------------------------------------- the days
TSV=$WORK/days.tsv
printf 'day\tdump_bytes\tsnap_bytes_total\tsnap_added\tsnap_growth\trestic_growth\tborg_growth\tsnap_s\tpg_dump_s\trestic_s\tborg_s\n' >"$TSV"

for day in $(seq 0 "$DAYS"); do
    log "day $day: pgbench -n -c $CLIENTS -t $CHURN_TX"
    pgbench -n -c "$CLIENTS" -t "$CHURN_TX" bench >>"$WORK/pgbench.log" 2>&1

    # snap: dumps the database itself.
    before=$(bytes "$R_SNAP")
    t0=$(now)
    "$SNAP" --repo "$R_SNAP" backup --pg "$DSN" --json >"$WORK/snap-day$day.json" 2>>"$WORK/snap.log"
    snap_s=$(secs "$t0" "$(now)")
    snap_growth=$(($(bytes "$R_SNAP") - before))
    snap_added=$(jq -r .summary.bytes_added "$WORK/snap-day$day.json")
    snap_total=$(jq -r .summary.bytes_total "$WORK/snap-day$day.json")

    # The same kind of dump for restic and borg, at the same path every day.
    rm -rf "$DUMP"
    t0=$(now)
    pg_dump --format=directory --compress=0 -f "$DUMP" bench
    dump_s=$(secs "$t0" "$(now)")
    dump_bytes=$(bytes "$DUMP")

    before=$(bytes "$R_RESTIC")
    t0=$(now)
    "$RESTIC" --repo "$R_RESTIC" backup "$DUMP" >>"$WORK/restic.log" 2>&1
    restic_s=$(secs "$t0" "$(now)")
    restic_growth=$(($(bytes "$R_RESTIC") - before))

    before=$(bytes "$R_BORG")
    t0=$(now)
    "$BORG" create --stats "$R_BORG::day$day" "$DUMP" >>"$WORK/borg.log" 2>&1
    borg_s=$(secs "$t0" "$(now)")
    borg_growth=$(($(bytes "$R_BORG") - before))
    rm -rf "$DUMP"

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$day" "$dump_bytes" "$snap_total" \
        "$snap_added" "$snap_growth" "$restic_growth" "$borg_growth" \
        "$snap_s" "$dump_s" "$restic_s" "$borg_s" >>"$TSV"
    log "  dump $dump_bytes B; added: snap $snap_added (du $snap_growth), restic $restic_growth, borg $borg_growth"
done

# ---------------------------------------------------------------- report
{
    echo "pg_dedup: pgbench -s $SCALE, $DAYS days of pgbench -n -c $CLIENTS -t $CHURN_TX"
    echo "  $("$SNAP" --version), $("$RESTIC" version | cut -d' ' -f1-2), $("$BORG" --version)"
    echo "  borg defaults: compression lz4, chunker buzhash,19,23,21,4095"
    echo "  snap added = summary.bytes_added; every other 'added' = repository growth (du -sb)"
    echo
    awk -F'\t' -v days="$DAYS" '
        function mb(b) { return b / 1048576 }
        function pct(b, d) { return 100 * b / d }
        function row(label, d, sa, sg, rg, bg) {
            printf "%-8s %9.1f | %8.1f %6.2f%% | %8.1f %6.2f%% | %8.1f %6.2f%% | %8.1f %6.2f%%\n",
                label, mb(d), mb(sa), pct(sa, d), mb(sg), pct(sg, d),
                mb(rg), pct(rg, d), mb(bg), pct(bg, d)
        }
        NR == 1 { next }
        {
            if ($1 == 0) { day0 = $0; next }
            lines[++n] = $0
            d += $2; sa += $4; sg += $5; rg += $6; bg += $7
        }
        END {
            printf "%-8s %9s | %17s | %17s | %17s | %17s\n", "day", "dump MB",
                "snap added", "snap repo du", "restic repo du", "borg repo du"
            printf "%-8s %9s | %8s %7s | %8s %7s | %8s %7s | %8s %7s\n", "", "",
                "MB", "%dump", "MB", "%dump", "MB", "%dump", "MB", "%dump"
            split(day0, f, "\t"); row("0 (full)", f[2], f[4], f[5], f[6], f[7])
            print "---------"
            for (i = 1; i <= n; i++) { split(lines[i], f, "\t"); row(f[1], f[2], f[4], f[5], f[6], f[7]) }
            print "---------"
            row("avg 1-" days, d / n, sa / n, sg / n, rg / n, bg / n)
        }' "$TSV"
    echo
    echo "Total repository size after $((DAYS + 1)) backups (du -sb):"
    for r in snap:"$R_SNAP" restic:"$R_RESTIC" borg:"$R_BORG"; do
        awk -v n="${r%%:*}" -v b="$(bytes "${r#*:}")" 'BEGIN { printf "  %-7s %9.1f MB\n", n, b / 1048576 }'
    done
    echo
    echo "Backup wall time, seconds (snap includes its own pg_dump; restic/borg do not):"
    awk -F'\t' '
        NR == 1 { next }
        $1 == 0 { s0 = $8; p0 = $9; r0 = $10; b0 = $11; next }
        { s += $8; p += $9; r += $10; b += $11; n++ }
        END {
            printf "  %-12s %8s %8s %8s %8s %15s %13s\n", "", "snap", "pg_dump", "restic", "borg",
                "pg_dump+restic", "pg_dump+borg"
            printf "  %-12s %8.1f %8.1f %8.1f %8.1f %15.1f %13.1f\n", "day 0", s0, p0, r0, b0, p0 + r0, p0 + b0
            printf "  %-12s %8.1f %8.1f %8.1f %8.1f %15.1f %13.1f\n", "days 1-" n, s, p, r, b, p + r, p + b
            printf "  %-12s %8.1f %8.1f %8.1f %8.1f %15.1f %13.1f\n", "total", s0 + s, p0 + p, r0 + r, b0 + b,
                p0 + p + r0 + r, p0 + p + b0 + b
        }' "$TSV"
    echo
    echo "Raw numbers: $TSV"
} | tee "$WORK/summary.txt"
