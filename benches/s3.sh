#!/usr/bin/env bash
# s3.sh: backup to and restore from object storage, snap next to restic and rustic on
# the same data and the same real store (one Garage node on loopback), in one run.
#
# What it measures
#   DATA is a plain SQL dump (DUMP_MB of COPY rows, as pg_dump writes them) and a file
#   tree (rasters of random bytes and 2,000 small text files, TREE_MB in all). Each
#   tool gets its own prefix of one bucket and encrypts (restic and rustic always do;
#   snap with `init --encrypt`). For each link:
#   - fast: loopback as it is;
#   - slow: through benches/slow_link (a small Rust forwarder, built here), which
#     delays every byte DELAY_MS each way (so each request waits 2 x DELAY_MS more) and
#     caps each direction at RATE_MBIT, 0 for no cap (`tc netem` would do the same;
#     these machines' kernels lack it);
#   each tool runs: the first backup, a no-op backup (nothing changed), and a restore
#   of the latest snapshot into an empty directory (compared with DATA once). Wall
#   seconds, CPU seconds and peak RSS of each (/usr/bin/time), and the S3 requests each
#   sent, by kind, read from Garage's metrics (api_s3_request_counter) before and after.
#   Requests are given per GiB of DATA for the first backup and the restore.
#
# How to run (root; restic from Debian, rustic and garage from crates.io:
#   apt-get install restic; cargo install rustic-rs --locked;
#   cargo install garage --locked, or the one .ci/run builds)
#   CARGO_TARGET_DIR=/tmp/snap-target-bench cargo build --release
#   SNAP=/tmp/snap-target-bench/release/snap bash benches/s3.sh > benches/results/s3-$(date +%Y%m%d).md
# The harness keeps its own files (restore targets, request counts) in $WORK/run and
# WORK under /var/tmp, so that between a backup and the no-op after it nothing changes
# DATA's parent directories (snap and restic store them, with their times, in every
# snapshot: under a busy /tmp the "no-op" would store new trees for them).
# Knobs: WORK (/var/tmp/s3-bench, wiped first), SNAP, GARAGE, RUSTIC, DUMP_MB (200),
#   TREE_MB (150), DELAY_MS (10), RATE_MBIT (200), LINKS ("fast slow"), TOOLS ("snap
#   restic rustic").
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/var/tmp/s3-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
GARAGE=${GARAGE:-$(command -v garage || echo /var/cache/snap-ci/garage/bin/garage)}
RUSTIC=${RUSTIC:-$(command -v rustic || echo "$HOME/.cargo/bin/rustic")}
DUMP_MB=${DUMP_MB:-200}
TREE_MB=${TREE_MB:-150}
DELAY_MS=${DELAY_MS:-10}
RATE_MBIT=${RATE_MBIT:-200}
LINKS=${LINKS:-fast slow}
. "$HERE/benches/lib.sh"

rm -rf "$WORK"
mkdir -p "$WORK/data/tree" "$WORK/garage" "$WORK/config/rustic" "$WORK/run/restore" "$WORK/cache"
DATA=$WORK/data
unset SNAP_REPO SNAP_PASSWORD SNAP_PASSWORD_FILE RESTIC_REPOSITORY RESTIC_PASSWORD_FILE
KEY_ID=GK5eb1a7e5a1f0c0ffee5eb1a7
SECRET=5eb1a7e5a1f0c0ffee5eb1a7e5a1f0c0ffee5eb1a7e5a1f0c0ffee5eb1a7e5a1
export AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=garage AWS_DEFAULT_REGION=garage
export RESTIC_PASSWORD=bench SNAP_PASSWORD=bench
export RESTIC_CACHE_DIR=$WORK/cache/restic SNAP_CACHE_DIR=$WORK/cache/snap XDG_CACHE_HOME=$WORK/cache
export XDG_CONFIG_HOME=$WORK/config

