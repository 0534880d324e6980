"""Grid search of the onboard planner's settings with `onboard downlink-bench` on one split.

usage: python3 scripts/tune_planner.py ONBOARD_BIN DATA LABELS [--model DIR]
Prints one JSON line per setting (chronological order of LABELS is the caller's choice) and the
best setting last. Tune on validation only.
"""
import itertools
import json
import subprocess
import sys
import tempfile
import tomllib

GRID = {
    "novelty": [0.0, 0.15, 0.3],
    "cluster_decay": [0.25, 0.5, 1.0],
    # Cosine distance between latents (scale-free): 0 turns near-duplicate detection off.
    "duplicate_distance": [0.0, 0.05, 0.1, 0.15],
}


def main() -> int:
    bin_, data, labels, *rest = sys.argv[1:]
    base = tomllib.load(open("configs/values.toml", "rb"))
    best = None
    for combo in itertools.product(*GRID.values()):
        planner = dict(zip(GRID.keys(), combo))
        lines = ["[values]"] + [f'"{k}" = {v}' for k, v in base["values"].items()]
        lines += ["[planner]"] + [f"{k} = {v}" for k, v in planner.items()]
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        out = subprocess.run([bin_, "downlink-bench", "--data", data, "--labels", labels, "--values", f.name,
                              "--pass-images", "100", "--budget-fraction", "0.15", "--json", *rest],
                             check=True, capture_output=True, text=True).stdout
        pol = json.loads(out)["policies"]
        row = {"planner": planner, "onboard": pol["onboard"]["value_ratio"], "fifo": pol["fifo"]["value_ratio"]}
        print(json.dumps(row), flush=True)
        if best is None or row["onboard"] > best["onboard"]:
            best = row
    print(json.dumps({"best": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
