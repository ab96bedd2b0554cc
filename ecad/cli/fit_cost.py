"""ecad-fit-cost: time a bank's schedules on this machine and fit the per-hardware cost model
that `ecad-calibrate --cost fitted --cost-model FILE` searches under and `ecad-bench --cost-model
FILE` ranks deciding points by."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

from ecad.cli.options import add_bank_runtime_options, load_bank_and_pipeline, positive_options_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecad-fit-cost",
        description=(
            "Time every schedule of a bank against no-cache on this machine (one image per call, "
            "shuffled interleaved rounds, no-cache re-timed between every few schedules), fit seconds "
            "per image as a non-negative sum of the schedules' work (recomputed MACs per component, "
            "block work, forecast and skip element-wise work, a count per action) and check the fit "
            "out of sample (k-fold). Writes a JSON report whose \"model\" is the fitted cost."),
        epilog="The timings are kept beside the report (<out>.timing.json) and reused on a rerun: "
               "delete that file to time again.",
    )
    parser.add_argument("bank", help="bank JSON file whose entries are timed, e.g. schedules/ecad-scenes/32x32-20steps.json")
    add_bank_runtime_options(parser)
    parser.add_argument("--out", required=True, help="report JSON to write (the cost model is its \"model\")")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--reference-every", type=int, default=4,
                        help="no-cache is re-timed between every this many schedules (default 4)")
    parser.add_argument("--calls", type=int, default=2, help="images in a row per timing (default 2)")
    parser.add_argument("--folds", type=int, default=2, help="k of the out-of-sample check (default 2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ecad.atomic import atomic_write_text
    from ecad.bank import BankError
    import numpy as np
    from ecad.cost import fit_cost, out_of_fold_speedups, schedule_cost_features
    from ecad.profile import time_schedules

    problem = positive_options_error("ecad-fit-cost", args, ("threads", "rounds", "reference_every", "calls"))
    if problem or args.folds < 2:
        print(problem or "ecad-fit-cost: --folds must be >= 2", file=sys.stderr)
        return 2
    try:
        bank, pipe = load_bank_and_pipeline(args)
    except (BankError, OSError) as err:
        print(f"ecad-fit-cost: {err}", file=sys.stderr)
        return 1
    entries = [e for e in bank.entries if e is not bank.no_cache_entry()]
    if len(entries) < 2 * args.folds:
        print(f"ecad-fit-cost: {len(entries)} schedules besides no-cache; a {args.folds}-fold check needs "
              f"at least {2 * args.folds}", file=sys.stderr)
        return 2
    out = Path(args.out)
    timing_path = out.with_suffix(".timing.json")
    if timing_path.exists():
        speedups = json.loads(timing_path.read_text())["speedup"]
        print(f"ecad-fit-cost: reusing the timings in {timing_path}")
    else:
        timings = time_schedules(pipe, bank.setting, {e.id: e.cache_schedule() for e in entries}, rounds=args.rounds,
                                 reference_every=args.reference_every, calls_per_timing=args.calls)
        speedups = {e.id: timings.summary(e.id) for e in entries}
        atomic_write_text(timing_path, json.dumps({"bank": args.bank, "rounds": args.rounds, "speedup": speedups,
                                                   "no_cache_seconds": timings.reference_wall_s}, indent=1) + "\n")
    entries = [e for e in entries if e.id in speedups]
    features = [schedule_cost_features(pipe, bank.setting, e.cache_schedule()) for e in entries]
    no_cache = schedule_cost_features(pipe, bank.setting)
    realized = [speedups[e.id]["speedup"] for e in entries]
    predicted = out_of_fold_speedups(features, realized, no_cache, folds=args.folds)
    threads = f"{args.threads} torch thread(s)" if args.device.startswith("cpu") else args.device
    model = fit_cost(features, [1.0 / r for r in realized],
                     hardware=f"{platform.machine()} {platform.processor() or args.device}, {threads}, batch 1")
    ratios = [r / p for r, p in zip(realized, predicted) if np.isfinite(p)]
    if not ratios:
        print("ecad-fit-cost: no fold's fit could price its held-out schedules; time more schedules (a larger bank)",
              file=sys.stderr)
        return 1
    full = bank.no_cache_entry().macs
    report = {
        "bank": args.bank, "entries": len(entries), "rounds": args.rounds, "folds": args.folds, "model": model.to_dict(),
        "realized_over_predicted_out_of_fold": {"min": float(min(ratios)), "median": float(statistics.median(ratios)),
                                                "max": float(max(ratios)),
                                                "within_5pct": int(sum(abs(r - 1) <= 0.05 for r in ratios)),
                                                "unpriced": int(len(realized) - len(ratios))},
        "bank_entries": [{"id": e.id, "realized": r, "predicted_out_of_fold": float(p) if np.isfinite(p) else None,
                          "macs_speedup": full / e.macs}
                         for e, r, p in zip(entries, realized, predicted)],
    }
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    s = report["realized_over_predicted_out_of_fold"]
    print(f"fitted on {len(entries)} schedules; realized / predicted out of fold: median {s['median']:.3f}, "
          f"{s['min']:.3f}-{s['max']:.3f}, {s['within_5pct']} within 5%; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
