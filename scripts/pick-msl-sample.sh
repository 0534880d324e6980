#!/usr/bin/env bash
# Picks the demo sample `testdata/msl-sample/` from the MSL training split, deterministically:
# one image per class present (the middle one by name), the E01/I01 partner of the first three
# of those that have one (near-identical pairs), three frames the pipeline flags as low quality
# (overexposed: first, middle and last by name), and routine ground and horizon frames (evenly
# spaced by name) up to 40 images. Writes OUT/images/ and OUT/SOURCES.tsv (file, class, why);
# the attribution is testdata/msl-sample/ATTRIBUTION.md. Only training-split images are ever chosen.
# Usage: scripts/pick-msl-sample.sh DATA [OUT]   (OUT defaults to testdata/msl-sample)
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
data="${1:?usage: scripts/pick-msl-sample.sh DATA [OUT]}"
out="${2:-testdata/msl-sample}"
source scripts/env.sh
split="$data/train-calibrated-shuffled.txt"
[ -r "$split" ] || { echo "error: $split: not readable; pass the MSL dataset root (scripts/get-msl.sh)" >&2; exit 1; }
cargo build --release -q -p onboard
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/train"
awk '{print $1}' "$split" | while read -r f; do ln -s "$(cd "$data" && pwd)/$f" "$tmp/train/"; done
# Quality flags as the product computes them (adaptation off: every image judged alone).
"$CARGO_TARGET_DIR/release/onboard" prioritize "$tmp/train" --adapt off --json > "$tmp/plan.json"
mkdir -p "$out/images"
python3 - "$data" "$split" "$tmp/plan.json" "$out" <<'PY'
import json, os, shutil, sys
data, split, plan, out = sys.argv[1:]
names = [" ".join(l.split()[1:]) for l in open(os.path.join(data, "msl_synset_words-indexed.txt")) if l.strip()]
label = {}
for line in open(split):
    path, cls = line.split()
    label[os.path.basename(path)] = int(cls)
by_class = {}
for f in sorted(label):
    by_class.setdefault(label[f], []).append(f)
flags = {r["file"]: r["parts"]["quality_flags"] for r in json.load(open(plan))["plan"]}
chosen = {}
def take(f, why):
    if f not in chosen and len(chosen) < 40:
        chosen[f] = why
for c in sorted(by_class):
    members = by_class[c]
    take(members[len(members) // 2], "one per class")
pairs = 0
for f in list(chosen):
    partner = f.replace("E01_", "I01_") if "E01_" in f else f.replace("I01_", "E01_")
    if pairs < 3 and partner != f and label.get(partner) == label[f]:
        take(partner, "E01/I01 pair of " + f)
        pairs += 1
low = sorted(f for f, q in flags.items() if q["overexposed"] or q["blank"])
for f in [low[0], low[len(low) // 2], low[-1]] if low else []:
    take(f, "low quality (flagged overexposed or blank)")
for c, n in ((8, 7), (9, 3)):
    members = by_class[c]
    for i in range(n):
        take(members[(2 * i + 1) * len(members) // (2 * n)], "routine frame")
with open(os.path.join(out, "SOURCES.tsv"), "w") as s:
    s.write("file\tclass\twhy\n")
    for f in sorted(chosen):
        shutil.copyfile(os.path.join(data, "calibrated", f), os.path.join(out, "images", f))
        s.write(f"{f}\t{names[label[f]]}\t{chosen[f]}\n")
total = sum(os.path.getsize(os.path.join(out, "images", f)) for f in chosen)
print(f"{len(chosen)} images, {total} bytes, {len(set(label[f] for f in chosen))} classes -> {out}/images")
PY
