"""ecad-rescore: measure the quality (and optionally latency) of every entry of a bank on this machine.

For banks whose quality is unmeasured (imported from the ECAD paper) on a machine that has the
model's weights; also re-judges any bank with another scorer. ``--validation`` scores every entry
on validation prompts x seeds instead (means, their bootstrap intervals and single-image spreads:
what the server ranks and labels by), keeping the calibration quality.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ecad.cli.options import add_bank_runtime_options, load_bank_and_pipeline, positive_options_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecad-rescore",
        description=(
            "Render every schedule of a bank for a set of prompts x seeds, score the images "
            "(default: fidelity to the uncached images, PSNR), and write the measured quality into "
            "the bank, with the transformer's weights hash. --profile also measures latency on this "
            "hardware (as ecad-profile does)."
        ),
    )
    parser.add_argument("bank", help="bank JSON file, e.g. schedules/PixArt-XL-2-256x256/256x256-20steps.json")
    add_bank_runtime_options(parser)
    parser.add_argument("--scorer", default="fidelity", help="quality scorer (default: fidelity)")
    parser.add_argument("--prompts", type=int, default=8, help="calibration prompts (default 8)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt (default 2)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per pipeline call (default 4)")
    parser.add_argument("--validation", action="store_true",
                        help="score on --prompts validation prompts (disjoint from the calibration prompts) x "
                             "--seeds seeds with the bank's own scorers; write validation means, intervals and "
                             "single-image spreads, keep the calibration quality")
    parser.add_argument("--profile", action="store_true", help="also measure latency (ecad-profile's method)")
    parser.add_argument("--output", help="write the rescored bank here instead of in place")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ecad.bank import BankError
    from ecad.quality import build_scorer
    from ecad.quality.prompts import prompt_set, validation_prompts
    from ecad.rescore import rescore_bank, scoring_for, validate_bank

    problem = positive_options_error("ecad-rescore", args, ("prompts", "seeds", "batch_size", "threads"))
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        bank, pipe = load_bank_and_pipeline(args)
        model = args.model or bank.model
        if args.validation:
            prompts = validation_prompts(model, args.prompts, list(bank.calibration.get("prompts") or []))
            bank = validate_bank(pipe, bank, scoring_for(bank, args.device), prompts, list(range(args.seeds)),
                                 batch_size=args.batch_size, progress=True)
        else:
            scorer = build_scorer(args.scorer, device=args.device)
            bank = rescore_bank(pipe, bank, scorer, prompt_set(model, args.prompts), list(range(args.seeds)),
                                batch_size=args.batch_size, progress=True)
    except (BankError, OSError, ValueError) as err:
        print(f"ecad-rescore: {err}", file=sys.stderr)
        return 1
    if args.profile:
        from ecad.profile import profile_bank

        bank = bank.with_profile(profile_bank(pipe, bank))
    out = bank.save(args.output or args.bank)
    what = "validated" if args.validation else "scored"
    print(f"{len(bank.entries)} entries {what} with {bank.scorer} -> {out}")
    metric = bank.quality_metric
    for entry in sorted(bank.entries, key=lambda e: -e.score(metric)):
        print(f"  {entry.id:<40} {entry.score(metric):8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
