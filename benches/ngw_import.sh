#!/usr/bin/env bash
# ngw_import.sh: what 30 nightly NextGIS Web backups cost in a snap repository,
# and how fast `snap restore --ngw` is next to what `nextgisweb restore` does.
#
# What it measures
#   1. A throwaway PostgreSQL 15 cluster (unix socket only, trust auth) with a
#      database `ngw`: `pgbench -i -s 10` (1M account rows) plus a `fileobj`
#      table, and a file storage that starts with 40 random 1 MiB blobs.
#   2. DAYS (30) nights: `pgbench -n -c 2 -t 5000` churn, one new 1 MiB blob,
#      then a backup written the way `nextgisweb backup` writes it: pg_dump
#      -Fd -Z0, the `postgres/restore` list, component/file_storage/$index and
#      {id:08d} blobs, zipped with Python's zipfile (stored, ZIP64, os.walk
#      order, like NGW's `_compress`) into archives/YYYYmmdd-HHMMSS.ngwbackup.
#   3. `snap import archives/*.ngwbackup` in one call into a fresh repository:
#      archives' total bytes, repository bytes (du -sb), wall time, peak RSS.
#   4. Restore of the last night, two ways:
#        NGW-style: zipfile extractall, then NGW's pg_restore into an empty
#                   database `ngw_b`, then the blobs copied into a file storage;
#        snap:      `snap restore latest --ngw config.ini` into `ngw_c`.
#      Both dumps (pg_dump -Fp) must be identical and both file storages must
#      hold the same 40+DAYS blobs.
#
# How to run (as root or as a user that can `runuser -u postgres`):
#   bash benches/ngw_import.sh
# Knobs (environment): WORK (default /tmp/ngw-import-bench, wiped first),
#   SNAP (default <repo>/target/release/snap), PGBIN, DAYS, SCALE, INIT_BLOBS,
#   CHURN_TX (transactions per client per night). Needs ~6 GB free in WORK.
# Output: per-archive lines of `snap import`, then a summary; everything is
#   also kept in $WORK (import.log, restore.log, summary.txt).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/ngw-import-bench}
SNAP=${SNAP:-$HERE/target/release/snap}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DAYS=${DAYS:-30}
SCALE=${SCALE:-10}
INIT_BLOBS=${INIT_BLOBS:-40}
CHURN_TX=${CHURN_TX:-5000}

export PATH="$PGBIN:$PATH"
[ -x "$SNAP" ] || { echo "snap binary not found: $SNAP" >&2; exit 1; }

. "$HERE/benches/lib.sh"

# ---------------------------------------------------------------- work dir, PG
rm -rf "$WORK"
mkdir -p "$WORK"/{archives,fs}
start_pg

psql -qX -d postgres -c 'CREATE DATABASE ngw'
log "pgbench -i -s $SCALE"
pgbench -i -s "$SCALE" -q ngw >"$WORK/pgbench-init.log" 2>&1
psql -qX -d ngw -c 'CREATE TABLE fileobj (id serial PRIMARY KEY, component text, uuid text)'

# ---------------------------------------------------------------- helper
# backup  DB FSDIR TARGET   : write TARGET like `nextgisweb backup`
# ngwrestore ARCHIVE DB FSDIR: do what `nextgisweb restore` does (no NGW needed)
HELPER=$WORK/ngw_helper.py
cat >"$HELPER" <<'PY'
import json, os, re, shutil, subprocess, sys, tempfile, time
from zipfile import ZipFile, ZIP_STORED

def fileobjs(db):
    out = subprocess.check_output(
        ["psql", "-qAtX", "-F", "\t", "-d", db, "-c",
         "SELECT component, uuid FROM fileobj ORDER BY component, uuid"], text=True)
    return [tuple(l.split("\t")) for l in out.splitlines() if l]

def blob_path(fs, component, uuid):
    return os.path.join(fs, component, uuid[0:2], uuid[2:4], uuid)

def restore_list(pg_dir):
    # NGW's core/backup.py: comment out pg_database (1262), pg_extension (3079),
    # the public schema (pg_namespace 2615) and COMMENT lines right after them.
    listing = subprocess.check_output(["pg_restore", "--list", pg_dir], text=True)
    rx = re.compile(r"(\d+)\;\s+(\d+)\s+(\d+)\s+(.*)")
    out, skip_prev = [], False
    for line in listing.split("\n"):
        if line == "" or line.startswith(";"):
            out.append(line)
            continue
        skip = False
        m = rx.match(line)
        if m:
            _, cls, _, rest = m.groups()
            skip = (int(cls) in (1262, 3079)
                    or (int(cls) == 2615 and rest.startswith("SCHEMA - public "))
                    or (skip_prev and rest.startswith("COMMENT ")))
            out.append((";" if skip else "") + line)
        skip_prev = skip
    with open(os.path.join(pg_dir, "restore"), "w") as fd:
        fd.write("\n".join(out))

