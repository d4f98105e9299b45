#!/usr/bin/python3
"""Times the TRL PPOTrainer formulation of the clipped policy loss, forward + backward, on one thread.

The formulation follows TRL's `PPOTrainer.loss` (trl/trainer/ppo_trainer.py, TRL <= 0.11, the
policy half; `masked_mean` from trl/core.py): ratio = exp(logprobs - old_logprobs),
pg_losses = -A·ratio, pg_losses2 = -A·clamp(ratio, 1 - ε, 1 + ε), pg_loss = masked_mean(max),
pg_clipfrac = masked_mean(pg_losses2 > pg_losses), avg_ratio = masked_mean(ratio).item() (TRL's
ratio-threshold check), approxkl = ½·masked_mean((logprobs - old)²), policykl = masked_mean(old -
logprobs); then pg_loss.backward() for the gradient w.r.t. the log-probs. The statistics are read
back (.item()), as TRL does when it logs them. Written here, not copied from TRL.

Inputs are drawn like the C++ harness's (benchmarks/harness.cpp, `token_inputs`): log-probs
-2·|N(0,1)| - 0.05, old = log-probs + 0.2·N(0,1), advantages N(0,1), a contiguous valid range
per row (a few left-padding positions, right padding to a length in [T/2, T]). float32, ε = 0.2.

Times are the CPU time of the calling thread (`time.thread_time`, as the C++ benchmark reports
the CPU time of its thread), best of `--repeats` rounds, each the mean of enough calls to last
`--min-time` seconds. Prints one JSON object per size on stdout.

Usage: /usr/bin/python3 benchmarks/python_trl_policy_loss.py [--sizes 256x2048,512x4096]
Requires Debian's python3-torch (`apt-get install python3-torch`).
"""

import argparse
import json
import time

import torch


def masked_mean(values, mask):
    """TRL trl/core.py masked_mean with axis=None: (values * mask).sum() / mask.sum()."""
    return (values * mask).sum() / mask.sum()


def trl_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2):
    """The policy half of TRL PPOTrainer.loss; returns the loss and the statistics TRL logs."""
    ratio = torch.exp(logprobs - old_logprobs)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses).float(), mask)
    avg_ratio = masked_mean(ratio, mask).item()
    approxkl = 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)
    policykl = masked_mean(old_logprobs - logprobs, mask)
    return pg_loss, {"clipfrac": pg_clipfrac, "approxkl": approxkl, "policykl": policykl, "avg_ratio": avg_ratio}


def make_inputs(batch, steps, seed):
    g = torch.Generator().manual_seed(seed)
    logprobs = -2.0 * torch.randn(batch, steps, generator=g).abs() - 0.05
    old = logprobs + 0.2 * torch.randn(batch, steps, generator=g)
    adv = torch.randn(batch, steps, generator=g)
    mask = torch.zeros(batch, steps)
    first = torch.randint(0, max(steps // 16, 1), (batch,), generator=g)
    end = steps // 2 + torch.randint(0, steps - steps // 2, (batch,), generator=g) + 1
    for b in range(batch):
        mask[b, first[b]:end[b]] = 1.0
    return logprobs, old, adv, mask


def one_call(logprobs, old, adv, mask):
    lp = logprobs.detach().requires_grad_(True)
    loss, stats = trl_policy_loss(lp, old, adv, mask)
    loss.backward()
    # Read everything back, as TRL's logging does (stats_to_np).
    _ = (loss.item(), stats["clipfrac"].item(), stats["approxkl"].item(), stats["policykl"].item())
    return lp.grad


def time_size(batch, steps, repeats, min_time):
    logprobs, old, adv, mask = make_inputs(batch, steps, seed=batch * 1000003 + steps)
    one_call(logprobs, old, adv, mask)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.thread_time()
        while True:
            one_call(logprobs, old, adv, mask)
            calls += 1
            elapsed = time.thread_time() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / calls)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256x2048,512x4096")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for size in args.sizes.split(","):
        batch, steps = (int(x) for x in size.split("x"))
        seconds = time_size(batch, steps, args.repeats, args.min_time)
        print(json.dumps({"size": size, "seconds": seconds, "ns_per_token": seconds * 1e9 / (batch * steps),
                          "torch": torch.__version__, "torch_file": torch.__file__,
                          "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
