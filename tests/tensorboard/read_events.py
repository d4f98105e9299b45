#!/usr/bin/env python3
"""Reads TensorBoard event files with TensorBoard's own reader and checks what they hold.

    read_events.py PATH [--expect-scalar TAG]... [--expect-value TAG STEP VALUE]...
                        [--expect-text TAG]... [--expect-text-value TAG STEP SUBSTRING]...
                        [--expect-absent TAG STEP]... [--min-steps N] [--list]
    read_events.py PATH --check-corruption-detected SCRATCH_DIR

PATH is an events file or a folder: every folder under it that holds event files is a run (as
TensorBoard's --logdir sees them, an example's output folder for instance), checked on its own.
Every record must pass TensorBoard's record reader (length and data CRC-32C), and a file must
begin with the version event "brain.Event:2". Then, per run, through TensorBoard's
EventAccumulator: each --expect-scalar tag has scalars at --min-steps distinct steps or more
(default 1); --expect-value: the scalar at STEP equals VALUE to float precision; --expect-text:
a text-plugin sample with that tag; --expect-text-value: the text at STEP contains SUBSTRING;
--expect-absent: no scalar with that tag at STEP. The expected tags must also reach the scalars
and text plugins through the loader of TensorBoard's web UI. Without any --expect-scalar, --min-steps asks
for one scalar tag with at least that many steps. --list prints each run's tags. Exit status 0
when every check holds, 1 otherwise.

--check-corruption-detected flips one byte in each part of the last record of PATH's first
events file (length, length CRC, data, data CRC), a copy per part in SCRATCH_DIR, and exits 0
only if TensorBoard's reader rejects every copy: evidence that it verifies the CRCs that the
files passed. (TensorBoard's loader stops quietly at a bad record, so a run with a corrupt record
loses its events without an error; hence the explicit record check above.)

Needs the `tensorboard` package (cmake/install-deps.sh makes a virtual environment with it).
"""
import argparse
import math
import os
import shutil
import struct
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors as tb_errors
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
    from tensorboard.util import tensor_util
except ImportError as e:
    sys.exit(f"read_events.py: TensorBoard is not importable by {sys.executable} ({e}); "
             "run cmake/install-deps.sh and use the python of its virtual environment")

EVENTS_MARK = "tfevents"


def event_files(path):
    """{run folder: [event files, sorted]} for a file or a folder tree."""
    if os.path.isfile(path):
        return {os.path.dirname(path) or ".": [path]}
    runs = {}
    for folder, _, names in os.walk(path):
        files = sorted(os.path.join(folder, n) for n in names if EVENTS_MARK in n)
        if files:
            runs[folder] = files
    return runs


def read_records(path):
    """The records of `path` through TensorBoard's reader; raises its DataLossError on a bad one."""
    reader = pywrap_tensorflow.PyRecordReader_New(path)
    records = []
    try:
        while True:
            try:
                reader.GetNext()
            except tb_errors.OutOfRangeError:
                return records
            records.append(reader.record())
    finally:
        reader.file_handle.close()


def check_records(path, problems):
    try:
        records = read_records(path)
    except tb_errors.DataLossError as e:
        problems.append(f"{path}: TensorBoard's record reader rejected it: {e.message}")
        return
    if not records:
        problems.append(f"{path}: no records")
        return
    first = event_pb2.Event.FromString(records[0])
    if first.file_version != "brain.Event:2":
        problems.append(f"{path}: first event is not the file version 'brain.Event:2' ({first})")


