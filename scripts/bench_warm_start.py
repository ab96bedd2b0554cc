#!/usr/bin/env python
"""Warm-started calibration for a new step count: images until it reaches a cold search's front.

For each target step count and search seed, two `ecad-calibrate` runs of the bundled model with
the same search (PSNR to the uncached image vs MACs, racing + surrogate, the same population and
generation cap):

* cold: the heuristic suite rebuilt at that step count (what `ecad-calibrate` always seeds);
* warm: the same plus the 20-step bank moved there by noise level (`--transfer-from`), run a
  generation at a time until its front reaches the cold run's final hypervolume (or the same cap).

Each run's front is scored after every generation by one hypervolume for both (cost = MACs
fraction in [0, 1], PSNR in [--psnr-floor, 60] dB, reference at (1, floor)), from the runs' memo
records. Reported: the images the warm run rendered until its front's hypervolume reached the cold
run's final one, as a share of the cold run's images (the goal: <= 20%): after the generation where it got there, and after the evaluation
where it got there in the order the run rendered them (a run could stop at that point).

    python scripts/bench_warm_start.py --steps 12,50 --search-seeds 0,1     # resumable
    python scripts/bench_warm_start.py --report-only

Writes <out>/<steps>-<cold|warm>-s<seed>/ (run folders), docs/benchmarks/settings/warm-start.json
and warm-start.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "ecad-scenes"))
    p.add_argument("--bank", default=str(REPO / "schedules" / "ecad-scenes" / "32x32-20steps.json"),
                   help="the calibrated bank the warm runs transfer from")
    p.add_argument("--steps", default="12,50")
    p.add_argument("--search-seeds", default="0,1")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--generations", type=int, default=20, help="the budget cap of both runs (default %(default)s)")
    p.add_argument("--psnr-floor", type=float, default=25.0)
    p.add_argument("--out", default=str(REPO / "runs" / "warm-start"))
    p.add_argument("--docs", default=str(REPO / "docs" / "benchmarks" / "settings"))
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


def run_dir(args, steps: int, kind: str, seed: int) -> Path:
    return Path(args.out) / f"{steps}-{kind}-s{seed}"


def calibrate(args, steps: int, kind: str, seed: int, generations: int) -> None:
    folder = run_dir(args, steps, kind, seed)
    command = [sys.executable, "-m", "ecad.cli.calibrate", "--model", args.model, "--steps", str(steps),
               "--scorer", "fidelity", "--objectives", "psnr", "--racing", "0.25", "--surrogate", "3",
               "--population", str(args.population), "--generations", str(generations),
               "--search-seed", str(seed), "--run-dir", str(folder), "--out", str(folder) + "-bank.json",
               "--no-progress", "--no-plot"]
    if kind == "warm":
        command += ["--transfer-from", args.bank]
    subprocess.run(command, check=True, cwd=REPO)


def run_pair(args, steps: int, seed: int) -> None:
    """The cold run to its cap; the warm run a generation at a time, until its front's
    hypervolume reaches the cold run's final one (or the same cap): it need not go further."""
    calibrate(args, steps, "cold", seed, args.generations)
    target = curve(run_dir(args, steps, "cold", seed), args.psnr_floor)[-1][2]
    for generations in range(args.generations + 1):
        calibrate(args, steps, "warm", seed, generations)
        if curve(run_dir(args, steps, "warm", seed), args.psnr_floor)[-1][2] >= target:
            break


def curve(folder: Path, floor: float, *, per_record: bool = False) -> list[tuple[int, int, float]]:
    """(generation, images rendered so far, hypervolume of the front so far) after each generation,
    or after each evaluation in the order the run rendered them (``per_record``)."""
    records = [json.loads(line) for line in (folder / "memo.jsonl").read_text().splitlines() if line.strip()]
    if per_record:
        return [(r["generation"], *_front_so_far(records[:i + 1], floor)) for i, r in enumerate(records)]
    return [(g, *_front_so_far([r for r in records if r["generation"] <= g], floor))
            for g in range(max(r["generation"] for r in records) + 1)]


