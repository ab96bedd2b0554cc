#!/usr/bin/env python
"""How many validation images the reward bar needs: the width of the 95% bootstrap interval of a
point's reward relative to no-cache (`ecad.bench.runner.relative_reward_interval`), on growing
grids of the benchmark's validation prompts x seeds, for points near the bars; and the images it
would take for the interval to be narrower than the 2% bar (width ∝ 1/√images).

    python scripts/validation_size.py --out docs/benchmarks/validation-size.json

Renders no-cache and each point on prompts x seeds (default 128 x 8 = 1,024 images, about 10
minutes per point on one core of the 2-core box).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

POINTS = ("ecad-g3-7152ecca", "block-skip-2-e4-all", "ecad-g5-ea5baf5b")
GRIDS = ((16, 2), (32, 2), (32, 4), (64, 2), (64, 4), (128, 2), (64, 8), (128, 4), (128, 8))
BAR = 0.02


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bank", default=str(REPO / "schedules" / "ecad-scenes" / "32x32-20steps.json"))
    p.add_argument("--points", default=",".join(POINTS), help="bank entry ids (default %(default)s)")
    p.add_argument("--prompts", type=int, default=128)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--out", help="write the widths as JSON here")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from ecad.bank import ScheduleBank
    from ecad.bench.runner import relative_reward_interval
    from ecad.evaluate import render
    from ecad.generate import load_pipeline
    from ecad.quality import build_scorer
    from ecad.quality.prompts import split_seeds, validation_prompts

    bank = ScheduleBank.load(args.bank)
    pipe = load_pipeline(bank.model)
    prompts = validation_prompts(bank.model, args.prompts, list(bank.calibration["prompts"]))
    seeds = split_seeds("validation", args.seeds)
    items = [(q, s) for q in prompts for s in seeds]
    reward = build_scorer("scenes-reward", model_dir=bank.model)

    def rewards(schedule):
        images = render(pipe, bank.setting, schedule, items, batch_size=8)
        return reward.score(images, [q for q, _ in items]).float().numpy().reshape(len(prompts), len(seeds))

    base = rewards(None)
    out = {"bank": str(Path(args.bank).relative_to(REPO)) if Path(args.bank).is_relative_to(REPO) else args.bank,
           "prompts": len(prompts), "seeds": seeds, "no_cache_reward_quantiles":
           dict(zip(("p10", "p25", "p50", "p75", "p90"), np.quantile(base, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist())),
           "points": {}}
    for entry_id in args.points.split(","):
        r = rewards(bank.entry(entry_id).cache_schedule())
        widths = {}
        for n_p, n_s in GRIDS:
            if n_p <= len(prompts) and n_s <= len(seeds):
                lo, hi = relative_reward_interval(torch.from_numpy(r[:n_p, :n_s].ravel()),
                                                  torch.from_numpy(base[:n_p, :n_s].ravel()))
                widths[f"{n_p}x{n_s}"] = hi - lo
        full = widths[f"{len(prompts)}x{len(seeds)}"]
        out["points"][entry_id] = {"reward_rel": float(r.mean() / base.mean()), "interval_width": widths,
                                   "images_for_width_below_bar": int(np.ceil(len(items) * (full / BAR) ** 2))}
        print(entry_id, {k: f"{v:.3f}" for k, v in widths.items()},
              "images for < 2%:", out["points"][entry_id]["images_for_width_below_bar"], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
