"""The PNG plots ``tune`` writes: loss curve, parameter trajectories, traces before/after."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")            # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    return plt


def plot_all(out: Path, history: list[dict], paths: list[str], t_ms: np.ndarray,
             before: dict, after: dict, target: dict, units: dict) -> list[Path]:
    plt = _pyplot()
    files = [_loss(plt, out / "loss.png", history),
             _parameters(plt, out / "parameters.png", history, paths),
             plot_traces(plt, out / "traces.png", t_ms, before, after, target, units)]
    plt.close("all")
    return files


def _loss(plt, path: Path, history: list[dict]) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy([h["epoch"] for h in history], [max(h["loss"], 1e-300) for h in history])
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _parameters(plt, path: Path, history: list[dict], paths: list[str]) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    for p in paths:
        values = np.array([h["params"][p] for h in history])
        ax.plot(epochs, values / values[0] if values[0] else values, label=p)
    ax.set_xlabel("epoch")
    ax.set_ylabel("value / initial value")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_traces(plt, path: Path, t_ms, before: dict, after: dict, target: dict,
                units: dict) -> Path:
    """Each key of ``target`` before and after tuning, over its target (None: no trace)."""
    keys = list(target)
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 3 * len(keys)), squeeze=False)
    for ax, k in zip(axes[:, 0], keys):
        if target[k] is not None:
            ax.plot(t_ms, target[k], "k", lw=2, alpha=0.4, label="target")
        ax.plot(t_ms, before[k], "C0--", lw=1, label="before")
        ax.plot(t_ms, after[k], "C3", lw=1, label="after")
        ax.set_ylabel(f"{k} ({units.get(k, '')})")
        ax.legend(fontsize="small")
    axes[-1, 0].set_xlabel("t (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
