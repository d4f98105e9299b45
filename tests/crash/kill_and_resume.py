#!/usr/bin/env python3
"""Kills a PPO training process (SIGKILL) at random points and resumes it until it finishes.

Checks: the resumed run's final weights equal an uninterrupted run's byte for byte; every run
that starts finds a checkpoint it can load (the trainer exits non-zero otherwise), so no kill
ever left a torn one; some kills land while a checkpoint is being written (its temporary file
exists at the kill), the others at random times.

    kill_and_resume.py TRAINER WORK_DIR [--steps N] [--kills K] [--seed S]
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time


def run_to_end(trainer, directory, steps):
    done = subprocess.run([trainer, directory, str(steps)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"FAIL: {trainer} {directory} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def writing(temporary, since_ns):
    """Whether this run is writing a checkpoint: a temporary file written since it started (a
    stale one, left by an earlier kill, is older)."""
    try:
        return os.stat(temporary).st_mtime_ns >= since_ns
    except FileNotFoundError:
        return False


def start_step(output):
    return int(output.split()[1]) if output.startswith("start ") else -1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trainer")
    parser.add_argument("work_dir")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    shutil.rmtree(args.work_dir, ignore_errors=True)
    uninterrupted = os.path.join(args.work_dir, "uninterrupted")
    killed = os.path.join(args.work_dir, "killed")
    os.makedirs(uninterrupted)
    os.makedirs(killed)

    # The uninterrupted run, timed from its "start" line (models built) to its end.
    process = subprocess.Popen([args.trainer, uninterrupted, str(args.steps)], stdout=subprocess.PIPE, text=True)
    process.stdout.readline()
    begin = time.monotonic()
    if process.wait() != 0:
        sys.exit(f"FAIL: the uninterrupted run exited {process.returncode}")
    per_step = (time.monotonic() - begin) / args.steps
    print(f"uninterrupted run: {args.steps} steps, {per_step * 1000:.0f} ms per step with its checkpoint")

    temporary = os.path.join(killed, "checkpoint.pt.tmp")
    during_write = at_random = 0
    starts = []
    for kill in range(args.kills):
        # Alternate: a kill as soon as this run is seen writing a checkpoint, and one at a random
        # time of the steps it has left.
        in_write = kill % 2 == 0
        launched = time.time_ns()
        process = subprocess.Popen([args.trainer, killed, str(args.steps)], stdout=subprocess.PIPE, text=True)
        started = start_step(process.stdout.readline())  # after the checkpoint was loaded
        if started == -1:
            sys.exit(f"FAIL: kill {kill}: the trainer could not start (exit {process.wait()}): "
                     "a checkpoint it could not load?")
        starts.append(started)
        deadline = time.monotonic() + (args.steps - started) * per_step * (2.0 if in_write else rng.uniform(0.0, 0.7))
        hit_write = False
        while process.poll() is None and time.monotonic() < deadline:
            if in_write and writing(temporary, launched):
                break
            if not in_write:
                time.sleep(0.0005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            hit_write = writing(temporary, launched)
        process.wait()
        if process.returncode not in (0, -signal.SIGKILL):
            sys.exit(f"FAIL: kill {kill}: the trainer exited {process.returncode}")
        during_write += hit_write
        at_random += not hit_write and process.returncode != 0
        what = "during a checkpoint write" if hit_write else "at a random time" if process.returncode else "not killed"
        print(f"run {kill}: started at step {started}; {what}")
        if process.returncode == 0:
            break

    output = run_to_end(args.trainer, killed, args.steps)
    print(f"final run: {output.strip()}")
    with open(os.path.join(uninterrupted, "final.bin"), "rb") as a, open(os.path.join(killed, "final.bin"), "rb") as b:
        same = a.read() == b.read()
    print(f"kills during a checkpoint write: {during_write}, at random times: {at_random}; "
          f"runs started at steps {starts}")
    if during_write == 0:
        sys.exit("FAIL: no kill landed during a checkpoint write")
    if max(starts) == 0:
        sys.exit("FAIL: no run resumed from a checkpoint")
    if starts != sorted(starts):
        sys.exit("FAIL: a run resumed from an earlier step than the run before it")
    if not same:
        sys.exit("FAIL: the resumed run's final weights differ from the uninterrupted run's")
    print("PASS: the killed and resumed run ends with the uninterrupted run's weights, byte for byte")


if __name__ == "__main__":
    main()
