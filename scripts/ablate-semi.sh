#!/usr/bin/env bash
# Ablation of the semi-supervised objective on the development protocol: for each variant and
# seed, `host-trainer train` on the train split (validation images join the unlabeled pool, as
# in the paper), then `onboard eval` of the bundle on validation in sol order with adaptation
# off and on. Variants: ce (L_cls only), ls (+ L_s), lu (+ L_u), full (L_cls + L_s + 0.2 L_u),
# simclr (L_cls + the paper's Eq. 1 instead of L_s). Runs land in runs/ablation/<variant>-s<seed>/
# (bundle/, run/, eval-off.json, eval-on.json) and the summary table in runs/ablation/summary.md.
# A finished run (both evaluations present) is not redone.
# Usage: MSL_DATA=... scripts/ablate-semi.sh [BASE_CONFIG] [SEEDS...]   (default:
# configs/default.json, seed 17; the config's `semi` section is the full objective)
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
source scripts/env.sh
: "${MSL_DATA:?set MSL_DATA to the dataset root}"
base="${1:-configs/default.json}"
shift || true
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(17)
cargo build --release -p host-trainer -p onboard >&2
trainer="$CARGO_TARGET_DIR/release/host-trainer"
onboard="$CARGO_TARGET_DIR/release/onboard"
out=runs/ablation
mkdir -p "$out"
sort "$MSL_DATA/val-calibrated-shuffled.txt" > "$out/val-chrono.txt"
for variant in ce ls lu full simclr; do
  for seed in "${seeds[@]}"; do
    dir="$out/$variant-s$seed"
    [ -f "$dir/eval-on.json" ] && continue
    mkdir -p "$dir"
    "$TRIAGE_PYTHON" - "$base" "$variant" "$dir/config.json" <<'PY'
import json, sys
base, variant, dest = sys.argv[1:]
c = json.load(open(base))
s = c["semi"]
s["contrastive"], s["lambda_u"] = {
    "ce": ("none", 0.0),
    "ls": ("inter-class", 0.0),
    "lu": ("none", 0.2),
    "full": ("inter-class", 0.2),
    "simclr": ("sample-wise", 0.0),
}[variant]
json.dump(c, open(dest, "w"), indent=2)
PY
    echo "ablation: $variant seed $seed" >&2
    TRIAGE_PROGRESS=0 "$trainer" train --data "$MSL_DATA" --config "$dir/config.json" \
      --seed "$seed" --out "$dir/bundle" --work "$dir/run" --device auto \
      2> "$dir/log.txt" || { tail -n 5 "$dir/log.txt" >&2; exit 1; }
    for adapt in off on; do
      "$onboard" eval --data "$MSL_DATA" --labels "$out/val-chrono.txt" --model "$dir/bundle" \
        --adapt "$adapt" --json > "$dir/eval-$adapt.tmp" 2>> "$dir/log.txt"
      mv "$dir/eval-$adapt.tmp" "$dir/eval-$adapt.json"
    done
  done
done
"$TRIAGE_PYTHON" scripts/ablation_table.py "$out" > "$out/summary.md"
cat "$out/summary.md"
