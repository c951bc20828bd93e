#!/usr/bin/env bash
# command_overhead.sh: what `snap backup --command 'pg_dump ...'` costs over the dump
# command alone.
#
# What it measures
#   The target is "with --command, at most 1.3x the time of the dump command alone":
#   snap's chunking, hashing, lookups and the file walk should hide behind pg_dump.
#   1. A throwaway PostgreSQL cluster with `pgbench -i -s SCALE` (50: a ~500 MB plain
#      dump, the full mode of ../shared/bench).
#   2. A first backup (plain pg_dump through --command, plus the file tree FS) seeds
#      the repository.
#   3. RUNS interleaved pairs, nothing changing in between (the no-op case, where snap
#      does least and pg_dump most of the work):
#        P: `pg_dump -Fp` into a file, as ../shared/bench times its pg_dump row;
#        S: `snap backup --command 'pg_dump -Fp' --as db/bench.sql FS`.
#      Each under /usr/bin/time: wall, user, sys (S includes its pg_dump child).
#   A pgbench day (most dump chunks new) is measured by ../shared/bench itself with
#   SNAP_COMMAND=live (see benches/results/command-20261122.md).
#
# How to run (as root, or as a user that can `runuser -u postgres`):
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/command_overhead.sh
# Knobs: WORK (default /tmp/command-overhead, wiped first), SNAP, PGBIN, SCALE (50),
#   RUNS (8), FS (default "/usr/share /usr/lib/x86_64-linux-gnu": ~1.3 GB, 47k files).
#   Needs ~3 GB free in WORK; takes ~3 minutes on 2 cores.
# Output: a table of the pairs with each ratio, then the median ratio and the ratio of
#   the summed wall times.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/command-overhead}
SNAP=${SNAP:-$HERE/target/release/snap}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
SCALE=${SCALE:-50}
RUNS=${RUNS:-8}
FS=${FS:-/usr/share /usr/lib/x86_64-linux-gnu}
. "$HERE/benches/lib.sh"

rm -rf "$WORK"
mkdir -p "$WORK"
unset SNAP_REPO SNAP_PASSWORD SNAP_PASSWORD_FILE
start_pg
as_pg "$PGBIN/createdb" bench
log "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -q -i -s "$SCALE" bench >"$WORK/pgbench.log" 2>&1
dump="$PGBIN/pg_dump -Fp bench"
repo=$WORK/repo
"$SNAP" --repo "$repo" init >/dev/null
log "first backup"
# shellcheck disable=SC2086 # FS is a list of paths
"$SNAP" --repo "$repo" backup -q --command "$dump" --as db/bench.sql $FS >/dev/null

echo "| run | pg_dump alone: wall s (user, sys) | snap --command: wall s (user, sys) | ratio |"
echo "|---|---|---|---|"
for i in $(seq "$RUNS"); do
    # shellcheck disable=SC2086
    /usr/bin/time -f "%e %U %S" -o "$WORK/p" $dump >"$WORK/dump.sql"
    # shellcheck disable=SC2086
    /usr/bin/time -f "%e %U %S" -o "$WORK/s" \
        "$SNAP" --repo "$repo" backup -q --command "$dump" --as db/bench.sql $FS >/dev/null
    read -r pw pu ps <"$WORK/p"
    read -r sw su ss <"$WORK/s"
    printf '| %d | %s (%s, %s) | %s (%s, %s) | %sx |\n' "$i" "$pw" "$pu" "$ps" "$sw" "$su" "$ss" \
        "$(ratio "$sw" "$pw")"
    echo "$pw $sw" >>"$WORK/pairs"
done
median=$(awk '{ print $2 / $1 }' "$WORK/pairs" | median | xargs printf %.2f)
awk -v m="$median" '{ p += $1; s += $2 }
    END { printf "\nmedian ratio %sx; summed wall %.2f s against %.2f s: %.2fx\n", m, s, p, s / p }' "$WORK/pairs"