def _front_so_far(records: list[dict], floor: float) -> tuple[int, float]:
    """(images these records rendered, hypervolume of their finished evaluations)."""
    import moocore

    images = sum(int(r.get("images", 0)) for r in records)
    full = [r for r in records if "psnr" in r.get("metrics", {}) and not r.get("stage")]
    points = np.array([[r["cost"], -min(60.0, r["metrics"]["psnr"])] for r in full], dtype=float)
    points = points[(points[:, 0] <= 1.0) & (points[:, 1] <= -floor)] if len(points) else points
    hv = float(moocore.hypervolume(points, ref=np.array([1.0, -floor]))) if len(points) else 0.0
    return images, hv


def report(args) -> dict:
    rows, curves, rendered = [], {}, {}
    for steps in [int(s) for s in args.steps.split(",")]:
        for seed in [int(s) for s in args.search_seeds.split(",")]:
            cold, warm = (curve(run_dir(args, steps, kind, seed), args.psnr_floor) for kind in ("cold", "warm"))
            curves[f"{steps}-s{seed}"] = {"cold": cold, "warm": warm}
            rendered[f"{steps}-s{seed}"] = {kind: curve(run_dir(args, steps, kind, seed), args.psnr_floor, per_record=True)
                                            for kind in ("cold", "warm")}
            target = cold[-1][2]
            reached = next(((g, images) for g, images, hv in warm if hv >= target), None)
            # within a generation, in the order the run rendered its evaluations (it could stop there)
            first = next((images for _, images, hv in rendered[f"{steps}-s{seed}"]["warm"] if hv >= target), None)
            rows.append({"steps": steps, "search_seed": seed, "cold_hypervolume": target,
                         "cold_images": cold[-1][1], "warm_final_hypervolume": warm[-1][2],
                         "warm_generation_reached": reached[0] if reached else None,
                         "warm_images_to_reach": reached[1] if reached else None,
                         "share_of_cold_images": reached[1] / cold[-1][1] if reached else None,
                         "warm_images_to_reach_in_render_order": first,
                         "share_in_render_order": first / cold[-1][1] if first else None})
    result = {"command": "python scripts/bench_warm_start.py " + " ".join(sys.argv[1:]), "population": args.population,
              "generations": args.generations, "psnr_floor": args.psnr_floor, "rows": rows, "curves": curves,
              "curves_in_render_order": rendered}
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "warm-start.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(rendered, docs / "warm-start.png", args.psnr_floor)
    return result


def plot(curves: dict, path: Path, floor: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len({k.split("-")[0] for k in curves}), figsize=(11, 4), dpi=110, squeeze=False)
    by_steps = sorted({int(k.split("-")[0]) for k in curves})
    for ax, steps in zip(axes[0], by_steps):
        for key, runs in curves.items():
            if int(key.split("-")[0]) != steps:
                continue
            for kind, style in (("cold", "--"), ("warm", "-")):
                xs, ys = [c[1] for c in runs[kind]], [c[2] for c in runs[kind]]
                ax.plot(xs, ys, style, label=f"{kind} ({key.split('-')[1]})")
            ax.axhline(runs["cold"][-1][2], color="grey", lw=0.6, ls=":")
        ax.set_title(f"{steps} steps")
        ax.set_xlabel("images rendered")
        ax.set_ylabel(f"hypervolume (MACs fraction x PSNR >= {floor:g} dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Calibration at a new step count: warm start (20-step bank moved by noise level) vs cold\n"
                 "front's hypervolume after each evaluation, in render order; dotted: each cold run's final")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.report_only:
        for steps in [int(s) for s in args.steps.split(",")]:
            for seed in [int(s) for s in args.search_seeds.split(",")]:
                run_pair(args, steps, seed)
    result = report(args)
    for row in result["rows"]:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
