"""Checks that two `onboard eval --json` outputs (e.g. x86 and aarch64) made the same predictions.

usage: python3 compare_eval.py A.json B.json   (exit 1 on any difference)
"""
import json
import sys


def main() -> int:
    a, b = (json.load(open(p)) for p in sys.argv[1:3])
    if a["images"] != b["images"] or a["skipped"] != b["skipped"]:
        print(f"image counts differ: {a['images']}/{a['skipped']} vs {b['images']}/{b['skipped']}")
        return 1
    diff = [i for i, (x, y) in enumerate(zip(a["predictions"], b["predictions"])) if x != y]
    if diff:
        print(f"{len(diff)} of {a['images']} predictions differ, first at item {diff[0]}")
        return 1
    print(f"predictions equal on {a['images']} images (top1 {a['top1']:.4f}, NMI {a['nmi']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
