#!/usr/bin/env python3
"""Plots loss (train and validation) and throughput from one or more owlore metrics.jsonl files.

usage: plot_metrics.py RUN_DIR_OR_METRICS [more ...] -o loss.png [--labels a,b,...]
"""
import argparse, json, os, sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    steps, loss, val_steps, val, tps = [], [], [], [], []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                steps.append(r["step"]); loss.append(r["loss"]); tps.append(r.get("tokens_per_s", 0))
            if "val_loss" in r:
                val_steps.append(r["step"]); val.append(r["val_loss"])
    return steps, loss, val_steps, val, tps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--out", default="loss.png")
    ap.add_argument("--labels", default=None)
    ap.add_argument("--title", default="owlore")
    a = ap.parse_args()
    labels = a.labels.split(",") if a.labels else [os.path.basename(os.path.normpath(r)) for r in a.runs]
    fig, (ax_loss, ax_tps) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run, label in zip(a.runs, labels):
        steps, loss, val_steps, val, tps = load(run)
        line, = ax_loss.plot(steps, loss, alpha=0.5, label=f"{label} train")
        if val:
            ax_loss.plot(val_steps, val, "o-", color=line.get_color(), label=f"{label} validation")
        ax_tps.plot(steps[1:], tps[1:], label=label)  # step 1 includes warm-up
    ax_loss.set_xlabel("step"); ax_loss.set_ylabel("loss"); ax_loss.legend(); ax_loss.grid(alpha=0.3)
    ax_tps.set_xlabel("step"); ax_tps.set_ylabel("tokens/s"); ax_tps.legend(); ax_tps.grid(alpha=0.3)
    fig.suptitle(a.title)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
