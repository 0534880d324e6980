#!/usr/bin/env bash
# Offline test of scripts/get-msl.sh: builds small archives in the MSL layout from the project's
# own fixtures (testdata/pass) and checks that a good one is checked, unpacked and verified
# (archive top level or one folder below), and that a wrong md5, a listed image missing from the
# archive, a member path escaping the folder and a folder without the layout each fail with an
# error naming the problem. The download itself needs zenodo.org and is not run here.
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# make_zip NAME KIND: writes $tmp/NAME.zip and prints its md5.
make_zip() {
  python3 - "$tmp/$1.zip" "$2" <<'PY'
import hashlib, sys, zipfile
out, kind = sys.argv[1:]
imgs = ["testdata/pass/000_ground.jpg", "testdata/pass/001_horizon.jpg", "testdata/pass/002_target.jpg"]
top = "msl-images/" if kind == "nested" else ""
with zipfile.ZipFile(out, "w") as z:
    z.writestr(top + "msl_synset_words-indexed.txt", "0\tground\n1\thorizon\n2\tsun\n")
    for i, p in enumerate(imgs):
        if kind == "missing" and i == 2:
            continue
        z.write(p, f"{top}calibrated/{i:04d}ML_DRCL.JPG")
    z.writestr(top + "train-calibrated-shuffled.txt", "calibrated/0000ML_DRCL.JPG 0\ncalibrated/0001ML_DRCL.JPG 1\n")
    z.writestr(top + "val-calibrated-shuffled.txt", "calibrated/0002ML_DRCL.JPG 2\n")
    if kind == "escape":
        z.writestr("../escaped.txt", "outside")
print(hashlib.md5(open(out, "rb").read()).hexdigest())
PY
}

# expect_fail WHAT TEXT CMD...: CMD must fail and say TEXT.
expect_fail() {
  local what="$1" text="$2"
  shift 2
  if "$@" > "$tmp/out" 2>&1; then
    echo "error: get-msl: $what was accepted" >&2
    exit 1
  fi
  grep -qF -- "$text" "$tmp/out" || { echo "error: get-msl: $what: expected '$text' in:" >&2; cat "$tmp/out" >&2; exit 1; }
}

for kind in flat nested; do
  md5="$(make_zip "$kind" "$kind")"
  scripts/get-msl.sh "$tmp/data-$kind" --archive "$tmp/$kind.zip" --md5 "$md5" 2> "$tmp/out"
  grep -q "MSL layout verified (3 classes, 3 labeled images)" "$tmp/out" || { cat "$tmp/out" >&2; exit 1; }
  cmp -s testdata/pass/001_horizon.jpg "$tmp/data-$kind/calibrated/0001ML_DRCL.JPG"
  [ ! -e "$tmp/data-$kind/.unpack" ]
  scripts/get-msl.sh "$tmp/data-$kind" --verify 2> /dev/null
done
md5="$(make_zip bad flat)"
expect_fail "a wrong md5" "expected 0000" scripts/get-msl.sh "$tmp/data-bad" --archive "$tmp/bad.zip" --md5 00000000000000000000000000000000
[ ! -e "$tmp/data-bad/calibrated" ]
md5="$(make_zip missing missing)"
expect_fail "a missing image" "1 listed images are not in" scripts/get-msl.sh "$tmp/data-missing" --archive "$tmp/missing.zip" --md5 "$md5"
md5="$(make_zip escape escape)"
expect_fail "an escaping member" "would land outside the folder" scripts/get-msl.sh "$tmp/data-escape" --archive "$tmp/escape.zip" --md5 "$md5"
[ ! -e "$tmp/escaped.txt" ]
mkdir -p "$tmp/empty"
expect_fail "a folder without the layout" "msl_synset_words-indexed.txt: missing" scripts/get-msl.sh "$tmp/empty" --verify
expect_fail "--archive without --md5" "needs --md5" scripts/get-msl.sh "$tmp/x" --archive "$tmp/flat.zip"
echo "get-msl: offline checks passed (unpack flat and nested, md5, missing image, escaping member, layout)" >&2
