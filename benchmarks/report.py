#!/usr/bin/python3
"""Turns rlhf_benchmarks' JSON output into a markdown report and a PNG chart.

    rlhf_benchmarks --benchmark_out=results.json --benchmark_out_format=json
    /usr/bin/python3 benchmarks/report.py results.json --markdown results.md --chart results.png

Rows are named <family>/<implementation>/<size> (Google Benchmark appends /real_time). For every
family and size the ratio of an implementation is its time divided by the time of the `memcpy`
row of the same family and size, measured in the same run: a memcpy of the implementation's
input + output bytes. Times are the benchmark thread's CPU time by default (on a shared machine
it excludes the time the thread waits for a core); `--time real` uses wall time, which is what
counts for device kernels (runs with torch_device cuda default to it).

Standard library only, plus matplotlib for the chart (Debian: python3-matplotlib); without
matplotlib the markdown is still written.
"""

import argparse
import json
import math
import sys
from collections import OrderedDict

UNIT_TO_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
IMPL_ORDER = ["memcpy", "fused", "libtorch_fused", "libtorch_composed", "libtorch_log_softmax_gather", "eigen",
              "xtensor"]
GOAL_MIN_TOKENS = 64 * 1024


def parse_size(label):
    """'64x1024' -> (64, 1024, 0); '4x256xV32768' -> (4, 256, 32768)."""
    parts = label.split("x")
    batch, steps = int(parts[0]), int(parts[1])
    vocab = int(parts[2][1:]) if len(parts) > 2 else 0
    return batch, steps, vocab


def load(paths, time_field):
    context = {}
    rows = []
    errors = []
    for path in paths:
        with open(path) as handle:
            data = json.load(handle)
        context.update(data.get("context", {}))
        for entry in data.get("benchmarks", []):
            if entry.get("run_type", "iteration") != "iteration":
                continue
            parts = [p for p in entry["name"].split("/") if p != "real_time" and not p.startswith("min_time")]
            if len(parts) < 3:
                continue
            family, impl, size = parts[0], parts[1], parts[2]
            if entry.get("error_occurred"):
                errors.append((family, impl, size, entry.get("error_message", "")))
                continue
            scale = UNIT_TO_US[entry.get("time_unit", "ns")]
            batch, steps, _ = parse_size(size)
            time_us = entry[time_field] * scale
            rows.append({
                "family": family, "impl": impl, "size": size, "shape": parse_size(size),
                "time_us": time_us,
                # Recomputed from the chosen time (the JSON's counter is per wall second).
                "tokens_per_second": batch * steps / (time_us * 1e-6) if time_us > 0 else None,
                "io_bytes": entry.get("io_bytes"),
                "peak_mib": entry.get("peak_MiB"),
                "extra_mib": entry.get("extra_MiB"),
            })
    return context, rows, errors


def organise(rows):
    """family -> size -> impl -> row, in the order of the run."""
    table = OrderedDict()
    for row in rows:
        table.setdefault(row["family"], OrderedDict()).setdefault(row["size"], OrderedDict())[row["impl"]] = row
    return table


def impl_key(impl):
    return (IMPL_ORDER.index(impl) if impl in IMPL_ORDER else len(IMPL_ORDER), impl)


def fmt_time(us):
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.2f} ms"
    return f"{us:.1f} µs"


def fmt_rate(tokens_per_second):
    if tokens_per_second is None:
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if tokens_per_second >= scale:
            return f"{tokens_per_second / scale:.3g} {unit}tok/s"
    return f"{tokens_per_second:.3g} tok/s"


def ratio(row, sizes):
    base = sizes.get("memcpy")
    if base is None or base["time_us"] <= 0:
        return None
    return row["time_us"] / base["time_us"]


