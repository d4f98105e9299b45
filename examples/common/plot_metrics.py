#!/usr/bin/env python3
"""Draws RUN_DIR/chart.png from the JSON Lines an example wrote: reward (training rollouts and
held-out evaluations), KL to the reference, the policy and value losses per PPO step, and the SFT
and reward-model losses when those stages ran.  usage: plot_metrics.py RUN_DIR [TITLE]"""
import pathlib
import sys

from plot_curves import plt, read  # plot_curves.py beside this script selects the Agg backend


def main():
    run = pathlib.Path(sys.argv[1])
    title = sys.argv[2] if len(sys.argv) > 2 else run.name
    ppo, evals = read(run / "ppo_metrics.jsonl"), read(run / "eval_metrics.jsonl")
    sft, rm = read(run / "sft_metrics.jsonl"), read(run / "rm_metrics.jsonl")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    fig.suptitle(title)

    def panel(ax, rows, keys, name, x="step"):
        for key in keys:
            points = [(r[x], r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), label=key, marker="o" if len(points) < 15 else None, markersize=3)
        ax.set_title(name)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)

    panel(axes[0][0], ppo, ["score_mean"], "reward (rollouts)")
    panel(axes[0][0], evals, ["reward"], "reward: rollouts and held-out")
    panel(axes[0][1], ppo, ["kl"], "KL to the reference")
    panel(axes[0][2], ppo, ["kl_coef"], "KL coefficient")
    panel(axes[1][0], ppo, ["policy_loss", "ptx_loss"], "policy and PTX losses")
    panel(axes[1][1], ppo, ["value_loss"], "value loss")
    panel(axes[1][2], sft, ["loss"], "SFT and RM losses")
    if rm:
        panel(axes[1][2], [{"rm_step": r["step"], "rm_loss": r["loss"]} for r in rm], ["rm_loss"],
              "SFT loss; RM loss", x="rm_step")
        axes[1][2].set_xlabel("stage step")
    fig.tight_layout()
    fig.savefig(run / "chart.png", dpi=90)


if __name__ == "__main__":
    main()