def load_run(path, files):
    """The run through EventAccumulator (events as written), and the tags of each plugin as the
    web UI's loader sees them (plugin_event_accumulator: legacy summaries migrated to plugins)."""
    # A file path loads that file only; a folder loads every events file in it.
    source = files[0] if len(files) == 1 and os.path.isfile(path) else os.path.dirname(files[0])
    accumulator = event_accumulator.EventAccumulator(
        source, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
    accumulator.Reload()
    ui = plugin_event_accumulator.EventAccumulator(source)
    ui.Reload()
    plugins = {name: set(ui.PluginTagToContent(name)) for name in ui.ActivePlugins()}
    return accumulator, plugins


def text_samples(accumulator, tag):
    """{step: text} of a text-plugin tag."""
    samples = {}
    for event in accumulator.Tensors(tag):
        values = tensor_util.make_ndarray(event.tensor_proto).reshape(-1)
        samples[event.step] = "\n".join(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)
    return samples


def check_run(run, loaded, args, problems):
    accumulator, plugins = loaded
    tags = accumulator.Tags()
    scalar_tags = set(tags.get("scalars", []))
    try:
        text_tags = set(accumulator.PluginTagToContent("text"))
    except KeyError:  # no summary of the text plugin
        text_tags = set()
    scalars = {tag: {e.step: e.value for e in accumulator.Scalars(tag)} for tag in scalar_tags}

    if args.list:
        print(f"run {run}:")
        for tag in sorted(scalars):
            steps = sorted(scalars[tag])
            print(f"  scalar {tag}: {len(steps)} steps ({steps[0]}..{steps[-1]}), last {scalars[tag][steps[-1]]:.6g}")
        for tag in sorted(text_tags):
            print(f"  text {tag}: steps {sorted(text_samples(accumulator, tag))}")

    for tag in args.expect_scalar:
        if tag not in scalars:
            problems.append(f"{run}: no scalar '{tag}' (scalars: {sorted(scalars)})")
        elif len(scalars[tag]) < args.min_steps:
            problems.append(f"{run}: scalar '{tag}' at {len(scalars[tag])} steps, expected {args.min_steps} or more")
    if not args.expect_scalar and args.min_steps > 1:
        most = max((len(s) for s in scalars.values()), default=0)
        if most < args.min_steps:
            problems.append(f"{run}: no scalar at {args.min_steps} steps or more (most: {most})")
    for tag, step, value in args.expect_value:
        step, value = int(step), float(value)
        got = scalars.get(tag, {}).get(step)
        # Stored as float32: its precision, relative, and an absolute floor for values near 0.
        if got is None:
            problems.append(f"{run}: no scalar '{tag}' at step {step}")
        elif not math.isclose(got, value, rel_tol=2e-7, abs_tol=1e-30):
            problems.append(f"{run}: scalar '{tag}' at step {step} is {got!r}, expected {value!r}")
    for tag, step in args.expect_absent:
        if int(step) in scalars.get(tag, {}):
            problems.append(f"{run}: scalar '{tag}' at step {step} should not be there")
    for tag in args.expect_text:
        if tag not in text_tags:
            problems.append(f"{run}: no text sample '{tag}' (text tags: {sorted(text_tags)})")
    for plugin, tags in (("scalars", args.expect_scalar), ("text", args.expect_text)):
        for tag in tags:
            if tag not in plugins.get(plugin, set()):
                problems.append(f"{run}: the web UI's loader has no '{tag}' in its {plugin} plugin")
    for tag, step, substring in args.expect_text_value:
        samples = text_samples(accumulator, tag) if tag in text_tags else {}
        if int(step) not in samples:
            problems.append(f"{run}: no text sample '{tag}' at step {step}")
        elif substring not in samples[int(step)]:
            problems.append(f"{run}: text '{tag}' at step {step} is {samples[int(step)]!r}, lacks {substring!r}")


def check_corruption_detected(path, scratch):
    runs = event_files(path)
    if not runs:
        return [f"{path}: no event files"]
    source = next(iter(runs.values()))[0]
    data = open(source, "rb").read()
    # Walk the framing to the last record: 8 length bytes, 4 CRC, data, 4 CRC.
    offset, last = 0, None
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        last = offset, length
        offset += 12 + length + 4
    if last is None or offset != len(data):
        return [f"{source}: the records do not tile the file"]
    start, length = last
    parts = {"length": start, "length CRC": start + 8, "data": start + 12 + length // 2,
             "data CRC": start + 12 + length}
    os.makedirs(scratch, exist_ok=True)
    problems = []
    for part, at in parts.items():
        corrupt = bytearray(data)
        corrupt[at] ^= 0x01
        copy = os.path.join(scratch, f"events.out.tfevents.corrupt-{part.replace(' ', '-')}")
        with open(copy, "wb") as f:
            f.write(corrupt)
        try:
            read_records(copy)
            problems.append(f"{copy}: TensorBoard's reader accepted a flipped byte in the {part}")
        except tb_errors.DataLossError as e:
            print(f"corrupt {part}: rejected ({e.message})")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path")
    parser.add_argument("--expect-scalar", action="append", default=[], metavar="TAG")
    parser.add_argument("--expect-value", action="append", default=[], nargs=3, metavar=("TAG", "STEP", "VALUE"))
    parser.add_argument("--expect-absent", action="append", default=[], nargs=2, metavar=("TAG", "STEP"))
    parser.add_argument("--expect-text", action="append", default=[], metavar="TAG")
    parser.add_argument("--expect-text-value", action="append", default=[], nargs=3,
                        metavar=("TAG", "STEP", "SUBSTRING"))
    parser.add_argument("--min-steps", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="print each run's tags")
    parser.add_argument("--check-corruption-detected", metavar="SCRATCH_DIR")
    args = parser.parse_args()

    if args.check_corruption_detected:
        shutil.rmtree(args.check_corruption_detected, ignore_errors=True)
        problems = check_corruption_detected(args.path, args.check_corruption_detected)
    else:
        runs = event_files(args.path)
        problems = [] if runs else [f"{args.path}: no event files (names containing '{EVENTS_MARK}')"]
        for run, files in sorted(runs.items()):
            for f in files:
                check_records(f, problems)
            check_run(run, load_run(args.path, files), args, problems)
    for problem in problems:
        print(f"read_events.py: {problem}", file=sys.stderr)
    if not problems:
        print("read_events.py: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
