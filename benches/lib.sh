# lib.sh: helpers the benchmark scripts share; source it, don't run it.
#   log MSG...             a timestamped line on stderr
#   now / secs T0 T1       wall clock, and seconds between two `now`s (2 decimals)
#   bytes PATH             du -sb of PATH
#   random_bytes N SEED    N incompressible bytes on stdout, the same for a seed
#                          (AES-CTR of zeros: finite input, so no SIGPIPE under pipefail)
#   median                 the median of the numbers on stdin, one a line
#   ratio A B              A / B to two decimals
#   col NAME               per-run "wall cpu rssKB" from $WORK/NAME.times, whose lines
#                          are /usr/bin/time -f "%e %M %U %S" (cpu = user + sys)
#   per_run A B FIELD      run r of A over run r of B, for each r, of col's FIELD
#                          (1 wall, 2 cpu, 3 rss), on one line
#   start_pg               a throwaway PostgreSQL cluster in $WORK/pgdata (unix socket
#                          $WORK/sock only, trust auth), stopped when the script exits;
#                          sets PGDATA, SOCK and exports PGHOST, PGPORT, PGUSER. Needs
#                          PGBIN and an existing $WORK; runs as postgres when root.

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
bytes() { du -sb "$1" | cut -f1; }
random_bytes() { head -c "$1" /dev/zero | openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:$2"; }
median() { sort -g | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
col() { awk '{ printf "%.2f %.2f %d\n", $1, $3 + $4, $2 }' "$WORK/$1.times"; }
per_run() { paste -d' ' <(col "$1" | cut -d' ' -f"$3") <(col "$2" | cut -d' ' -f"$3") |
    awk '{ printf("%s%.2f", (NR > 1 ? " " : ""), $1 / $2) }'; }

# Run a command as the postgres user when we are root (PostgreSQL refuses root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_pg() {
    PGDATA=$WORK/pgdata
    SOCK=$WORK/sock
    mkdir -p "$PGDATA" "$SOCK"
    chmod 755 "$WORK"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$PGDATA" "$SOCK"; fi
    export PGHOST=$SOCK PGPORT=5432 PGUSER=postgres
    unset PGDATABASE PGPASSWORD
    trap stop_pg EXIT
    log "initdb + start PostgreSQL ($PGDATA, socket $SOCK)"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
        -o "-c listen_addresses='' -c unix_socket_directories=$SOCK -c port=$PGPORT" start >/dev/null
}

stop_pg() {
    if [ -f "$PGDATA/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
}
