#!/usr/bin/env bash
# pg_dedup.sh: what a week of daily PostgreSQL dumps costs in snap, restic and borg.
#
# What it measures
#   For each tool, how many bytes its repository grows by per daily backup of a
#   pgbench database that sees the same churn every day, as a share of the dump
#   size, and how long the backups take.
#   1. A throwaway PostgreSQL cluster (unix socket only, trust auth) with a
#      database `bench` made by `pgbench -i -s SCALE` (SCALE 20: ~300 MB of data).
#   2. Three fresh repositories: snap (defaults: zstd 3, 16 KiB "dump" chunks),
#      restic (defaults; 0.14+ makes a v2 repository, compression auto) and borg
#      (repokey, defaults: lz4, chunker buzhash,19,23,21,4095 = ~2 MiB chunks).
#   3. Day 0 .. DAYS, each day the same churn (day 0 included), by CHURN:
#        heavy (default): `pgbench -n -c CLIENTS -t CHURN_TX`, 4,000 transactions a
#                day, each updating a random account: an edit every ~25 KB of the
#                dump (a non-HOT update moves the row: two edit sites), so every
#                chunk of any tool changes daily. The worst case.
#        light: `pgbench -n -c CLIENTS -t CHURN_TX/10` (400 random updates), then
#                20 random accounts deleted and 5,000 appended; on day 4 a new
#                20,000-row table. The "modest daily change" of dump-dedup.md.
#      then
#        snap:   `snap backup --pg DSN --json` (snap runs pg_dump -Fd -Z0 itself);
#                records summary.bytes_added and the repository growth (du -sb);
#        pg_dump --format=directory --compress=0 into $WORK/dump (same path every
#                day, fresh directory, removed afterwards), timed on its own;
#        restic: `restic backup $WORK/dump`, repository growth (du -sb);
#        borg:   `borg create REPO::dayN $WORK/dump`, repository growth (du -sb).
#      The dump size is `du -sb $WORK/dump`.
#   4. A table: per day the dump size and, per tool, MB added and % of the dump;
#      day 0 (the first, full backup) apart, then days 1..DAYS and their average.
#      A second table gives the new data before compression (snap
#      bytes_added_raw, restic data_added, borg estimated), which shows the
#      deduplication itself: pgbench data compresses ~80x, so stored bytes alone
#      mostly measure compression. Then total repository sizes and total backup
#      wall times: snap's includes its own pg_dump, restic's and borg's do not,
#      and pg_dump alone is reported next to them.
#
# How to run (as root, or as a user that can `runuser -u postgres`):
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/pg_dedup.sh
# Knobs (environment): WORK (default /tmp/pg-dedup-bench, wiped first),
#   SNAP (default <repo>/target/release/snap), PGBIN, RESTIC, BORG, SCALE (20),
#   DAYS (7), CHURN (heavy), CHURN_TX (2000 transactions per client per day),
#   CLIENTS (2).
#   Needs ~1 GB free in WORK at SCALE 20; takes ~2.5 minutes on 2 cores.
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
CHURN=${CHURN:-heavy}
CHURN_TX=${CHURN_TX:-2000}
CLIENTS=${CLIENTS:-2}

export PATH="$PGBIN:$PATH"
for t in "$SNAP" "$RESTIC" "$BORG"; do
    [ -x "$t" ] || { echo "not found or not executable: $t" >&2; exit 1; }
done

. "$HERE/benches/lib.sh"
tsv_row() { local IFS=$'\t'; echo "$*"; }

# ---------------------------------------------------------------- work dir, PG
rm -rf "$WORK"
mkdir -p "$WORK"
start_pg
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