def compress(src, dst):
    # NGW's core/cli/backup.py `_compress`, with stored members as in its archives.
    with ZipFile(dst, "w", ZIP_STORED, allowZip64=True) as zipf:
        for root, dirs, files in os.walk(src):
            zipf.write(root, os.path.relpath(root, src))
            for fn in files:
                filename = os.path.join(root, fn)
                if os.path.isfile(filename):
                    zipf.write(filename, os.path.join(os.path.relpath(root, src), fn))
                    os.unlink(filename)

def backup(db, fs, target):
    tmp_root = os.path.dirname(os.path.abspath(target))
    with tempfile.TemporaryDirectory(dir=tmp_root) as tgt:
        pg_dir = os.path.join(tgt, "postgres")
        subprocess.check_call(["pg_dump", "--format=directory", "--compress=0",
                               "--file=" + pg_dir, "--dbname", db])
        restore_list(pg_dir)
        comp_root = os.path.join(tgt, "component")
        os.mkdir(comp_root)
        items = fileobjs(db)
        if items:
            d = os.path.join(comp_root, "file_storage")
            os.mkdir(d)
            with open(os.path.join(d, "$index"), "w", encoding="utf-8", newline="\n") as idx:
                for seq, (component, uuid) in enumerate(items, start=1):
                    rec = {"id": seq, "identity": "fileobj",
                           "payload": {"component": component, "uuid": uuid}}
                    idx.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    shutil.copyfile(blob_path(fs, component, uuid),
                                    os.path.join(d, f"{seq:08d}"))
        fd, tmp_arch = tempfile.mkstemp(dir=tmp_root)
        os.close(fd)
        os.unlink(tmp_arch)
        compress(tgt, tmp_arch)
        os.rename(tmp_arch, target)

def ngwrestore(archive, db, fs):
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(archive))) as src:
        with ZipFile(archive) as z:
            z.extractall(src)
        t1 = time.monotonic()
        pg_dir = os.path.join(src, "postgres")
        subprocess.check_call(["pg_restore", "--clean", "--if-exists", "--no-owner",
                               "--no-privileges", "--exit-on-error",
                               "--use-list", os.path.join(pg_dir, "restore"),
                               "--dbname", db, pg_dir])
        t2 = time.monotonic()
        d = os.path.join(src, "component", "file_storage")
        n = 0
        with open(os.path.join(d, "$index"), encoding="utf-8") as idx:
            for line in idx:
                rec = json.loads(line)
                p = rec["payload"]
                dst = blob_path(fs, p["component"], p["uuid"])
                if os.path.exists(dst):
                    continue
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(os.path.join(d, f"{rec['id']:08d}"), dst)
                n += 1
        t3 = time.monotonic()
    t4 = time.monotonic()
    print(f"extract={t1-t0:.2f} pg_restore={t2-t1:.2f} blobs={t3-t2:.2f} "
          f"cleanup={t4-t3:.2f} total={t4-t0:.2f} blobs_written={n}")

if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"backup": backup, "ngwrestore": ngwrestore}[cmd](*args)
PY

# ---------------------------------------------------------------- file storage
FS=$WORK/fs
new_blob() {
    local uuid p
    uuid=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    p=$FS/raster_layer/${uuid:0:2}/${uuid:2:2}/$uuid
    mkdir -p "$(dirname "$p")"
    head -c 1048576 /dev/urandom >"$p"
    psql -qX -d ngw -c "INSERT INTO fileobj (component, uuid) VALUES ('raster_layer', '$uuid')"
}
log "file storage: $INIT_BLOBS blobs of 1 MiB"
for _ in $(seq "$INIT_BLOBS"); do new_blob; done

# ---------------------------------------------------------------- nightly archives
for day in $(seq "$DAYS"); do
    name=$(date -u -d "2026-10-01 + $((day - 1)) days" +%Y%m%d-020000)
    pgbench -n -c 2 -t "$CHURN_TX" ngw >"$WORK/pgbench-day.log" 2>&1
    new_blob
    python3 "$HELPER" backup ngw "$FS" "$WORK/archives/$name.ngwbackup"
    log "day $day: $name.ngwbackup $(stat -c %s "$WORK/archives/$name.ngwbackup") bytes"
done