log "making data: a ${DUMP_MB} MB SQL dump and a ${TREE_MB} MB tree"
python3 - "$DATA/dump.sql" "$DUMP_MB" <<'PY'
import random, sys
path, mb = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
words = [f"{rnd.getrandbits(40):x}" for _ in range(20000)]
with open(path, "w") as f:
    f.write("--\n-- PostgreSQL database dump\n--\n\n")
    t = 0
    while f.tell() < mb << 20:
        f.write(f"COPY public.layer_{t} (id, geom, name, attrs) FROM stdin;\n")
        for i in range(20000):
            f.write(f"{i}\t0101000020E6100000{rnd.getrandbits(64):016X}{rnd.getrandbits(64):016X}\t"
                    f"{' '.join(rnd.choices(words, k=4))}\t{{\"k\": {rnd.randint(0, 999)}}}\n")
        f.write("\\.\n\n")
        t += 1
PY
raster_mb=$((TREE_MB - 8))
for i in $(seq 1 8); do
    random_bytes $((raster_mb * 1024 * 1024 / 8)) "raster $i" >"$DATA/tree/raster$i.tif"
done
python3 - "$DATA/tree/docs" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(3)
for i in range(2000):
    d = os.path.join(root, f"d{i // 100:02}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"doc{i}.txt"), "w") as f:
        f.write(" ".join(f"w{rnd.randint(0, 5000)}" for _ in range(rnd.randint(100, 1000))))
PY
DATA_BYTES=$(bytes "$DATA")

log "building the slow link"
cargo build --release -q --manifest-path "$HERE/benches/slow_link/Cargo.toml" --target-dir "$WORK/slow_link"

log "starting garage"
S3_PORT=39300 RPC_PORT=39301 ADMIN_PORT=39303 SLOW_PORT=39310
cat >"$WORK/garage/garage.toml" <<EOF
metadata_dir = "$WORK/garage/meta"
data_dir = "$WORK/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "a57fd3a7d05b3c9c8f0e1d2c3b4a59687766554433221100ffeeddccbbaa9988"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
EOF
g() { "$GARAGE" -c "$WORK/garage/garage.toml" "$@"; }
RUST_LOG=warn "$GARAGE" -c "$WORK/garage/garage.toml" server >"$WORK/garage/log" 2>&1 &
GARAGE_PID=$!
SLOW_PID=
cleanup() {
    kill "$GARAGE_PID" 2>/dev/null || true
    if [ -n "$SLOW_PID" ]; then kill "$SLOW_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
for _ in $(seq 1 100); do g status >/dev/null 2>&1 && break; sleep 0.1; done
node=$(g node id -q | cut -d@ -f1)
g layout assign -z dc1 -c 10G "$node" >/dev/null
g layout apply --version 1 >/dev/null
g key import --yes "$KEY_ID" "$SECRET" -n bench >/dev/null
g bucket create bench >/dev/null
g bucket allow --read --write --owner bench --key "$KEY_ID" >/dev/null
"$WORK/slow_link/release/slow_link" "$SLOW_PORT" "$S3_PORT" "$DELAY_MS" "$RATE_MBIT" &
SLOW_PID=$!

# requests: Garage's S3 request counters, one "Endpoint count" a line.
requests() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
        sed -n 's/^api_s3_request_counter{.*api_endpoint="\([A-Za-z0-9]*\)".*} \([0-9]*\)$/\1 \2/p' | sort
}
# delta BEFORE AFTER: the requests between two `requests` files, "Kind n, ..." and total.
delta() {
    join -a 2 -e 0 -o 0,1.2,2.2 "$1" "$2" |
        awk '{ d = $3 - $2; if (d > 0) { s = s sep $1 " " d; sep = ", "; t += d } } END { printf "%d\t%s\n", t, s }'
}

endpoint() { if [ "$1" = slow ]; then echo "http://127.0.0.1:$SLOW_PORT"; else echo "http://127.0.0.1:$S3_PORT"; fi; }

# cmd TOOL LINK STEP: the command line of a step.
cmd() {
    local ep; ep=$(endpoint "$2")
    local target=$WORK/run/restore
    case $1 in
        snap)
            local r=(env AWS_ENDPOINT_URL="$ep" "$SNAP" --repo "s3://bench/$2-snap")
            case $3 in
                init) echo "${r[*]} init --encrypt" ;;
                backup) echo "${r[*]} backup -q $DATA" ;;
                restore) echo "${r[*]} restore -q latest --target $target" ;;
            esac ;;
        restic)
            local r=(restic -q -r "s3:$ep/bench/$2-restic")
            case $3 in
                init) echo "${r[*]} init" ;;
                backup) echo "${r[*]} backup $DATA" ;;
                restore) echo "${r[*]} restore latest --target $target" ;;
            esac ;;
        rustic)
            cat >"$XDG_CONFIG_HOME/rustic/$2.toml" <<EOF
