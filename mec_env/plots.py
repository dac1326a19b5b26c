"""Pareto-front plots: every method's mean return per preference, its front, units on the axes.

Two objectives give one panel; three or more give one panel per pair of objectives. Returns
are plotted in the env's raw units (higher is better; the rewards are negated costs, so the
axes read "-latency (s)" and so on). matplotlib is imported lazily with the Agg backend, so
plotting works on a machine without a display.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from mec_env import pareto

__all__ = ["plot_fronts"]

_MARKERS = "osD^vP*Xh<>p"


def plot_fronts(
    fronts: dict[str, np.ndarray],
    names: tuple[str, ...],
    units: tuple[str, ...],
    path: str | Path,
    title: str = "",
    reference_point: np.ndarray | None = None,
) -> Path:
    """Save a PNG of each method's points (faint) and Pareto front (joined) to ``path``.

    Args:
        fronts: method name -> (P, d) mean return vectors (one row per preference).
        names, units: the objectives' names and units (axis labels: ``return: -<name> (<unit>)``).
        reference_point: drawn as a cross on every panel when given (raw units).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = len(names)
    pairs = list(combinations(range(d), 2)) if d > 2 else [(0, 1)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.8 * len(pairs), 4.6), squeeze=False)
    colours = plt.get_cmap("tab10" if len(fronts) <= 10 else "tab20")
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        for k, (method, points) in enumerate(fronts.items()):
            pts = np.asarray(points, float)
            colour = colours(k % colours.N)
            marker = _MARKERS[k % len(_MARKERS)]
            ax.scatter(pts[:, i], pts[:, j], s=10, color=colour, alpha=0.25, marker=marker)
            front = pareto.pareto_front(pts[:, [i, j]])
            front = front[np.argsort(front[:, 0])]
            ax.plot(
                front[:, 0],
                front[:, 1],
                marker=marker,
                markersize=4,
                linewidth=1.2,
                color=colour,
                label=f"{method} ({len(front)} front points)",
            )
        ax.set_xlabel(f"return: -{names[i]} ({units[i]}) per episode")
        ax.set_ylabel(f"return: -{names[j]} ({units[j]}) per episode")
        ax.grid(True, alpha=0.3)
    if reference_point is not None:  # said in words: plotted, it would squash the fronts
        ref = ", ".join(f"{x:.4g}" for x in reference_point)
        title = f"{title}\nhypervolume reference point: ({ref})" if title else f"reference ({ref})"
    # one legend beside the panels, so it never hides a front
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
