#!/usr/bin/env python
"""Does the quality a response states hold for the images it served?

Starts the server core (``ScheduleServer``, the code behind ``make serve``) on the bundled model
and sends it requests at several step counts, each with a latency budget drawn between the
fastest and the slowest entry's predicted latency (so the planner picks entries across the
front), on held-out prompts and seeds that calibration and validation never used. For each
served image it renders the image without caching at the same setting, prompt and seed, and
checks whether the PSNR between the two (the banks' own metric: `ecad.quality.fidelity`, capped
at 60 dB as every bank's PSNR is) lies within the interval the response's ``quality`` states (an entry made for that setting: the spread of its validation images; another step count:
the transfer model's estimate widened by that spread). The entry without caching is exact
(bit-identical) or a miss.

    python scripts/served_quality.py                      # 12 and 50 (own banks), 16 and 40 (estimates)
    python scripts/served_quality.py --steps 12 --requests 5

Writes docs/benchmarks/settings/served-quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "ecad-scenes"))
    p.add_argument("--steps", default="12,50,16,40", help="step counts to request (default %(default)s)")
    p.add_argument("--requests", type=int, default=20, help="requests per step count (default %(default)s)")
    p.add_argument("--profile-budget-s", type=float, default=120.0,
                   help="time to profile the banks that have no profile for this machine (default %(default)s)")
    p.add_argument("--persist-profiles", action="store_true",
                   help="write those profiles into the bank files (ECAD_PERSIST_PROFILE), so the next start skips them")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "settings" / "served-quality.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    import torch
    from tqdm import tqdm

    from ecad.atomic import atomic_write_text
    from ecad.generate import generate
    from ecad.quality.fidelity import psnr_per_image
    from ecad.quality.prompts import held_out_prompts, split_seeds
    from ecad.serving import GenerateRequest, ScheduleServer, ServingConfig

    torch.set_num_threads(1)
    server = ScheduleServer(ServingConfig(model=args.model, profile_time_budget_s=args.profile_budget_s, latency_fit_s=30,
                                          persist_profile=args.persist_profiles))
    steps_list = [int(s) for s in args.steps.split(",")]
    calibration = list(server.default_bank.bank.calibration.get("prompts", []))
    prompts = held_out_prompts(args.model, args.requests, exclude=calibration)
    seeds = split_seeds("held-out", args.requests)
    rng = np.random.default_rng(0)
    rows, summary = [], {}
    for steps in steps_list:
        shape = server.limits.shape(num_inference_steps=steps)
        served, _ = server.bank_for(shape.setting)
        predicted = sorted(p.predicted_ms for p in served.predict(shape))
        budgets = rng.uniform(predicted[0], predicted[-1], size=args.requests)
        inside = 0
        for prompt, seed, budget in tqdm(list(zip(prompts, seeds, budgets)), desc=f"{steps} steps", unit="request"):
            result = server.generate(server.resolve(GenerateRequest(prompt=prompt, seed=seed, latency_ms=float(budget),
                                                                    num_inference_steps=steps)))
            q = result.report().quality
            reference = generate(server.pipe, [prompt], [seed], shape.setting)
            exact = bool(torch.equal(result.images, reference))
            psnr = float(psnr_per_image(result.images, reference)[0])  # capped at 60 dB like the banks' PSNR
            if exact:
                ok = True
            elif q.low is None or q.high is None:
                ok = None  # no interval stated: nothing to check
            else:
                ok = q.low <= psnr <= q.high
            inside += bool(ok)
            rows.append({"steps": steps, "bank": result.request.served.id, "prompt": prompt, "seed": seed,
                         "budget_ms": round(float(budget), 2), "schedule_id": result.schedule_id,
                         "psnr": round(psnr, 3), "exact": exact,
                         "stated": q.model_dump(), "within": ok})
        checked = [r for r in rows if r["steps"] == steps and r["within"] is not None]
        summary[str(steps)] = {"bank": served.id, "made_for_this_setting": served.made_for(shape.setting),
                               "requests": args.requests, "checked": len(checked), "within": inside,
                               "share_within": inside / max(1, len(checked)),
                               "entries_served": len({r["schedule_id"] for r in rows if r["steps"] == steps})}
        print(f"{steps} steps ({served.id}): {inside}/{len(checked)} served images within their stated interval")
    server.close()
    report = {"command": "python scripts/served_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": args.model, "summary": summary, "requests": rows}
    atomic_write_text(Path(args.out), json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
