#!/usr/bin/env python3
"""Measures on-board stream adaptation on the validation split in sol order.

Runs `onboard eval` on `val-calibrated-shuffled.txt` sorted by file name (= by sol) with
adaptation off, then on for every prior window x centroid prior count given, and prints one
markdown table (top-1, macro-F1, balanced accuracy, clusters) plus the per-class recall of
`off` and of the best adapted setting (by balanced accuracy, then macro-F1). Every run's JSON is
kept in --out.

    python3 scripts/adapt_sweep.py --onboard target/release/onboard \
        --model runs/bundles/train-only --data "$MSL_DATA" --out runs/adapt-sweep
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def eval_run(args, labels, extra):
    cmd = [args.onboard, "eval", "--data", args.data, "--labels", labels,
           "--model", args.model, "--json"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def row(name, d):
    return (f"| {name} | {d['top1']:.4f} | {d['macro_f1']:.4f} | {d['balanced_accuracy']:.4f} "
            f"| {d['cluster_hungarian_acc']:.4f} | {d['cluster_majority_acc']:.4f} "
            f"| {d['nmi']:.4f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onboard", required=True, help="onboard binary (release build)")
    p.add_argument("--model", required=True, help="bundle trained without the validation split")
    p.add_argument("--data", required=True, help="MSL dataset root")
    p.add_argument("--out", required=True, help="folder for every run's JSON")
    p.add_argument("--windows", default="50,100,200,400")
    p.add_argument("--prior-counts", default="10,50,200")
    args = p.parse_args()
    manifest = json.load(open(os.path.join(args.model, "manifest.json")))
    splits = manifest["provenance"]["train_splits"]
    if "val-calibrated-shuffled.txt" in splits:
        sys.exit(f"error: {args.model} was trained on the validation split; pass a bundle trained "
                 "on the train split only")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.data, "val-calibrated-shuffled.txt")) as f:
        lines = sorted(l for l in f if l.strip())
    labels = os.path.join(tempfile.mkdtemp(), "val-chrono.txt")
    with open(labels, "w") as f:
        f.writelines(lines)
    runs = {"off": eval_run(args, labels, ["--adapt", "off"])}
    for w in args.windows.split(","):
        for n in args.prior_counts.split(","):
            name = f"on, window {w}, prior count {n}"
            print(f"adapt-sweep: {name}", file=sys.stderr)
            runs[name] = eval_run(args, labels, ["--adapt", "on", "--prior-window", w,
                                                 "--centroid-prior-count", n])
    for name, d in runs.items():
        d.pop("predictions", None)
        slug = name.replace(", ", "-").replace(" ", "")
        with open(os.path.join(args.out, f"{slug}.json"), "w") as f:
            json.dump(d, f, indent=1)
    print(f"validation in sol order, {runs['off']['images']} images, bundle {args.model} "
          f"({runs['off']['precision']})\n")
    print("| adaptation | top-1 | macro-F1 | balanced acc. | Hungarian | majority | NMI |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, d in runs.items():
        print(row(name, d))
    best = max((k for k in runs if k != "off"),
               key=lambda k: (runs[k]["balanced_accuracy"], runs[k]["macro_f1"]))
    print(f"\nper-class recall, off vs {best}:\n")
    print("| class | off | adapted |\n| --- | --- | --- |")
    off, on = runs["off"]["per_class_recall"], runs[best]["per_class_recall"]
    for c in sorted(off):
        print(f"| {c} | {off[c]:.3f} | {on.get(c, 0.0):.3f} |")


if __name__ == "__main__":
    main()
