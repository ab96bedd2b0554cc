"""ecad-profile: measure every bank entry's latency on this machine and store it in the bank."""

from __future__ import annotations

import argparse
import logging
import sys

from ecad.cli.options import add_bank_runtime_options, load_bank_and_pipeline, positive_options_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecad-profile",
        description=(
            "Measure the latency of every schedule in a bank on this hardware (warm-up, then "
            "interleaved repeated runs, median) and store it in the bank file under this "
            "hardware's profile (device, dtype, batch size, CPU threads). The server then predicts "
            "latency from it instead of profiling at start-up."
        ),
    )
    parser.add_argument("bank", help="bank JSON file, e.g. schedules/ecad-scenes/32x32-20steps.json")
    add_bank_runtime_options(parser)
    parser.add_argument("--batch-size", type=int, default=1, help="images per call (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="stop starting new rounds after this long (at least one timed round runs)")
    parser.add_argument("--output", help="write the profiled bank here instead of in place")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ecad.bank import BankError
    from ecad.profile import profile_bank

    problem = positive_options_error("ecad-profile", args, ("batch_size", "threads", "repeats"))
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        bank, pipe = load_bank_and_pipeline(args)
    except (BankError, OSError) as err:
        print(f"ecad-profile: {err}", file=sys.stderr)
        return 1
    profile = profile_bank(pipe, bank, batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup,
                           time_budget_s=args.time_budget)
    out = bank.with_profile(profile).save(args.output or args.bank)
    fastest = min(profile.latency_ms.values())
    print(f"profile {profile.key}: {len(profile.latency_ms)} schedules, {fastest:.1f}-"
          f"{max(profile.latency_ms.values()):.1f} ms, written to {out}")
    for entry_id, ms in sorted(profile.latency_ms.items(), key=lambda kv: kv[1]):
        print(f"  {entry_id:<24} {ms:9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
