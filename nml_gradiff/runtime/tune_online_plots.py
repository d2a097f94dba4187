"""The PNG plots of ``tune --mode online`` and ``--target-rate``: loss and parameters over
simulated time (or epochs, offline), the rate proxy against its target, traces before and
after."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .tune_plots import _pyplot, plot_traces


def plot_all(out: Path, history: list[dict], paths: list[str], t_ms, before: dict,
             after: dict, target: dict, units: dict, mode: str, rate) -> list[Path]:
    plt = _pyplot()
    online = mode == "online"
    x = np.array([h["t_ms"] / 1000.0 if online else h["epoch"] for h in history])
    xlabel = "simulated time (s)" if online else "epoch"
    files = [_loss(plt, out / "loss.png", x, xlabel, history),
             _parameters(plt, out / "parameters.png", x, xlabel, history, paths),
             plot_traces(plt, out / "traces.png", t_ms, before, after, target, units)]
    if online and rate is not None:
        files.append(_rate(plt, out / "rate.png", x, history, rate))
    plt.close("all")
    return files


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _loss(plt, path, x, xlabel, history) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(x, [max(h["loss"], 1e-300) for h in history])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title("loss")
    return _save(fig, path)


def _parameters(plt, path, x, xlabel, history, paths) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in paths:
        values = np.array([h["params"][p] for h in history])
        ax.plot(x, values / values[0] if values[0] else values, label=p)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("value / initial value")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _rate(plt, path, x, history, rate) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [h["spike_rate"] for h in history], "C7", lw=0.8, label="spike count rate")
    ax.plot(x, [h["rate_proxy"] for h in history], "C0", label="rate proxy r")
    ax.axhline(rate, color="k", ls="--", label="target")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("rate (1/s)")
    ax.legend(fontsize="small")
    return _save(fig, path)