[repository]
repository = "opendal:s3"
password = "bench"
[repository.options]
endpoint = "$ep"
bucket = "bench"
root = "/$2-rustic"
region = "garage"
access_key_id = "$KEY_ID"
secret_access_key = "$SECRET"
EOF
            local r=("$RUSTIC" -P "$2" --log-level warn --no-progress)
            case $3 in
                init) echo "${r[*]} init" ;;
                backup) echo "${r[*]} backup $DATA" ;;
                restore) echo "${r[*]} restore latest $target" ;;
            esac ;;
    esac
}

TOOLS=${TOOLS:-snap restic rustic}
echo "# object storage: snap, restic and rustic on one Garage node"
echo
echo "$(date -u +%F), $(nproc) cores; DATA $((DATA_BYTES >> 20)) MiB (a ${DUMP_MB} MB SQL dump, a ${TREE_MB} MB tree);"
echo "slow link: +${DELAY_MS} ms each way, ${RATE_MBIT} Mbit/s each way (benches/slow_link)."
echo "$("$SNAP" --version); $(restic version | cut -d' ' -f1-2); $("$RUSTIC" --version); $("$GARAGE" --version | cut -d' ' -f1-2)"
echo
echo "| link | tool | step | wall s | cpu s | peak RSS MB | requests | per GiB | by kind |"
echo "|---|---|---|---|---|---|---|---|---|"
for link in $LINKS; do
    for t in $TOOLS; do
        log "$link: $t"
        bash -c "$(cmd "$t" "$link" init)" >/dev/null 2>&1
        for step in backup noop restore; do
            real=$step; [ "$step" = noop ] && real=backup
            rm -rf "$WORK/run/restore"; mkdir -p "$WORK/run/restore"
            requests >"$WORK/run/before"
            /usr/bin/time -f "%e %M %U %S" -o "$WORK/run/time" bash -c "$(cmd "$t" "$link" "$real")" >/dev/null
            requests >"$WORK/run/after"
            read -r wall rss user sys <"$WORK/run/time"
            IFS=$'\t' read -r n kinds < <(delta "$WORK/run/before" "$WORK/run/after")
            per=-
            if [ "$step" != noop ]; then per=$(awk -v n="$n" -v b="$DATA_BYTES" 'BEGIN { printf "%.0f", n / (b / 2^30) }'); fi
            printf '| %s | %s | %s | %.2f | %.2f | %d | %d | %s | %s |\n' "$link" "$t" "$step" \
                "$wall" "$(awk -v a="$user" -v b="$sys" 'BEGIN { print a + b }')" $((rss / 1024)) "$n" "$per" "$kinds"
            if [ "$step" = restore ] && [ "$link" = fast ]; then
                diff -r "$DATA" "$WORK/run/restore$DATA" >/dev/null || { log "$t restored other data"; exit 1; }
            fi
        done
    done
done
rm -rf "$WORK/run" "$WORK/data"
