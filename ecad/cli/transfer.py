"""ecad-transfer: a bank moved to another step count (or size, or a sibling checkpoint) by noise level."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecad-transfer",
        description=(
            "Move every schedule of a bank to another setting by the scheduler's noise levels, not by "
            "step index: what was computed or reused between two noise levels stays between them (a reuse "
            "chain grows with step density and shrinks without it), always a valid schedule. Writes a bank "
            "whose quality is marked unmeasured (provenance names the source); the server serves it as any "
            "bank. Without weights for the bundled full-size architectures (their scheduler is in "
            "ecad/configs), else from the model folder's configs."),
    )
    parser.add_argument("bank", help="source bank, e.g. schedules/FLUX.1-dev/1024x1024-20steps.json")
    parser.add_argument("--steps", type=int, help="target denoising steps (default: the bank's)")
    parser.add_argument("--height", type=int, help="target height (default: the bank's)")
    parser.add_argument("--width", type=int, help="target width (default: the bank's)")
    parser.add_argument("--to-model", metavar="ARCHITECTURE",
                        help="a bundled architecture of the same layout to move the bank to (e.g. PixArt-XL-2-512x512)")
    parser.add_argument("--out", help="bank file to write (default schedules/<model>/<setting>.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ecad.bank import BankError, ScheduleBank
    from ecad.configs import get_architecture
    from ecad.paths import SCHEDULES_DIR, model_name
    from ecad.transfer import transfer_bank

    for name in ("steps", "height", "width"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"ecad-transfer: --{name} must be >= 1", file=sys.stderr)
            return 2
    try:
        bank = ScheduleBank.load(args.bank)
        try:
            model = get_architecture(bank.model)
        except KeyError:
            model = bank.model  # a model folder: its scheduler and transformer configs
        target_model = get_architecture(args.to_model) if args.to_model else None
        if target_model is not None and target_model.layout() != bank.entries[0].cache_schedule().layout:
            raise BankError(f"{args.to_model} has another block layout than {bank.model}")
        target = bank.setting.with_changes(num_inference_steps=args.steps, height=args.height, width=args.width)
        moved = transfer_bank(bank, model, target, target_model=target_model)
    except (BankError, KeyError, OSError, ValueError) as err:
        print(f"ecad-transfer: {err}", file=sys.stderr)
        return 1
    out = Path(args.out or SCHEDULES_DIR / model_name(moved.model) / f"{target.name}.json")
    moved.save(out)
    full = moved.no_cache_entry().macs
    print(f"{len(bank.entries)} entries of {bank.setting.name} -> {len(moved.entries)} at {target.name} ({moved.model}), "
          f"written to {out}")
    for entry in sorted(moved.entries, key=lambda e: e.macs):
        print(f"  {entry.id:<48} {full / entry.macs:5.2f}x MACs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
