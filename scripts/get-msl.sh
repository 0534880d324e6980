#!/usr/bin/env bash
# Gets the MSL surface image set v1 (Wagstaff et al. 2018; Zenodo record 1049137,
# DOI 10.5281/zenodo.1049137) into DIR in the layout `host-trainer` and `onboard eval` read:
# DIR/calibrated/*.JPG, DIR/*-calibrated-shuffled.txt, DIR/msl_synset_words-indexed.txt.
#
#   scripts/get-msl.sh DIR                          download (the record's metadata names the
#                                                   archive and its md5), check, unpack, verify
#   scripts/get-msl.sh DIR --archive ZIP --md5 HEX  the same from an archive already on disk
#   scripts/get-msl.sh DIR --verify                 only verify DIR's layout
#
# The download needs internet access to zenodo.org (curl). An interrupted download resumes; an
# archive whose md5 differs is refused and kept as DIR/.download/NAME.bad; unpacking refuses
# absolute or `..` member paths and happens in DIR/.unpack before anything is moved into DIR.
# The verification checks the synset file, the train and validation split files (and any other
# `*-calibrated-shuffled.txt`), and that every image they list is in DIR/calibrated/.
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
record=1049137
usage="usage: scripts/get-msl.sh DIR [--archive ZIP --md5 HEX | --verify]"
dir="${1:?$usage}"
shift
archive="" md5="" verify_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --archive) archive="${2:?$usage}"; shift 2 ;;
    --md5) md5="${2:?$usage}"; shift 2 ;;
    --verify) verify_only=1; shift ;;
    *) echo "error: unknown argument $1; $usage" >&2; exit 2 ;;
  esac
done
if [ -n "$archive" ] && [ -z "$md5" ]; then
  echo "error: --archive needs --md5 (the checksum the Zenodo record gives for it); $usage" >&2
  exit 2
fi
mkdir -p "$dir"
py() { python3 - "$@"; }

verify() {
  py "$dir" <<'PY'
import os, sys
d = sys.argv[1]
synset = os.path.join(d, "msl_synset_words-indexed.txt")
if not os.path.isfile(synset):
    sys.exit(f"error: {synset}: missing; {d} does not hold the MSL layout (scripts/get-msl.sh DIR gets it)")
classes = sum(1 for line in open(synset) if line.strip())
splits = sorted(f for f in os.listdir(d) if f.endswith("-calibrated-shuffled.txt"))
for need in ("train-calibrated-shuffled.txt", "val-calibrated-shuffled.txt"):
    if need not in splits:
        sys.exit(f"error: {os.path.join(d, need)}: missing; {d} does not hold the MSL layout (scripts/get-msl.sh DIR gets it)")
total = 0
for s in splits:
    missing = []
    lines = [l.split() for l in open(os.path.join(d, s)) if l.strip()]
    for i, parts in enumerate(lines, 1):
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= classes:
            sys.exit(f"error: {os.path.join(d, s)}:{i}: not `calibrated/NAME.JPG CLASS_ID` with a class below {classes}")
        if not os.path.isfile(os.path.join(d, parts[0])):
            missing.append(parts[0])
    if missing:
        sys.exit(f"error: {os.path.join(d, s)}: {len(missing)} listed images are not in {d} (first: {missing[0]}); get the archive again")
    print(f"{s}: {len(lines)} images, all present", file=sys.stderr)
    total += len(lines)
print(f"{d}: MSL layout verified ({classes} classes, {total} labeled images)", file=sys.stderr)
PY
}

if [ "$verify_only" = 1 ]; then
  verify || exit 1
  exit 0
fi

mkdir -p "$dir/.download"
if [ -z "$archive" ]; then
  command -v curl >/dev/null || { echo "error: curl is needed to download; install it, or pass --archive ZIP --md5 HEX" >&2; exit 1; }
  meta="$dir/.download/record.json"
  curl --fail --silent --show-error --location "https://zenodo.org/api/records/$record" -o "$meta" ||
    { echo "error: cannot reach zenodo.org for record $record; download the archive by hand and pass --archive ZIP --md5 HEX" >&2; exit 1; }
  info="$(py "$meta" <<'PY'
import json, sys
files = [f for f in json.load(open(sys.argv[1]))["files"] if f["key"].endswith(".zip")]
if len(files) != 1:
    sys.exit(f"error: the record lists {len(files)} zip archives; expected one")
f = files[0]
algo, _, digest = f["checksum"].partition(":")
if algo != "md5":
    sys.exit(f"error: the record gives a {algo} checksum; expected md5")
print(f["key"], f["links"]["self"], digest)
PY
)" || exit 1
  read -r name url md5 <<< "$info"
  archive="$dir/.download/$name"
  if [ ! -f "$archive" ]; then
    echo "downloading $name from Zenodo record $record" >&2
    curl --fail --location --continue-at - --progress-bar "$url" -o "$archive.part"
    mv "$archive.part" "$archive"
  fi
fi
[ -f "$archive" ] || { echo "error: $archive: no such archive" >&2; exit 1; }
got="$(py "$archive" <<'PY'
import hashlib, sys
h = hashlib.md5()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
PY
)"
if [ "$got" != "$md5" ]; then
  if [ "$archive" = "$dir/.download/$(basename "$archive")" ]; then
    mv "$archive" "$archive.bad"
    archive="$archive.bad"
  fi
  echo "error: $archive: md5 $got, expected $md5; the archive is damaged or not the record's: download it again" >&2
  exit 1
fi
echo "$(basename "$archive"): md5 $got as expected" >&2
rm -rf "$dir/.unpack"
mkdir "$dir/.unpack"
py "$archive" "$dir/.unpack" <<'PY' || exit 1
import os, sys, zipfile
src, dest = sys.argv[1:]
with zipfile.ZipFile(src) as z:
    for m in z.namelist():
        parts = m.replace("\\", "/").split("/")
        if m.startswith("/") or ".." in parts or (len(m) > 1 and m[1] == ":"):
            sys.exit(f"error: {src}: member {m!r} would land outside the folder; refusing the archive")
    z.extractall(dest)
PY
# The layout's root: the folder that holds the synset file (the archive's top level or one below).
root="$(find "$dir/.unpack" -maxdepth 2 -name msl_synset_words-indexed.txt -printf '%h\n' | head -n 1)"
[ -n "$root" ] || { echo "error: $archive: no msl_synset_words-indexed.txt in the archive; it is not the MSL surface set" >&2; exit 1; }
for entry in "$root"/* "$root"/.[!.]*; do
  [ -e "$entry" ] || continue
  rm -rf "${dir:?}/$(basename "$entry")"
  mv "$entry" "$dir/"
done
rm -rf "$dir/.unpack"
verify || exit 1
