"""Summarizes runs/ablation/<variant>-s<seed>/metrics.json as a Markdown table: mean +- std
over seeds of validation top-1 and macro-F1, and the individual runs' top-1."""

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


def fmt(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f}"


def main():
    root = sys.argv[1]
    print("| objective | seeds | val top-1 | val macro-F1 | top-1 per seed |")
    print("|---|---|---|---|---|")
    for key, label in ORDER:
        runs = []
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name, "metrics.json")
            if name.startswith(key + "-s") and os.path.isfile(path):
                runs.append(json.load(open(path)))
        top1 = [r["validation"]["top1"] for r in runs if r.get("validation")]
        f1 = [r["validation"]["macro_f1"] for r in runs if r.get("validation")]
        each = ", ".join(f"{v:.4f}" for v in top1) or "-"
        print(f"| {label} | {len(runs)} | {fmt(top1)} | {fmt(f1)} | {each} |")


if __name__ == "__main__":
    main()
