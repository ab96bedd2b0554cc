"""ecad-generate: make one image with a diffusers pipeline, optionally under a cache schedule."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecad-generate",
        description=(
            "Generate an image with a diffusers DiT pipeline (PixArt-alpha/Sigma, FLUX), reusing "
            "transformer component outputs according to a cache schedule."
        ),
        epilog=(
            "examples:\n"
            "  ecad-generate --model models/ecad-scenes --prompt 'a red house' --out house.png\n"
            "  ecad-generate --model PATH --prompt 'a cat' --schedule fora-3 --steps 20 --out cat.png\n"
            "  ecad-generate --model PATH --prompt 'a cat' --schedule best.json --out cat.png\n"
            "  ecad-generate --model PATH --list-heuristics --steps 20"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="diffusers model folder (or hub id if online)")
    parser.add_argument("--prompt", help="text prompt")
    parser.add_argument("--negative-prompt", default=None, help="negative prompt (FLUX: enables true CFG "
                        "with --true-cfg-scale)")
    parser.add_argument("--schedule", default=None,
                        help="schedule JSON file, or a heuristic name (see --list-heuristics); default: no caching")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20); a schedule file "
                        "with another step count is resampled")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--guidance-scale", type=float, default=4.5, help="guidance scale (default 4.5)")
    parser.add_argument("--true-cfg-scale", type=float, default=None, help="FLUX true CFG scale (needs "
                        "--negative-prompt)")
    parser.add_argument("--height", type=int, default=None, help="image height in pixels (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels (default: the model's)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--out", default="image.png", help="output PNG path (default image.png)")
    parser.add_argument("--list-heuristics", action="store_true", help="list heuristic schedule names and exit")
    return parser


def resolve_schedule(spec: str | None, layout, setting, pipe):
    """A schedule from a JSON file path or a heuristic name, for `setting`'s steps: a file made for
    other steps is moved there by the pipeline's noise levels (``ecad.transfer``, as the server does)."""
    from ..heuristics import heuristic_suite
    from ..schedule import CacheSchedule
    from ..transfer import transfer_to_setting

    if spec is None:
        return None
    steps = setting.num_inference_steps
    path = Path(spec)
    if path.suffix == ".json" or path.exists():
        schedule = CacheSchedule.from_json(path.read_text())
        if schedule.num_steps != steps:
            print(f"moving schedule from {schedule.num_steps} to {steps} steps by noise level", file=sys.stderr)
            source = setting.with_changes(num_inference_steps=schedule.num_steps)
            schedule = transfer_to_setting(schedule, pipe, source, setting)
        schedule.validate(layout=layout)
        return schedule
    suite = heuristic_suite(layout, steps)
    if spec not in suite:
        raise SystemExit(f"unknown schedule {spec!r}: not a file, and not one of {', '.join(suite)}")
    return suite[spec]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ..adapters import get_adapter
    from ..cost import macs_speedup
    from ..generate import generate, load_pipeline, native_resolution
    from ..heuristics import heuristic_suite
    from ..setting import Setting
    from ..schedule import ScheduleError

    pipe = load_pipeline(args.model, device=args.device)
    adapter = get_adapter(pipe)
    layout = adapter.layout(pipe.transformer)
    if args.list_heuristics:
        print("\n".join(heuristic_suite(layout, args.steps)))
        return 0
    if not args.prompt:
        raise SystemExit("--prompt is required")
    native_height, native_width = native_resolution(pipe)
    height, width = args.height or native_height, args.width or native_width
    extra = {"true_cfg_scale": args.true_cfg_scale} if args.true_cfg_scale else {}
    start = time.perf_counter()
    setting = Setting(height, width, args.steps, args.guidance_scale)
    try:
        schedule = resolve_schedule(args.schedule, layout, setting, pipe)
        images = generate(pipe, [args.prompt], [args.seed], setting, schedule,
                          negative_prompt=args.negative_prompt, **extra)
    except ScheduleError as e:  # e.g. a schedule made for another model, or guidance reuse at guidance 1
        raise SystemExit(f"error: {e}") from None
    elapsed = time.perf_counter() - start
    from PIL import Image

    array = (images[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    Image.fromarray(array).save(args.out)
    if schedule is not None:
        speedup = macs_speedup(pipe, setting, schedule, true_cfg=bool(extra) and args.negative_prompt is not None)
        note = f", schedule {schedule.hash[:12]} ({speedup:.2f}x fewer transformer MACs)"
    else:
        note = ""
    print(f"wrote {args.out} ({width}x{height}, {args.steps} steps, {elapsed:.2f} s{note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
