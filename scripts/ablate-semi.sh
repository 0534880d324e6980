#!/usr/bin/env bash
# Ablation of the semi-supervised objective (train split -> validation split), one run per
# variant and seed: ce (L_cls only), ls (+ L_s), lu (+ L_u), full (L_cls + L_s + 0.2 L_u),
# simclr (L_cls + the paper's Eq. 1 instead of L_s). Runs land in runs/ablation/<variant>-s<seed>/
# and the summary table in runs/ablation/summary.md.
# Usage: MSL_DATA=... scripts/ablate-semi.sh [BASE_CONFIG] [SEEDS...]
set -Eeuo pipefail
trap 'echo "error: $0: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
source scripts/env.sh
: "${MSL_DATA:?set MSL_DATA to the dataset root}"
base="${1:-configs/semi/cpu-96.json}"
shift || true
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(17)
cargo build --release -p host-trainer >&2
bin="$CARGO_TARGET_DIR/release/host-trainer"
out=runs/ablation
mkdir -p "$out"
for variant in ce ls lu full simclr; do
  for seed in "${seeds[@]}"; do
    dir="$out/$variant-s$seed"
    [ -f "$dir/metrics.json" ] && continue
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
    TRIAGE_PROGRESS=0 "$bin" semi --data "$MSL_DATA" --config "$dir/config.json" --seed "$seed" \
      --work "$dir" --device auto 2> "$dir/log.txt" || { tail -n 5 "$dir/log.txt" >&2; exit 1; }
  done
done
"$TRIAGE_PYTHON" scripts/ablation_table.py "$out" > "$out/summary.md"
cat "$out/summary.md"
