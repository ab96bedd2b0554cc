"""Does batching pay on this machine, and what does it do to an image's bytes? (not a test)

For the bank's entry without caching, its median and its fastest entry (by the bank's profile
for this hardware if it has one, else by MACs), at the bank's setting: the per-image time of one
pipeline call of 1, 2, 4 and 8 images, in ``ecad.timing``'s interleaved rounds (thread CPU time
with one torch thread, wall time otherwise), as a share of batch 1. Then, for each of those
entries, four prompts in one batch of 4 against each alone: how many images have identical PNG
bytes, how far their values are apart, and how many pixels differ after 8-bit rounding.

    python scripts/bench_batching.py --bank schedules/ecad-scenes/32x32-20steps.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["a red circle at the top left", "a blue square", "two green triangles", "a yellow star at the bottom"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "ecad-scenes"))
    p.add_argument("--bank", default=str(REPO / "schedules" / "ecad-scenes" / "32x32-20steps.json"))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()

    from ecad.bank import ScheduleBank, pipeline_hardware_key
    from ecad.generate import generate, load_pipeline
    from ecad.serving.latency import timing_unit
    from ecad.serving.media import tensor_to_png
    from ecad.timing import TimedCall, time_rounds

    torch.set_num_threads(1)
    pipe = load_pipeline(args.model)
    bank = ScheduleBank.load(args.bank)
    profile = bank.profile(pipeline_hardware_key(pipe, batch_size=1))
    cost = profile.latency_ms if profile is not None else {e.id: float(e.macs) for e in bank.entries}
    by_cost = sorted(cost, key=cost.get)
    no_cache = bank.no_cache_entry().id
    entries = list(dict.fromkeys([no_cache, by_cost[len(by_cost) // 2], by_cost[0]]))
    schedules = {e: None if e == no_cache else bank.entry(e).cache_schedule() for e in entries}
    setting = bank.setting

    def call(entry: str, n: int) -> TimedCall:
        return TimedCall(lambda: generate(pipe, PROMPTS[:1] * n, list(range(n)), setting, schedules[entry]))

    unit = timing_unit(pipe)
    timings = time_rounds({f"{e}@{n}": call(e, n) for e in entries for n in args.batches}, rounds=args.rounds,
                          warmup=1, order="shuffle")
    seconds = timings.cpu_s if unit == "cpu" else timings.wall_s
    per_image = {e: {n: 1000.0 * min(seconds[f"{e}@{n}"]) / n for n in args.batches} for e in entries}
    results: dict = {"unit": unit, "setting": setting.to_dict(), "per_image_ms": per_image, "bytes": {}}
    for e in entries:
        shares = " / ".join(f"{per_image[e][n] / per_image[e][args.batches[0]]:.2f}" for n in args.batches)
        print(f"{e:<22} per image {unit} ms at batch {args.batches}: "
              f"{[round(per_image[e][n], 1) for n in args.batches]} = {shares} of batch {args.batches[0]}")

    for e in entries:
        batch = generate(pipe, PROMPTS, list(range(1, len(PROMPTS) + 1)), setting, schedules[e])
        same, pixels, gap = 0, 0, 0.0
        for i, prompt in enumerate(PROMPTS):
            alone = generate(pipe, [prompt], [i + 1], setting, schedules[e])[0]
            same += tensor_to_png(alone) == tensor_to_png(batch[i])
            gap = max(gap, float((alone - batch[i]).abs().max()))
            pixels += int(((alone.clamp(0, 1) * 255).round() != (batch[i].clamp(0, 1) * 255).round()).any(0).sum())
        results["bytes"][e] = {"identical_png": same, "images": len(PROMPTS), "max_value_difference": gap,
                               "pixels_differing": pixels}
        print(f"{e:<22} batch of {len(PROMPTS)} vs alone: {same}/{len(PROMPTS)} identical PNGs, values apart by "
              f"up to {gap:.1e}, {pixels} pixels differ after 8-bit rounding")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
