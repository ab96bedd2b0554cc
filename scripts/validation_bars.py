#!/usr/bin/env python
"""A bank's fastest entry, in MACs speedup over no-cache, whose stored PSNR on the validation prompts
(the calibration's held-back split, `entry.validation`) clears the benchmark's bars (35 / 30 dB,
with and without the scenes reward >= 98% of no-cache's on the same prompts):
`ecad.bench.tuning.fastest_by_stored_scores`. What the bank says about itself; `ecad-bench`
renders the candidates on its larger validation split and judges them on held-out prompts and
seeds.

    python scripts/validation_bars.py schedules/ecad-scenes/32x32-20steps.json \
        runs/calibrate/ecad-scenes/focus-psnr28-bank.json

With ``--cost-model FILE`` (a `FittedCost`, or a report holding one under "model", e.g.
docs/benchmarks/actions/cost-crossfit-32x32-20steps.json) speed is the seconds that model predicts
instead of MACs: MACs undercount cross-attention and the fixed work of every block run here.

``--write-candidates OUT`` (one bank): also write the entries that could decide the bars, chosen on
the validation prompts (validation PSNR >= ``--min-psnr``, MACs speedup >= ``--min-speedup``), with
no-cache, as a bank for a shorter benchmark run (``ecad-bench --bank OUT``):

    python scripts/validation_bars.py runs/calibrate/ecad-scenes/guidance-bank.json \
        --write-candidates docs/benchmarks/ecad-scenes-union-front/bank.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REWARD_METRIC = "scenes-reward"


def fastest_at_bars(bank, speedup=None) -> dict[str, tuple[float, str, float] | None]:
    """{bar name: (speedup, entry id, stored PSNR) of the fastest entry clearing it by its stored
    (validation) scores}: `ecad.bench.tuning.fastest_by_stored_scores` at the benchmark's bars."""
    from ecad.bench.tuning import default_bars, fastest_by_stored_scores

    no_cache = bank.no_cache_entry()
    speedup = speedup or (lambda e: no_cache.macs / e.macs)
    bars = default_bars(REWARD_METRIC in no_cache.quality)
    best = fastest_by_stored_scores(bank, bars, reward_metric=REWARD_METRIC, speed=speedup)
    return {bar.name: (speedup(e), e.id, e.score("psnr")) if (e := best[bar.key]) else None for bar in bars}


def fitted_speedup(bank, cost_model: dict):
    """entry -> the speedup over no-cache that a fitted cost predicts for it, on the bank's model and setting."""
    from ecad.cost import FittedCost, predicted_speedup
    from ecad.generate import load_pipeline
    from ecad.setting import Setting

    setting = Setting(bank.height, bank.width, bank.num_inference_steps, bank.guidance_scale)
    speedup = predicted_speedup(FittedCost.from_report(cost_model), load_pipeline(bank.model), setting)
    return lambda e: speedup(e.cache_schedule())


def main(argv=None) -> int:
    from ecad.bank import ScheduleBank

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("banks", nargs="+", help="bank files with validation scores (ecad-calibrate --validation-prompts)")
    p.add_argument("--cost-model", metavar="FILE", help="rank by the speedup this fitted cost predicts, not MACs")
    p.add_argument("--write-candidates", metavar="OUT", help="write the entries that could decide the bars to OUT")
    p.add_argument("--min-psnr", type=float, default=29.0, help="for --write-candidates: validation PSNR (default 29)")
    p.add_argument("--min-speedup", type=float, default=1.8, help="for --write-candidates: MACs speedup (default 1.8)")
    args = p.parse_args(argv)
    if args.write_candidates and len(args.banks) != 1:
        p.error("--write-candidates takes one bank")
    for path in args.banks:
        bank = ScheduleBank.load(path)
        speedup = fitted_speedup(bank, json.loads(Path(args.cost_model).read_text())) if args.cost_model else None
        print(f"{path} ({len(bank.entries)} entries, speed by {'fitted cost' if speedup else 'MACs'})")
        for bar, best in fastest_at_bars(bank, speedup).items():
            print(f"  {bar}: " + (f"{best[0]:.2f}x {best[1]} ({best[2]:.1f} dB)" if best else "none"))
        if args.write_candidates:
            no_cache = bank.no_cache_entry()
            keep = [e for e in bank.entries if e is no_cache or (
                e.validation and e.validation["psnr"] >= args.min_psnr and no_cache.macs / e.macs >= args.min_speedup)]
            bank.model_copy(update={"entries": keep, "profiles": []}).save(args.write_candidates)
            print(f"wrote {len(keep)} of {len(bank.entries)} entries to {args.write_candidates}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
