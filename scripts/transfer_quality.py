#!/usr/bin/env python
"""What does moving a calibrated schedule to another step count do to its quality?

Renders entries of a calibrated bank moved to other step counts, by noise level
(`ecad.transfer`) and by nearest index (`CacheSchedule.resample`), on the bank's validation
prompts and seeds, and scores each against the no-cache images at that step count (PSNR, the
bundled reward relative to no-cache). Fits `ecad.transfer.TransferQualityModel` on the
noise-level transfers (what the server uses to label an entry served at a setting without a bank
of its own) and writes it with the measurements.

    python scripts/transfer_quality.py --out schedules/ecad-scenes/transfer-quality.json \
        --report docs/benchmarks/settings/transfer-quality.json

Resumable: measurements are appended to <report>.partial.jsonl and not redone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pick_entries(bank, count: int, metric: str = "psnr") -> list:
    """``count`` entries spread over the bank's validated front by MACs (no-cache left out)."""
    full = bank.no_cache_entry().macs
    entries = sorted((e for e in bank.entries if e.validation and e.source != "no-cache"), key=lambda e: e.macs)
    entries = [e for e in entries if 20.0 <= e.validation[metric] <= 55.0]
    idx = np.unique(np.linspace(0, len(entries) - 1, count).round().astype(int))
    return [entries[i] for i in idx if full / entries[i].macs < 12]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "ecad-scenes"))
    p.add_argument("--bank", default=str(REPO / "schedules" / "ecad-scenes" / "32x32-20steps.json"))
    p.add_argument("--steps", default="8,12,16,30,40,50", help="target step counts (default %(default)s)")
    p.add_argument("--entries", type=int, default=32, help="bank entries measured (default %(default)s)")
    p.add_argument("--out", required=True, help="the fitted TransferQualityModel (JSON)")
    p.add_argument("--report", required=True, help="the measurements and the fit's check (JSON)")
    args = p.parse_args(argv)

    import torch

    from ecad.atomic import atomic_write_text
    from ecad.bank import ScheduleBank
    from ecad.cost import image_macs
    from ecad.evaluate import Evaluation, ImageGrid, Scoring
    from ecad.generate import load_pipeline
    from ecad.quality.fidelity import FidelityScorer
    from ecad.quality.scenes_reward import ScenesReward
    from ecad.transfer import TransferQualityModel, noise_levels, transfer_schedule

    torch.set_num_threads(1)
    pipe = load_pipeline(args.model)
    bank = ScheduleBank.load(args.bank)
    grid = ImageGrid(tuple(bank.calibration["validation_prompts"]), tuple(bank.calibration["seeds"]))
    scoring = Scoring({"fidelity": FidelityScorer(), "scenes-reward": ScenesReward(args.model)})
    entries = pick_entries(bank, args.entries)
    partial = Path(args.report).with_suffix(".partial.jsonl")
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in partial.read_text().splitlines()] if partial.exists() else []
    seen = {(r["entry"], r["steps"], r["method"]) for r in done}
    source_levels = noise_levels(pipe, bank.setting)
    for steps in [int(s) for s in args.steps.split(",")]:
        setting = bank.setting.with_changes(num_inference_steps=steps)
        evaluation = Evaluation(pipe, setting, grid, scoring, batch_size=len(grid))
        reference_reward = None
        full = image_macs(pipe, setting)
        target_levels = noise_levels(pipe, setting)
        for entry in entries:
            for method in ("transfer", "resample"):
                if (entry.id, steps, method) in seen:
                    continue
                schedule = entry.cache_schedule()
                moved = (transfer_schedule(schedule, source_levels, target_levels) if method == "transfer"
                         else schedule.resample(steps))
                row = {"entry": entry.id, "steps": steps, "method": method,
                       "source_psnr": entry.validation["psnr"], "source_reward": entry.validation["scenes-reward"],
                       "source_reward_rel": entry.validation["scenes-reward"] / bank.no_cache_entry().validation["scenes-reward"],
                       "source_macs_speedup": bank.no_cache_entry().macs / entry.macs}
                try:
                    moved.validate(num_steps=steps)
                except ValueError as err:
                    row["invalid"] = str(err)
                else:
                    if reference_reward is None:
                        reference_reward = float(evaluation.scores(evaluation.references)["scenes-reward"].mean())
                    _, scores = evaluation.evaluate(moved)
                    row |= {"psnr": float(scores["psnr"].mean()), "reward": float(scores["scenes-reward"].mean()),
                            "reward_rel": float(scores["scenes-reward"].mean()) / reference_reward,
                            "macs_speedup": full / image_macs(pipe, setting, moved)}
                done.append(row)
                with partial.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    rows = [r for r in done if r["method"] == "transfer" and "psnr" in r]
    model = TransferQualityModel.fit(rows, source_steps=bank.num_inference_steps, model=bank.model)
    check = model.check(rows)
    atomic_write_text(Path(args.out), json.dumps(model.to_dict(), indent=1) + "\n")
    atomic_write_text(Path(args.report), json.dumps({"bank": args.bank, "entries": [e.id for e in entries],
                                                     "images": len(grid), "model": model.to_dict(), "check": check,
                                                     "rows": done}, indent=1) + "\n")
    print(json.dumps(check, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
