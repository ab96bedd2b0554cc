"""ecad-import-reference: turn the ECAD paper's published schedule files into one of our banks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from ecad.configs import architecture_names

    parser = argparse.ArgumentParser(
        prog="ecad-import-reference",
        description=(
            "Import schedule files published with the ECAD paper (AniAggarwal/ecad, commit a2f0534) "
            "into a schedule bank for one model setting. Their MACs and latency are kept as provenance; "
            "the bank's MACs are counted by ecad on the full-size architecture (no weights needed) and "
            "its quality is marked unmeasured (see ecad-rescore). A step-0 'reuse' is imported as "
            "recompute and reported."
        ),
    )
    parser.add_argument("files", nargs="+", help="reference JSON files (e.g. .../pixart_alpha_256/ours_fast.json)")
    parser.add_argument("--model", required=True,
                        help=f"hub id of the model the bank is for; known: {', '.join(architecture_names())}")
    parser.add_argument("--out", required=True, help="bank JSON file to write")
    parser.add_argument("--height", type=int, help="default: the files' config, else the model's resolution")
    parser.add_argument("--width", type=int, help="default: the files' config, else the model's resolution")
    parser.add_argument("--guidance-scale", type=float, help="default: the files' config, else the pipeline's default")
    parser.add_argument("--heuristics", default="", help="also add these ecad.heuristics schedules, e.g. 'fora-2,fora-3'")
    parser.add_argument("--notice", help="provenance line of the bank (default: names the source repository and commit)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ecad.configs import get_architecture
    from ecad.reference import import_reference_bank
    from ecad.setting import Setting

    try:
        arch = get_architecture(args.model)
        first = json.loads(Path(args.files[0]).read_text(encoding="utf-8"))
        config = first.get("config") or {}
        steps = len(first["cache_schedule"]["schedule"])
        setting = Setting(
            args.height or int(config.get("height", arch.default_resolution)),
            args.width or int(config.get("width", arch.default_resolution)),
            steps,
            args.guidance_scale if args.guidance_scale is not None
            else float(config.get("guidance_scale", arch.default_guidance_scale)),
        )
        heuristics = [h.strip() for h in args.heuristics.split(",") if h.strip()]
        bank, report = import_reference_bank(args.files, arch.hub_id, setting, heuristics=heuristics,
                                             notice=args.notice)
    except (KeyError, OSError, ValueError, TypeError) as err:  # ReferenceFormatError is a ValueError
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"ecad-import-reference: {message}", file=sys.stderr)
        return 1
    out = bank.save(args.out)
    print(f"{len(bank.entries)} entries for {bank.model} at {setting.name}, guidance {setting.guidance_scale} -> {out}")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
