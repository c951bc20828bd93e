#!/usr/bin/env bash
# Seeds the fuzz corpora from real files made by the snap binary: a plain and an
# encrypted repository, an imported and re-exported .ngwbackup. Prints the encrypted
# repository's id and exported key, to put in src/lib.rs. Usage: fuzz/seed.sh SNAP_BIN
set -euo pipefail
snap=$(realpath "$1")
cd "$(dirname "$0")"
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
export SNAP_CACHE_DIR=$w/cache SNAP_PASSWORD=fuzz
mkdir -p "$w/data/sub" corpus
printf 'hello\n' >"$w/data/a.txt"
ln -s a.txt "$w/data/link"
mkfifo "$w/data/pipe"
head -c 3000000 /dev/urandom >"$w/data/sub/big"
seq 1 20000 >"$w/data/sub/numbers"

python3 - "$w/in.ngwbackup" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as f:
    f.writestr('postgres/toc.dat', b'PGDMP' + bytes(200))
    f.writestr('postgres/1.dat', b'1\tone\n2\ttwo\n' * 50)
    f.writestr('component/file_storage/$index',
        '{"id": 1, "identity": "fileobj", "payload": {"component": "feature_attachment", "uuid": "0123456789abcdef0123456789abcdef"}}\n')
    f.writestr('component/file_storage/00000001', b'attachment bytes' * 10)
PY

for kind in plain sealed; do
  r=$w/$kind
  if [ $kind = sealed ]; then "$snap" --repo "$r" init --encrypt -q; else "$snap" --repo "$r" init -q; fi
  "$snap" --repo "$r" -q backup "$w/data"
  echo more >"$w/data/a.txt"
  "$snap" --repo "$r" -q backup "$w/data"
  id=$("$snap" --repo "$r" import "$w/in.ngwbackup" | sed -n 's/.*: snapshot \([0-9a-f]*\) .*/\1/p')
  "$snap" --repo "$r" export -q "$id" "$w/$kind.ngwbackup"
done

put() { mkdir -p "corpus/$1"; cp "$2" "corpus/$1/$(sha1sum "$2" | cut -c1-16)"; }
for kind in plain sealed; do
  r=$w/$kind
  put config "$r/config"
  for f in "$r"/snapshots/*; do put snapshot "$f"; done
  for f in "$r"/index/*; do put index_file "$f"; done
  for f in $(ls -S "$r"/packs/*/* | tail -n 4); do put pack "$f"; done
  if [ -d "$r/keys" ]; then for f in "$r"/keys/*.json; do put key_file "$f"; done; fi
  put ngw_archive "$w/$kind.ngwbackup"
done
put ngw_archive "$w/in.ngwbackup"
# Tree and list blobs: an uncompressed repository keeps them as they are in its packs.
r=$w/raw
"$snap" --repo "$r" init -q --compression 0
"$snap" --repo "$r" -q backup "$w/data"
python3 - "$r/packs" corpus <<'PY'
import sys, glob, hashlib, os
for path in glob.glob(sys.argv[1] + '/*/*'):
    b = open(path, 'rb').read()
    count = int.from_bytes(b[-48:-44], 'little')
    off = 16
    for i in range(count):
        e = b[len(b) - 48 - 44 * (count - i):][:44]
        kind, stored = e[0], int.from_bytes(e[8:12], 'little')
        blob = b[off:off + stored]
        off += stored
        target = {1: 'tree', 2: 'list_node'}.get(kind)
        if target and len(blob) < 100000:
            os.makedirs(f'{sys.argv[2]}/{target}', exist_ok=True)
            open(f'{sys.argv[2]}/{target}/' + hashlib.sha1(blob).hexdigest()[:16], 'wb').write(blob)
PY
# Chunk-list nodes (only files of over 64 chunks have them): levels 0 and 1.
mkdir -p corpus/list_node
python3 - corpus/list_node <<'PY'
import sys, os
for level, n in [(0, 5), (1, 2)]:
    open(f'{sys.argv[1]}/level{level}', 'wb').write(bytes([1, level]) + n.to_bytes(4, 'little') + os.urandom(32 * n))
PY
# A lock file as a running backup writes it.
mkdir -p corpus/lock_file
printf '{"host":"seed","pid":4242,"time":"2026-12-03T10:00:00Z","exclusive":false,"purpose":"backup"}' \
  >corpus/lock_file/backup
# $index lines as the imported archive has them, and a font.
mkdir -p corpus/ngw_index
unzip -p "$w/in.ngwbackup" 'component/file_storage/$index' >corpus/ngw_index/fileobj
printf '{"id": 1, "identity": "font", "payload": {"filename": "Roboto.ttf"}}\n' >corpus/ngw_index/font
# A key file with costs small enough for the target to try unlocking it.
k=$(ls "$w"/sealed/keys/*.json | head -n 1)
sed -e 's/"m_cost": [0-9]*/"m_cost": 64/' -e 's/"t_cost": [0-9]*/"t_cost": 1/' "$k" >corpus/key_file/cheap
"$snap" --repo "$w/sealed" key export "$w/exported" >/dev/null
python3 -c 'import json,sys; print("repository id:", json.load(open(sys.argv[1]))["id"])' "$w/sealed/config"
cat "$w/exported"