# churn DAY: the day's changes to database bench (see CHURN above).
churn() {
    case $CHURN in
    heavy)
        log "day $1: pgbench -n -c $CLIENTS -t $CHURN_TX"
        pgbench -n -c "$CLIENTS" -t "$CHURN_TX" bench >>"$WORK/pgbench.log" 2>&1
        ;;
    light)
        log "day $1: pgbench -n -c $CLIENTS -t $((CHURN_TX / 10)), 20 deletes, 5,000 inserts"
        pgbench -n -c "$CLIENTS" -t "$((CHURN_TX / 10))" bench >>"$WORK/pgbench.log" 2>&1
        psql -qX -v ON_ERROR_STOP=1 -d bench >>"$WORK/pgbench.log" 2>&1 <<'SQL'
DELETE FROM pgbench_accounts
 WHERE aid IN (SELECT (random() * 2000000)::int FROM generate_series(1, 20));
INSERT INTO pgbench_accounts
SELECT m + g, 1 + (m + g) / 100000, 0, ''
  FROM (SELECT max(aid) AS m FROM pgbench_accounts) x, generate_series(1, 5000) g;
SQL
        if [ "$1" = 4 ]; then
            psql -qX -v ON_ERROR_STOP=1 -d bench -c "CREATE TABLE audit AS
                SELECT g AS id, md5(g::text) AS h, now() AS t FROM generate_series(1, 20000) g" \
                >>"$WORK/pgbench.log" 2>&1
        fi
        ;;
    *) echo "CHURN must be heavy or light, not $CHURN" >&2; exit 1 ;;
    esac
}

# ---------------------------------------------------------------- the days
TSV=$WORK/days.tsv
tsv_row day dump_bytes snap_added snap_growth restic_growth borg_growth \
    snap_s pg_dump_s restic_s borg_s snap_raw restic_raw borg_raw_est >"$TSV"

