#!/bin/sh
# Side by side, on one thread: the TRL PPOTrainer formulation of the clipped policy loss
# (forward + backward + statistics) on Debian's python3-torch, and the fused rlhf::policy_loss
# through rlhf_benchmarks, at the same sizes; prints ns/token and the speed-up. See README.md.
#
# Usage: benchmarks/compare_python_trl.sh [path/to/rlhf_benchmarks] [sizes, e.g. 256x2048,512x4096]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bench=${1:-build/bench/benchmarks/rlhf_benchmarks}
sizes=${2:-256x2048,512x4096}
python=/usr/bin/python3  # Debian's interpreter, which sees Debian's python3-torch
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$python" "$here/python_trl_policy_loss.py" --sizes "$sizes" > "$out/python.jsonl"
filter="policy_loss/fused/($(echo "$sizes" | tr "," "|"))/"
"$bench" --benchmark_filter="$filter" --benchmark_repetitions=3 \
    --benchmark_out="$out/fused.json" --benchmark_out_format=json > "$out/bench.log" 2>&1

"$python" - "$out/python.jsonl" "$out/fused.json" <<'EOF'
import json, sys
python = [json.loads(line) for line in open(sys.argv[1])]
fused = {}
for e in json.load(open(sys.argv[2]))["benchmarks"]:
    if e.get("run_type") == "aggregate":
        continue
    size = e["name"].split("/")[2]
    scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}[e["time_unit"]]
    fused[size] = min(fused.get(size, float("inf")), e["cpu_time"] * scale)
print(f"torch {python[0]['torch']} ({python[0]['torch_file']}), {python[0]['threads']} thread; CPU time of the thread, best of 3")
print(f"{'size':>10}  {'TRL (torch) ns/token':>21}  {'rlhf fused ns/token':>20}  {'speed-up':>8}")
for p in python:
    b, t = (int(x) for x in p["size"].split("x"))
    ours = fused[p["size"]] / (b * t)
    print(f"{p['size']:>10}  {p['ns_per_token']:>21.2f}  {ours:>20.2f}  {p['ns_per_token'] / ours:>7.1f}x")
EOF
