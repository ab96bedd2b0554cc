#!/usr/bin/env python
"""Cache-engine benchmark: hook overhead, realized vs predicted speedup, memory (not a test).

For each pipeline, runs interleaved (unhooked, all-recompute hooked, then the variants: FORA n=2,
n=3 by default) through `ecad.generate.generate` and reports medians of the whole call and of the
time spent inside the transformer (torch forward pre/post hooks around `pipe.transformer`,
identical for every variant).

- overhead = transformer time, all-recompute hooked / unhooked (target <= 1.01)
- realized = transformer time, unhooked / variant; predicted = MACs ratio (`macs_speedup`, every
  action counted); efficiency = realized / predicted
- peak KiB = most bytes the engine holds at once for one call (`CacheHandle.peak_bytes_held`)

A variant is a `heuristic_suite` name (fora-n, taylorseer-n, block-skip-n, ...), ``bank:ID`` (an
entry of `--bank`), with ``+skip`` appended: the same schedule with every all-reused block skipped
(`CacheSchedule.skip_idle_blocks`).

    python scripts/bench_engine.py                      # tiny + small random pipelines
    python scripts/bench_engine.py --model models/ecad-scenes --steps 20 --repeats 7
    python scripts/bench_engine.py --model models/ecad-scenes --steps 20 --repeats 7 \
        --bank schedules/ecad-scenes/32x32-20steps.json --variants fora-10 fora-10+skip \
        bank:ecad-g6-8c20231e bank:ecad-g6-8c20231e+skip

Tiny pipelines are dominated by Python overhead, so their efficiency says little; the "small"
random PixArt (8 blocks, width 256, 256 image tokens) is a fairer stand-in for a real model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], help="diffusers folder (repeatable); "
                   "default: the tiny and small random pipelines")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1, help="images per call")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--guidance-scale", type=float, default=4.5)
    p.add_argument("--variants", nargs="*", default=["fora-2", "fora-3"],
                   help="schedules to time against unhooked (default fora-2 fora-3); see above")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="transformer time as wall clock, or this process's CPU time (steadier on a "
                        "shared machine: other processes' load does not count; one torch thread)")
    p.add_argument("--bank", default=None, help="bank file for bank:ID variants")
    return p.parse_args(argv)


class TransformerTimer:
    """Time (wall or CPU, by `clock`) spent inside `transformer` (all its calls) since the last reset."""

    def __init__(self, transformer, clock=time.perf_counter):
        self.clock = clock
        self.total = 0.0
        self._start = 0.0
        self._handles = [transformer.register_forward_pre_hook(self._pre),
                         transformer.register_forward_hook(self._post)]

    def _pre(self, module, args):
        self._start = self.clock()

    def _post(self, module, args, output):
        self.total += self.clock() - self._start

    def remove(self):
        for h in self._handles:
            h.remove()


def resolve_variant(name: str, layout, num_steps: int, bank_path: str | None):
    """The schedule a variant name stands for (see the module docstring)."""
    from ecad.heuristics import heuristic_suite

    base, plus_skip = (name[: -len("+skip")], True) if name.endswith("+skip") else (name, False)
    if base.startswith("bank:"):
        if bank_path is None:
            raise SystemExit(f"variant {name!r} needs --bank")
        from ecad.bank import ScheduleBank

        schedule = ScheduleBank.load(bank_path).entry(base[len("bank:"):]).cache_schedule().resample(num_steps)
    else:
        suite = heuristic_suite(layout, num_steps)
        if base not in suite:
            raise SystemExit(f"unknown variant {name!r}; heuristics: {', '.join(suite)}")
        schedule = suite[base]
    return schedule.skip_idle_blocks() if plus_skip else schedule


def bench(name: str, path: str, args, size: int | None = None) -> list[dict]:
    from ecad.adapters import get_adapter
    from ecad.cost import macs_speedup
    from ecad.generate import generate, load_pipeline, native_resolution
    from ecad.heuristics import no_cache
    from ecad.hooks import cache_schedule
    from ecad.setting import Setting
    from ecad.timing import time_rounds

    pipe = load_pipeline(path)
    adapter = get_adapter(pipe)
    layout = adapter.layout(pipe.transformer)
    native_height, native_width = native_resolution(pipe)
    height = args.height or size or native_height
    width = args.width or size or native_width
    setting = Setting(height, width, args.steps, args.guidance_scale)
    prompts = ["a red house on a green field"] * args.batch_size
    seeds = list(range(args.batch_size))
    variants = {"unhooked": None, "no-cache": no_cache(layout, args.steps)}
    variants.update({v: resolve_variant(v, layout, args.steps, args.bank) for v in args.variants})

    timer = TransformerTimer(pipe.transformer, time.process_time if args.clock == "cpu" else time.perf_counter)
    transformer_times: dict[str, list[float]] = {k: [] for k in variants}

    def runner(key, schedule):
        def fn():
            timer.total = 0.0
            generate(pipe, prompts, seeds, setting, schedule)
            transformer_times[key].append(timer.total)
        return fn

    peak = {}
    for key, schedule in variants.items():
        if schedule is not None:
            with cache_schedule(pipe, schedule) as handle:
                generate(pipe, prompts, seeds, setting)
                peak[key] = handle.peak_bytes_held
    call_times = time_rounds({k: runner(k, s) for k, s in variants.items()},
                             rounds=args.repeats, warmup=args.warmup).wall_s
    timer.remove()
    med = {k: statistics.median(v[args.warmup:]) for k, v in transformer_times.items()}
    rows = []
    for key, schedule in variants.items():
        row = {"model": name, "size": f"{width}x{height}", "variant": key, "call_ms": 1e3 * statistics.median(call_times[key]),
               "transformer_ms": 1e3 * med[key]}
        if key == "no-cache":
            row["overhead"] = med[key] / med["unhooked"]
        if key in peak:
            row["peak_kib"] = peak[key] / 1024
        if key not in ("unhooked", "no-cache"):
            row["predicted"] = macs_speedup(pipe, setting, schedule)
            row["realized"] = med["unhooked"] / med[key]
            row["efficiency"] = row["realized"] / row["predicted"]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from ecad.tiny import build_tiny_pipeline

    models = [(Path(m).name, m, None) for m in args.model]
    if not models:
        root = Path(tempfile.gettempdir()) / "ecad-bench-pipelines"
        # (kind, scale, image size): "small" PixArt sees 256 image tokens at 32 px, FLUX at 64 px
        for kind, scale, size in [("pixart-alpha", "tiny", 32), ("pixart-sigma", "tiny", 32), ("flux", "tiny", 32),
                                  ("pixart-sigma", "small", 32), ("flux", "small", 64)]:
            path = build_tiny_pipeline(kind, root / f"{kind}-{scale}", scale=scale)
            models.append((f"{kind}/{scale}", str(path), size))
    print(f"steps={args.steps} batch={args.batch_size} repeats={args.repeats} threads={args.threads} "
          f"clock={args.clock}", flush=True)
    header = f"{'model':<20} {'size':>7} {'variant':<28} {'call ms':>9} {'transf. ms':>10} {'overhead':>8} " \
             f"{'MACs x':>7} {'real x':>7} {'real/MACs':>9} {'peak KiB':>9}"
    print(header)
    print("-" * len(header))
    fmt = lambda row, k, spec: format(row[k], spec) if k in row else ""  # noqa: E731
    for name, path, size in models:
        for row in bench(name, path, args, size):
            print(f"{row['model']:<20} {row['size']:>7} {row['variant']:<28} {row['call_ms']:>9.1f} {row['transformer_ms']:>10.1f} "
                  f"{fmt(row, 'overhead', '.3f'):>8} {fmt(row, 'predicted', '.2f'):>7} "
                  f"{fmt(row, 'realized', '.2f'):>7} {fmt(row, 'efficiency', '.2f'):>9} {fmt(row, 'peak_kib', '.1f'):>9}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
