"""The plot of a search: every evaluated candidate, the front, the seed schedules, no-cache.

(``ecad.bench.report.plot_pareto`` draws something else: a benchmark's methods, each as its own
speedup-vs-quality line.)"""

from __future__ import annotations

import io
from pathlib import Path

from ecad.search.optimizer.run_folder import MemoRecord
from ecad.search.optimizer.task import BANK_SEED_PREFIX
from ecad.atomic import atomic_write_bytes


def plot_search_front(
    path: Path,
    *,
    front: list[MemoRecord],
    seed_records: list[MemoRecord],
    evaluated: list[MemoRecord],
    title: str,
    cost_label: str = "cost",
    quality_label: str = "quality",
    objectives: tuple[str, ...] = (),
) -> None:
    """One panel of quality against cost; with several ``objectives`` (metric names), one panel per
    objective, each drawing that metric: the run ranked on them, not on the scorer's single score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(o, o) for o in objectives] if len(objectives) > 1 else [(None, quality_label)]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), dpi=110, squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        _panel(ax, front, seed_records, evaluated, metric, projected=metric is not None)
        ax.set_xlabel(cost_label)
        ax.set_ylabel(f"{label} (higher is better)")
        ax.set_title(title if len(panels) == 1 else f"{title}: {label}")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _panel(ax, front, seeds, evaluated, metric: str | None, projected: bool) -> None:
    def y(r: MemoRecord) -> float:
        return r.result.quality if metric is None else r.result.metrics[metric]

    ax.scatter([r.result.cost for r in evaluated], [y(r) for r in evaluated],
               s=6, c="0.8", label=f"evaluated ({len(evaluated)})")
    if projected:  # a front over several objectives is no staircase in one of them
        ax.scatter([r.result.cost for r in front], [y(r) for r in front], s=10, c="tab:red",
                   label=f"ECAD front ({len(front)})", zorder=3)
    else:
        ax.plot([r.result.cost for r in front], [y(r) for r in front],
                "o-", c="tab:red", ms=4, lw=1.2, label=f"ECAD front ({len(front)})", drawstyle="steps-post")
    seeds = list({r.key: r for r in seeds}.values())  # a bank seed may repeat a heuristic (no-cache)
    warm = [r for r in seeds if (r.label or "").startswith(BANK_SEED_PREFIX)]
    if warm:  # an earlier front: too many to name
        ax.scatter([r.result.cost for r in warm], [y(r) for r in warm], marker="o", s=14,
                   facecolors="none", edgecolors="tab:green", label=f"seeded from a bank ({len(warm)})")
    heuristics = [r for r in seeds if r.label != "no-cache" and r not in warm]
    ax.scatter([r.result.cost for r in heuristics], [y(r) for r in heuristics],
               marker="x", c="tab:blue", s=30, label="heuristics")
    for r in heuristics:
        ax.annotate(r.label, (r.result.cost, y(r)), fontsize=6, color="tab:blue",
                    xytext=(2, 2), textcoords="offset points")
    for r in seeds:
        if r.label == "no-cache":
            ax.scatter([r.result.cost], [y(r)], marker="*", c="k", s=120, label="no-cache", zorder=5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
