#!/usr/bin/env python
"""How a calibration run's region of interest improves: the fewest MACs (as speedup over no-cache)
of a schedule it has fully evaluated that keeps calibration PSNR >= a bar and the scenes reward
within 2% of no-cache, against the images rendered so far, for one or more run folders.

    python scripts/calibration_progress.py runs/calibrate/ecad-scenes/long-pop64-v2 \
        runs/calibrate/ecad-scenes/focus-psnr28 runs/calibrate/ecad-scenes/focus-psnr28-steps \
        --continue-from long-pop64-v2 --out docs/benchmarks/calibration-progress.png

``--continue-from RUN``: the other runs were warm-started from that run's bank, so their curves
start where its curve ends (their images are counted on top of its images). ``--by-cost``: speed
is the run's own cost objective (1 / cost; for a `--cost fitted` run the predicted speedup), not
MACs. Records another run rendered (`--renders-from`) count 0 images. Reads memo.jsonl only: safe
to run while the calibrations go on. Writes a plot and a JSON table beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BARS = (30.0, 35.0)
REWARD_SHARE = 0.98


def progress(run: Path, bars=BARS, by_cost: bool = False) -> list[dict]:
    """Per generation: images rendered up to it and the fastest speedup (MACs, or 1 / the run's
    cost) at each bar."""
    lines = (run / "memo.jsonl").read_text().split("\n")[:-1]  # the last piece: "" or a torn write
    records = [json.loads(line) for line in lines if line.strip()]
    full = [r for r in records if not r["key"].endswith("@first")]
    no_cache = next(r for r in full if r.get("label") == "no-cache")
    base_macs, base_reward = no_cache["macs"], no_cache["metrics"]["scenes-reward"]
    samples = len(no_cache.get("sample_ids") or []) or 1
    rows = []
    for generation in range(max(r["generation"] for r in records) + 1):
        done = [r for r in full if r["generation"] <= generation]
        images = sum(samples if r.get("images") is None else r["images"]
                     for r in records if r["generation"] <= generation)
        row = {"generation": generation, "images": images}
        for bar in bars:
            ok = [1.0 / r["cost"] if by_cost else base_macs / r["macs"] for r in done
                  if r["metrics"]["psnr"] >= bar and r["metrics"]["scenes-reward"] >= REWARD_SHARE * base_reward]
            row[f"{bar:g}dB"] = max(ok, default=1.0)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (with memo.jsonl)")
    p.add_argument("--continue-from", help="name of the run the others were warm-started from")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "calibration-progress.png")
    p.add_argument("--by-cost", action="store_true", help="speed = 1 / the run's cost objective, not MACs")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ecad.atomic import atomic_write_bytes

    table = {run.name: progress(run, by_cost=args.by_cost) for run in args.runs}
    offset = table[args.continue_from][-1]["images"] if args.continue_from in table else 0
    fig, axes = plt.subplots(1, len(BARS), figsize=(6 * len(BARS), 4.2), sharex=True)
    for ax, bar in zip(axes, BARS):
        for name, rows in table.items():
            shift = 0 if name == args.continue_from else offset
            ax.plot([shift + r["images"] for r in rows], [r[f"{bar:g}dB"] for r in rows], marker=".", label=name)
        ax.set_title(f"calibration PSNR ≥ {bar:g} dB, reward ≥ {REWARD_SHARE:.0%} of no-cache")
        ax.set_xlabel("images rendered")
        ax.set_ylabel("fastest " + ("speedup (1 / cost)" if args.by_cost else "MACs speedup") + " found")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps(table, indent=1) + "\n").encode())
    for name, rows in table.items():
        first, last = rows[0], rows[-1]
        print(f"{name}: generation {last['generation']}, {last['images']} images, "
              + ", ".join(f"≥{b:g} dB {first[f'{b:g}dB']:.2f}x -> {last[f'{b:g}dB']:.2f}x" for b in BARS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
