"""Summarizes runs/ablation/<variant>-s<seed>/eval-{off,on}.json (`onboard eval` on validation in
sol order) as a Markdown table: per objective, mean +- std over seeds of top-1, macro-F1 and
balanced accuracy with adaptation off, and of macro-F1 and balanced accuracy with it on."""

import json
import os
import statistics
import sys

ORDER = [
    ("ce", "L_cls only"),
    ("ls", "L_cls + L_s"),
    ("lu", "L_cls + 0.2 L_u"),
    ("full", "L_cls + L_s + 0.2 L_u"),
    ("simclr", "L_cls + Eq. 1 (sample-wise) instead of L_s"),
]

COLUMNS = [
    ("off", "top1", "top-1"),
    ("off", "macro_f1", "macro-F1"),
    ("off", "balanced_accuracy", "balanced"),
    ("on", "macro_f1", "adapted macro-F1"),
    ("on", "balanced_accuracy", "adapted balanced"),
]


def fmt(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f}"


def load(root, key):
    runs = []
    for name in sorted(os.listdir(root)):
        off = os.path.join(root, name, "eval-off.json")
        on = os.path.join(root, name, "eval-on.json")
        if name.startswith(key + "-s") and os.path.isfile(off) and os.path.isfile(on):
            runs.append({"off": json.load(open(off)), "on": json.load(open(on))})
    return runs


def main():
    root = sys.argv[1]
    print("| objective | seeds | " + " | ".join(c[2] for c in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for key, label in ORDER:
        runs = load(root, key)
        cells = [fmt([r[side][metric] for r in runs]) for side, metric, _ in COLUMNS]
        print(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
