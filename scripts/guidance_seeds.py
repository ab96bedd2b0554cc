#!/usr/bin/env python
"""Seeds for a search that adds guidance reuse: variants of a bank's fast entries that reuse
guidance at one step (or at every other step from the middle on), as a seed bank for
``ecad-calibrate --seed-bank``.

    python scripts/guidance_seeds.py schedules/ecad-scenes/32x32-20steps.json \
        runs/calibrate/ecad-scenes/guidance-seeds.json
    python scripts/guidance_seeds.py --report runs/calibrate/ecad-scenes/guidance

``--report RUN_DIR``: what reusing guidance at each step cost the seeded variants in that run, on
the calibration prompts: mean PSNR lost and MACs speedup gained against the parent (the same
schedule without it, which the run holds when it was rendered or reused).

A search reaches a gene of one step of guidance reuse rarely (19 of ~600 genes, and a step-aligned
move picks that plane in one of three moves); these give it the single-step variants of the
entries at the quality bars to start from. Only steps where at least half the blocks run are
varied (where the transformer does work to halve). The variants' quality is not measured: each
entry carries its parent's calibration scores, marked ``quality_measured=False``; the search
renders them all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def variants(schedule, first_step: int = 4):
    """(suffix, schedule) for each step >= first_step where at least half the blocks run, and the
    schedule reusing guidance at every other such step from the middle on."""
    from ecad.schedule import CacheSchedule

    running = (~schedule.skip).mean(axis=1) >= 0.5
    steps = [s for s in range(first_step, schedule.num_steps) if running[s]]
    late = [s for s in steps if s >= schedule.num_steps // 2][::2]
    out = []
    for name, chosen in [*((f"g{s}", [s]) for s in steps), ("glate", late)]:
        if chosen:
            guidance = np.zeros(schedule.num_steps, bool)
            guidance[chosen] = True
            out.append((name, CacheSchedule.from_actions(schedule.actions, schedule.layout, schedule.skip, guidance)))
    return out


def report(run_dir: Path) -> None:
    """Per varied step (label suffix): mean PSNR lost and MACs speedup gained against the parent."""
    import json
    import re
    from collections import defaultdict

    from ecad.schedule import BlockLayout
    from ecad.search.optimizer.run_folder import read_memo
    from ecad.search.genome import Genome

    config = json.loads((run_dir / "config.json").read_text())
    steps = int(config["evaluator"]["setting"]["num_inference_steps"])
    genome = Genome(BlockLayout.from_dict(config["task"]["layout"]), steps, tuple(config["evaluator"]["actions"]))
    records = read_memo(run_dir / "memo.jsonl", genome.space)[0]
    by_key = {r.key: r for r in records}
    by_step = defaultdict(list)
    for record in records:
        match = re.search(r"-g(\d+|late)$", record.label or "")
        parent = by_key.get(genome.decode(record.bits).without_guidance_reuse().hash) if match else None
        psnr = (record.result.metrics or {}).get("psnr")
        if parent is None or psnr is None or (parent.result.metrics or {}).get("psnr") is None:
            continue
        by_step[match.group(1)].append((parent.result.metrics["psnr"] - psnr, parent.result.cost / record.result.cost))
    print("step  variants  PSNR lost (dB, mean / min)  MACs speedup gained (mean)")
    for step in sorted(by_step, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0)):
        lost = np.array(by_step[step])
        print(f"{step:>5} {len(lost):9d}  {lost[:, 0].mean():8.2f} / {lost[:, 0].min():5.2f}  {lost[:, 1].mean():10.3f}x")


def main(argv=None) -> int:
    from ecad.bank import ScheduleBank

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bank", nargs="?", help="the bank whose entries are varied")
    p.add_argument("out", nargs="?", help="where to write the seed bank")
    p.add_argument("--report", metavar="RUN_DIR", type=Path, help="report what the variants cost in a run, instead")
    p.add_argument("--min-psnr", type=float, default=33.0, help="vary entries with calibration PSNR >= this (default 33)")
    p.add_argument("--count", type=int, default=20, help="vary the N entries with the fewest MACs among those (default 20)")
    args = p.parse_args(argv)
    if args.report:
        report(args.report)
        return 0
    if not (args.bank and args.out):
        p.error("give BANK and OUT (or --report RUN_DIR)")
    bank = ScheduleBank.load(args.bank)
    chosen = sorted((e for e in bank.entries if e.source == "ecad" and e.quality.get("psnr", 0) >= args.min_psnr),
                    key=lambda e: e.macs)[: args.count]
    entries = [bank.no_cache_entry()]  # a bank must hold it; the search seeds it anyway
    for entry in chosen:
        for suffix, schedule in variants(entry.cache_schedule()):
            entries.append(entry.model_copy(update={
                "id": f"{entry.id}-{suffix}", "schedule": schedule.to_dict(), "quality_measured": False,
                "validation": None, "interval": None}))
    seeds = bank.model_copy(update={
        "entries": entries, "profiles": [],
        "notice": f"guidance-reuse variants of {len(chosen)} entries of {Path(args.bank).name} "
                  "(scripts/guidance_seeds.py): search seeds; MACs and scores are the parents', not measured"})
    seeds.save(args.out)
    print(f"wrote {len(entries) - 1} variants of {len(chosen)} entries (and no-cache) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
