#!/usr/bin/env python3
"""The GPU benchmark table: each row's median time as a ratio to the yardstick of its family and
size measured in the same run (`device_copy`, or `device_read` for forward-only logits rows), its
extra memory, and how many times faster the library's row is.

    python3 benchmarks/gpu/report.py cuda_benchmarks.json
"""
import json
import sys
from collections import defaultdict

YARDSTICKS = ("device_copy", "device_read")
OURS = ("cuda", "rlhf_libtorch")


def main(path):
    with open(path) as f:
        data = json.load(f)
    rows = defaultdict(dict)  # (family, size) -> implementation -> (ms, extra bytes)
    for b in data["benchmarks"]:
        if b.get("aggregate_name", "median") != "median" or b.get("error_occurred"):
            continue
        family, implementation, size = b["run_name"].split("/", 2)
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ms")]
        rows[(family, size)][implementation] = (b["real_time"] * scale, b.get("extra_bytes"))
    print("| family | size | implementation | median ms | × yardstick | extra memory | rlhf faster by |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (family, size), impls in sorted(rows.items()):
        yard = next(((name, impls[name][0]) for name in YARDSTICKS if name in impls), None)
        ours = min((impls[name][0] for name in OURS if name in impls), default=None)
        for implementation, (ms, extra) in sorted(impls.items(), key=lambda kv: kv[1][0]):
            ratio = f"{ms / yard[1]:.2f}× {yard[0]}" if yard and implementation not in YARDSTICKS else ""
            memory = f"{extra / 2**30:.2f} GiB" if extra is not None else ""
            faster = f"{ms / ours:.1f}×" if ours and implementation not in OURS + YARDSTICKS else ""
            print(f"| {family} | {size} | {implementation} | {ms:.3f} | {ratio} | {memory} | {faster} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cuda_benchmarks.json")
