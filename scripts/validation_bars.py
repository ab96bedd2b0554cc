#!/usr/bin/env python
"""A bank's fastest entry, in MACs speedup over no-cache, whose PSNR on the validation prompts
(the calibration's held-back split, `entry.validation`) clears 35 / 30 dB, with and without the
scenes reward >= 98% of no-cache's on the same prompts.

    python scripts/validation_bars.py schedules/ecad-scenes/32x32-20steps.json \
        runs/calibrate/ecad-scenes/focus-psnr28-bank.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BARS = (35.0, 30.0)
REWARD_SHARE = 0.98


def fastest_at_bars(bank) -> dict[str, tuple[float, str, float] | None]:
    """{bar name: (MACs speedup, entry id, validation PSNR)} of the fastest entry clearing it."""
    no_cache = bank.no_cache_entry()
    base_reward = no_cache.validation["scenes-reward"]
    out = {}
    for bar in BARS:
        for with_reward in (True, False):
            ok = [e for e in bank.entries if e.validation and e.validation["psnr"] >= bar
                  and (not with_reward or e.validation["scenes-reward"] >= REWARD_SHARE * base_reward)]
            best = max(ok, key=lambda e: no_cache.macs / e.macs, default=None)
            out[f">= {bar:.0f} dB" + (" + reward" if with_reward else "")] = (
                (no_cache.macs / best.macs, best.id, best.validation["psnr"]) if best else None)
    return out


def main(argv=None) -> int:
    from ecad.bank import ScheduleBank

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("banks", nargs="+", help="bank files with validation scores (ecad-calibrate --validation-prompts)")
    args = p.parse_args(argv)
    for path in args.banks:
        bank = ScheduleBank.load(path)
        print(f"{path} ({len(bank.entries)} entries)")
        for bar, best in fastest_at_bars(bank).items():
            print(f"  {bar}: " + (f"{best[0]:.2f}x {best[1]} ({best[2]:.1f} dB)" if best else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