ARCH_BYTES=$(python3 -c 'import os, sys; print(sum(map(os.path.getsize, sys.argv[1:])))' \
    "$WORK"/archives/*.ngwbackup)
LAST=$(ls "$WORK"/archives/*.ngwbackup | tail -n 1)

# ---------------------------------------------------------------- snap import
REPO=$WORK/repo
"$SNAP" init --repo "$REPO" >/dev/null
sync
log "snap import of $DAYS archives"
t0=$(now)
/usr/bin/time -v -o "$WORK/import.time" \
    "$SNAP" --repo "$REPO" import "$WORK"/archives/*.ngwbackup >"$WORK/import.log" 2>&1 \
    || { cat "$WORK/import.log"; echo "snap import failed" >&2; exit 1; }
t1=$(now)
IMPORT_S=$(secs "$t0" "$t1")
IMPORT_RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/import.time")
REPO_BYTES=$(du -sb "$REPO" | cut -f1)
cat "$WORK/import.log"
"$SNAP" --repo "$REPO" list >"$WORK/list.txt" 2>&1 || true

# ---------------------------------------------------------------- restore: NGW-style
psql -qX -d postgres -c 'CREATE DATABASE ngw_b' -c 'CREATE DATABASE ngw_c'
mkdir -p "$WORK/fs_b" "$WORK/fs_c" "$WORK/sdir_c"
sync
log "NGW-style restore of $(basename "$LAST") into ngw_b"
t0=$(now)
NGW_DETAIL=$(python3 "$HELPER" ngwrestore "$LAST" ngw_b "$WORK/fs_b")
t1=$(now)
NGW_S=$(secs "$t0" "$t1")

# ---------------------------------------------------------------- restore: snap --ngw
cat >"$WORK/config.ini" <<EOF
[core]
database.host = $SOCK
database.name = ngw_c
database.user = postgres
sdir = $WORK/sdir_c
[file_storage]
path = $WORK/fs_c
EOF
sync
log "snap restore latest --ngw into ngw_c"
t0=$(now)
/usr/bin/time -v -o "$WORK/restore.time" \
    "$SNAP" --repo "$REPO" restore latest --ngw "$WORK/config.ini" >"$WORK/restore.log" 2>&1 \
    || { cat "$WORK/restore.log"; echo "snap restore --ngw failed" >&2; exit 1; }
t1=$(now)
SNAP_S=$(secs "$t0" "$t1")
SNAP_RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/restore.time")
cat "$WORK/restore.log"

# ---------------------------------------------------------------- correctness
dump() { pg_dump -Fp --restrict-key=x "$1" | grep -v '^-- Dumped'; }
dump ngw_b >"$WORK/dump_b.sql"
dump ngw_c >"$WORK/dump_c.sql"
if cmp -s "$WORK/dump_b.sql" "$WORK/dump_c.sql"; then DB_OK=identical; else
    DB_OK=DIFFERENT; diff "$WORK/dump_b.sql" "$WORK/dump_c.sql" | head -n 20 >&2; fi
tree_sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
NBLOBS_C=$(find "$WORK/fs_c" -type f | wc -l)
if [ "$(tree_sums "$WORK/fs_b")" = "$(tree_sums "$WORK/fs_c")" ]; then FS_OK=identical; else FS_OK=DIFFERENT; fi
EXPECT_BLOBS=$((INIT_BLOBS + DAYS))

# ---------------------------------------------------------------- summary
python3 - "$ARCH_BYTES" "$REPO_BYTES" "$IMPORT_S" "$IMPORT_RSS_KB" "$NGW_S" "$SNAP_S" \
    "$SNAP_RSS_KB" "$NGW_DETAIL" "$DB_OK" "$FS_OK" "$NBLOBS_C" "$EXPECT_BLOBS" "$DAYS" \
    <<'PY' | tee "$WORK/summary.txt"
import sys
(arch, repo, imp_s, imp_rss, ngw_s, snap_s, snap_rss, detail, db_ok, fs_ok,
 nblobs, expect, days) = sys.argv[1:]
arch, repo, imp_rss, snap_rss = int(arch), int(repo), int(imp_rss), int(snap_rss)
mb = lambda b: f"{b / 1e6:,.1f} MB"
print(f"== snap: {days} nightly .ngwbackup archives ==")
print(f"archives total bytes      {arch:>15,}  ({mb(arch)})")
print(f"repository bytes          {repo:>15,}  ({mb(repo)})")
print(f"ratio archives/repo       {arch / repo:>15.2f}x")
print(f"import wall seconds       {float(imp_s):>15.2f}  ({arch / 1e6 / float(imp_s):.0f} MB/s)")
print(f"import peak RSS           {imp_rss / 1024:>15.1f} MiB")
print(f"NGW-style restore seconds {float(ngw_s):>15.2f}  ({detail})")
print(f"snap restore --ngw secs   {float(snap_s):>15.2f}  (peak RSS {snap_rss / 1024:.1f} MiB)")
print(f"check: pg_dump ngw_b vs ngw_c {db_ok}; file storages {fs_ok}; "
      f"fs_c blobs {nblobs} (expected {expect})")
PY

[ "$DB_OK" = identical ] && [ "$FS_OK" = identical ] && [ "$NBLOBS_C" = "$EXPECT_BLOBS" ]