for day in $(seq 0 "$DAYS"); do
    churn "$day"

    # snap: dumps the database itself.
    before=$(bytes "$R_SNAP")
    t0=$(now)
    "$SNAP" --repo "$R_SNAP" backup --pg "$DSN" --json >"$WORK/snap-day$day.json" 2>>"$WORK/snap.log"
    snap_s=$(secs "$t0" "$(now)")
    snap_growth=$(($(bytes "$R_SNAP") - before))
    snap_added=$(jq -r .summary.bytes_added "$WORK/snap-day$day.json")
    snap_raw=$(jq -r .summary.bytes_added_raw "$WORK/snap-day$day.json")

    # The same kind of dump for restic and borg, at the same path every day.
    rm -rf "$DUMP"
    t0=$(now)
    pg_dump --format=directory --compress=0 -f "$DUMP" bench
    dump_s=$(secs "$t0" "$(now)")
    dump_bytes=$(bytes "$DUMP")

    before=$(bytes "$R_RESTIC")
    t0=$(now)
    "$RESTIC" --repo "$R_RESTIC" backup --json "$DUMP" >"$WORK/restic-day$day.json" 2>>"$WORK/restic.log"
    restic_s=$(secs "$t0" "$(now)")
    restic_growth=$(($(bytes "$R_RESTIC") - before))
    restic_raw=$(jq -r 'select(.message_type == "summary") | .data_added' "$WORK/restic-day$day.json")

    before=$(bytes "$R_BORG")
    t0=$(now)
    "$BORG" create --json "$R_BORG::day$day" "$DUMP" >"$WORK/borg-day$day.json" 2>>"$WORK/borg.log"
    borg_s=$(secs "$t0" "$(now)")
    borg_growth=$(($(bytes "$R_BORG") - before))
    # borg reports only compressed new bytes; scale the archive's original size by
    # the share of its compressed bytes that were new.
    borg_raw=$(jq -r '.archive.stats | if .compressed_size > 0
        then (.original_size * .deduplicated_size / .compressed_size | floor) else 0 end' \
        "$WORK/borg-day$day.json")
    rm -rf "$DUMP"

    tsv_row "$day" "$dump_bytes" "$snap_added" "$snap_growth" "$restic_growth" \
        "$borg_growth" "$snap_s" "$dump_s" "$restic_s" "$borg_s" \
        "$snap_raw" "$restic_raw" "$borg_raw" >>"$TSV"
    log "  dump $dump_bytes B; added: snap $snap_added (du $snap_growth), restic $restic_growth, borg $borg_growth"
done

# ---------------------------------------------------------------- report
# table TITLE COL... : per-day MB and % of the dump for the given days.tsv columns
# (1-based), day 0 apart, then days 1..DAYS and their average.
table() {
    local title=$1; shift
    awk -F'\t' -v title="$title" -v cols="$*" '
        function row(label, v,   i) {
            printf "%-9s %8.1f", label, v[2] / 1048576
            for (i = 1; i <= nc; i++)
                printf " | %8.1f %6.2f%%", v[c[i]] / 1048576, 100 * v[c[i]] / v[2]
            printf "\n"
        }
        NR == 1 { nc = split(cols, c, " "); for (i = 1; i <= nc; i++) name[i] = $c[i]; next }
        $1 == 0 { split($0, day0, "\t"); next }
        { n++; line[n] = $0; for (i = 2; i <= NF; i++) sum[i] += $i }
        END {
            print title
            printf "%-9s %8s", "day", "dump MB"
            for (i = 1; i <= nc; i++) printf " | %17s", name[i]
            printf "\n%-9s %8s", "", ""
            for (i = 1; i <= nc; i++) printf " | %8s %7s", "MB", "% dump"
            printf "\n"
            row("0 (full)", day0)
            print "---------"
            for (i = 1; i <= n; i++) { split(line[i], v, "\t"); row(i, v) }
            print "---------"
            for (i in sum) avg[i] = sum[i] / n
            row("avg 1-" n, avg)
        }' "$TSV"
}

{
    echo "pg_dedup: pgbench -s $SCALE, day 0 + $DAYS days, CHURN=$CHURN (CHURN_TX $CHURN_TX, $CLIENTS clients)"
    echo "  $("$SNAP" --version), $("$RESTIC" version | cut -d' ' -f1-2), $("$BORG" --version)"
    echo "  borg defaults: compression lz4, chunker buzhash,19,23,21,4095 (~2 MiB chunks)"
    echo
    table "Stored bytes added per backup (snap_added = summary.bytes_added; *_growth = du -sb of the repository)" 3 4 5 6
    echo
    table "New data before compression (snap bytes_added_raw, restic data_added, borg ~ original x dedup/compressed)" 11 12 13
    echo
    echo "Total repository size after $((DAYS + 1)) backups (du -sb):"
    for r in snap:"$R_SNAP" restic:"$R_RESTIC" borg:"$R_BORG"; do
        awk -v n="${r%%:*}" -v b="$(bytes "${r#*:}")" 'BEGIN { printf "  %-7s %9.1f MB\n", n, b / 1048576 }'
    done
    echo
    echo "Backup wall time, seconds (snap includes its own pg_dump; restic/borg do not):"
    awk -F'\t' '
        function row(label, s, p, r, b) {
            printf "  %-12s %8.1f %8.1f %8.1f %8.1f %15.1f %13.1f\n", label, s, p, r, b, p + r, p + b
        }
        NR == 1 { next }
        $1 == 0 { s0 = $7; p0 = $8; r0 = $9; b0 = $10; next }
        { s += $7; p += $8; r += $9; b += $10; n++ }
        END {
            printf "  %-12s %8s %8s %8s %8s %15s %13s\n", "", "snap", "pg_dump", "restic", "borg",
                "pg_dump+restic", "pg_dump+borg"
            row("day 0", s0, p0, r0, b0)
            row("days 1-" n, s, p, r, b)
            row("total", s0 + s, p0 + p, r0 + r, b0 + b)
        }' "$TSV"
    echo
    echo "Raw numbers: $TSV"
} | tee "$WORK/summary.txt"