def markdown(context, table, errors, time_field):
    out = []
    cpus = context.get("num_cpus", "?")
    mhz = context.get("mhz_per_cpu", "?")
    out.append(f"Machine: {cpus} CPUs at {mhz} MHz; "
               f"load average {', '.join(f'{x:.2f}' for x in context.get('load_avg', []))}; "
               f"LibTorch {context.get('torch_version', '?')} on {context.get('torch_device', '?')} "
               f"({context.get('torch_threads', '?')} thread, CPU kernels {context.get('torch_cpu_capability', '?')}); "
               f"memory counter: {context.get('rlhf_memory_counter', '?')}; "
               f"times: {'CPU time of the benchmark thread' if time_field == 'cpu_time' else 'wall time'}.")
    out.append("")
    out.append("Cell: time ÷ memcpy of the same bytes in the same run (lower is better; < 1 is faster than the "
               "copy) and tokens per second.")
    out.append("")
    for family, sizes in table.items():
        impls = sorted({impl for per_size in sizes.values() for impl in per_size}, key=impl_key)
        logits = any(parse_size(size)[2] for size in sizes)
        out.append(f"### {family}")
        out.append("")
        out.append("| implementation | " + " | ".join(sizes.keys()) + " |")
        out.append("|---|" + "---|" * len(sizes))
        for impl in impls:
            cells = []
            for size, per_size in sizes.items():
                row = per_size.get(impl)
                if row is None:
                    cells.append("–")
                    continue
                r = ratio(row, per_size)
                text = f"{fmt_time(row['time_us'])}" if impl == "memcpy" else (
                    f"**{r:.2f}×** · {fmt_rate(row['tokens_per_second'])}" if r is not None else fmt_time(row["time_us"]))
                if logits and impl != "memcpy" and row.get("peak_mib") is not None:
                    text += f" · peak {row['peak_mib']:.4g} MiB (extra {row['extra_mib']:.3g})"
                cells.append(text)
            out.append(f"| {impl} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("### Fused kernel against the LibTorch composed ops (time of composed ÷ time of fused)")
    out.append("")
    speedups = []
    for family, sizes in table.items():
        for size, per_size in sizes.items():
            fused = per_size.get("fused")
            for other in ("libtorch_composed", "libtorch_log_softmax_gather"):
                if fused and other in per_size:
                    speedups.append((family, size, other, per_size[other]["time_us"] / fused["time_us"]))
    if speedups:
        out.append("| family | size | baseline | speed-up |")
        out.append("|---|---|---|---|")
        for family, size, other, s in speedups:
            out.append(f"| {family} | {size} | {other} | {s:.1f}× |")
        out.append("")
    out.extend(goals(table))
    if errors:
        out.append("### Rows that did not run")
        out.append("")
        for family, impl, size, message in errors:
            out.append(f"- {family}/{impl}/{size}: {message}")
        out.append("")
    return "\n".join(out)


def verdict(ok):
    return "**met**" if ok else "**missed**"


def goals(table):
    out = ["### Goals (one thread, float, B×T ≥ 64×1024)", ""]
    # 1. Fused GAE within 2x of a memcpy of its bytes.
    lines = []
    all_ok = True
    for family, sizes in table.items():
        if not family.startswith("gae."):
            continue
        for size, per_size in sizes.items():
            b, t, _ = parse_size(size)
            if b * t < GOAL_MIN_TOKENS or "fused" not in per_size:
                continue
            r = ratio(per_size["fused"], per_size)
            if r is None:
                continue
            all_ok &= r <= 2.0
            lines.append(f"{family} {size}: {r:.2f}×")
    if lines:
        out.append(f"1. Fused GAE within 2× of a memcpy of its bytes: {verdict(all_ok)} ({'; '.join(lines)}).")
    # 2. Fused policy loss forward+backward at least 5x faster than LibTorch composed.
    lines = []
    all_ok = True
    for size, per_size in table.get("policy_loss", {}).items():
        b, t, _ = parse_size(size)
        if b * t < GOAL_MIN_TOKENS or "fused" not in per_size or "libtorch_composed" not in per_size:
            continue
        s = per_size["libtorch_composed"]["time_us"] / per_size["fused"]["time_us"]
        all_ok &= s >= 5.0
        lines.append(f"{size}: {s:.1f}×")
    if lines:
        out.append(f"2. Fused policy loss forward + backward ≥ 5× faster than LibTorch composed: {verdict(all_ok)} "
                   f"({'; '.join(lines)}).")
    # 3. Logits: peak extra memory <= 1/4 of log_softmax + gather, and faster.
    lines = []
    all_ok = True
    for size, per_size in table.get("logprobs", {}).items():
        fused, base = per_size.get("fused"), per_size.get("libtorch_log_softmax_gather")
        if not fused or not base:
            continue
        faster = fused["time_us"] < base["time_us"]
        text = f"{size}: time {fused['time_us'] / base['time_us']:.2f}× of log_softmax + gather"
        if fused.get("extra_mib") is not None and base.get("extra_mib"):
            extra = fused["extra_mib"] / base["extra_mib"]
            peak = fused["peak_mib"] / base["peak_mib"]
            all_ok &= extra <= 0.25 and faster
            text += (f", extra memory {fused['extra_mib']:.2f} vs {base['extra_mib']:.0f} MiB ({extra:.3f}×), "
                     f"peak with the outputs {fused['peak_mib']:.0f} vs {base['peak_mib']:.0f} MiB ({peak:.2f}×)")
        else:
            all_ok &= faster
        lines.append(text)
    if lines:
        out.append(f"3. Fused log-probs kernel (forward + backward) peaks at ≤ 1/4 of the memory of log_softmax + "
                   f"gather and is faster: {verdict(all_ok)} ({'; '.join(lines)}).")
    out.append("")
    return out


def chart(table, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: matplotlib not found (Debian: apt-get install python3-matplotlib); no chart",
              file=sys.stderr)
        return
    families = [f for f in table if not f.startswith("check.")]
    columns = 4
    rows = math.ceil(len(families) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    colours = {}
    palette = plt.get_cmap("tab10")
    for index, family in enumerate(families):
        axis = axes[index // columns][index % columns]
        sizes = table[family]
        impls = sorted({impl for per_size in sizes.values() for impl in per_size if impl != "memcpy"}, key=impl_key)
        labels = list(sizes.keys())
        for impl in impls:
            xs, ys = [], []
            for position, (size, per_size) in enumerate(sizes.items()):
                row = per_size.get(impl)
                r = ratio(row, per_size) if row else None
                if r:
                    xs.append(position)
                    ys.append(r)
            if not xs:
                continue
            colour = colours.setdefault(impl, palette(len(colours) % 10))
            axis.plot(xs, ys, marker="o", label=impl, color=colour)
        axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        axis.set_yscale("log")
        axis.set_title(family, fontsize=10)
        axis.set_xticks(range(len(labels)))
        axis.set_xticklabels(labels, fontsize=7, rotation=20)
        axis.set_ylabel("time ÷ memcpy", fontsize=8)
        axis.tick_params(axis="y", labelsize=7)
    spare = len(families)
    for family in [f for f in table if any(r.get("extra_mib") is not None for s in table[f].values()
                                           for i, r in s.items() if i != "memcpy")]:
        if not any(parse_size(size)[2] for size in table[family]) or spare >= rows * columns:
            continue
        axis = axes[spare // columns][spare % columns]
        spare += 1
        sizes = table[family]
        impls = sorted({i for per_size in sizes.values() for i in per_size if i != "memcpy"}, key=impl_key)
        width = 0.8 / max(len(impls), 1)
        for k, impl in enumerate(impls):
            values = [(per_size.get(impl) or {}).get("peak_mib") or 0.0 for per_size in sizes.values()]
            colour = colours.setdefault(impl, palette(len(colours) % 10))
            axis.bar([p + k * width for p in range(len(sizes))], values, width=width, color=colour)
        axis.set_xticks([p + 0.4 - width / 2 for p in range(len(sizes))])
        axis.set_xticklabels(list(sizes.keys()), fontsize=7)
        axis.set_title(f"{family}: peak MiB of one call", fontsize=10)
        axis.set_yscale("log")
        axis.tick_params(axis="y", labelsize=7)
    for index in range(spare, rows * columns):
        axes[index // columns][index % columns].axis("off")
    handles = [plt.Line2D([], [], color=c, marker="o", label=i) for i, c in sorted(colours.items(), key=lambda kv: impl_key(kv[0]))]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=9)
    figure.suptitle("rlhf_benchmarks: time relative to a memcpy of the same bytes (log scale, lower is better)")
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    figure.savefig(path, dpi=110)
    print(f"report.py: wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", help="--benchmark_format=json output(s) of rlhf_benchmarks")
    parser.add_argument("--markdown", help="write the markdown report here (default: stdout)")
    parser.add_argument("--chart", help="write the PNG chart here")
    parser.add_argument("--time", choices=("cpu", "real"), help="CPU time (default on CPU runs) or wall time")
    args = parser.parse_args()
    context, _, _ = load(args.json, "real_time")
    device = str(context.get("torch_device", "cpu"))
    time_field = {"cpu": "cpu_time", "real": "real_time"}.get(args.time) or (
        "real_time" if device.startswith("cuda") else "cpu_time")
    context, rows, errors = load(args.json, time_field)
    table = organise(rows)
    text = markdown(context, table, errors, time_field)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text + "\n")
        print(f"report.py: wrote {args.markdown}")
    else:
        print(text)
    if args.chart:
        chart(table, args.chart)


if __name__ == "__main__":
    main()
