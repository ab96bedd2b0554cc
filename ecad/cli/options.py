"""Command-line options several ecad commands share, spelled once."""

from __future__ import annotations

import argparse

DTYPES = ("float32", "float16", "bfloat16")


def add_bank_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--model/--device/--dtype/--threads for commands that run a bank's model on this machine."""
    import torch

    parser.add_argument("--model", help="diffusers model id or folder (default: the bank's model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")


def positive_options_error(prog: str, args: argparse.Namespace, names: tuple[str, ...]) -> str | None:
    """The message for the first of `names` (argparse dests) that is below 1, else None."""
    for name in names:
        if getattr(args, name) < 1:
            return f"{prog}: --{name.replace('_', '-')} must be >= 1"
    return None


def load_bank_and_pipeline(args: argparse.Namespace):
    """(bank, pipeline) from `add_bank_runtime_options`' arguments plus a positional `bank`:
    torch threads set, the bank's own model unless --model names another, and the transformer
    checked against the bank. Raises BankError / OSError with a message for the user."""
    import torch

    from ecad.bank import ScheduleBank
    from ecad.generate import load_pipeline

    if args.device.startswith("cpu"):
        torch.set_num_threads(args.threads)
    bank = ScheduleBank.load(args.bank)
    pipe = load_pipeline(args.model or bank.model, device=args.device, dtype=getattr(torch, args.dtype))
    bank.check_transformer(dict(pipe.transformer.config), source=args.bank)
    return bank, pipe
