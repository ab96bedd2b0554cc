"""Full-size check of the imported schedules: realized speedup on this device next to MACs and the paper.

Builds the real PixArt-XL-2-256 and FLUX.1-dev transformers from the bundled configs with random
weights (latency does not depend on weight values), runs the denoising loop the pipeline would
(one transformer call per step; PixArt with CFG as a batch of 2, FLUX with embedded guidance)
under each schedule of the committed banks, interleaved and repeated, and prints per schedule:
MACs speedup (our count), realized speedup vs the unhooked no-cache loop, the paper's A6000
speedup (from the bank's provenance), and the realized/MACs ratio. It also reports the hook
overhead (all-recompute schedule vs no hooks; the outputs must be bit-identical) and whether
`ecad.compile.compile_pipeline` keeps compiling to the first generation when schedules change.

On a GPU:   python scripts/device_check.py --device cuda --dtype bfloat16
On a CPU:   python scripts/device_check.py --models PixArt-XL-2-256x256 --steps 5 --entries ...
(FLUX full size on a CPU takes minutes per call: use --models PixArt-XL-2-256x256 there;
--macs-only prints the MACs tables without building anything.)
The bare transformer's hooks count steps by reading the timestep (one device sync per step, which
a pipeline with a scheduler avoids); that sync is part of the reported hook overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ecad.bank import ScheduleBank
from ecad.configs import get_architecture
from ecad.cost import image_macs
from ecad.hooks import cache_schedule
from ecad.paths import SCHEDULES_DIR
from ecad.schedule import CacheSchedule
from ecad.timing import time_rounds

MODELS = {"PixArt-XL-2-256x256": "256x256-20steps.json", "FLUX.1-dev": "256x256-20steps.json"}


def build_transformer(name: str, device: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    import diffusers

    arch = get_architecture(name)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in `dtype` on `device`: FLUX in float32 first would need 48 GB
    try:
        with torch.device(device):
            transformer = getattr(diffusers, arch.transformer_class)(**arch.config)
    finally:
        torch.set_default_dtype(default)
    return transformer.to(dtype=dtype).eval().requires_grad_(False)


def make_inputs(name: str, batch: int, device: str, dtype: torch.dtype) -> dict:
    """Random inputs shaped as the pipeline gives them at 256x256 for `batch` images."""
    arch = get_architecture(name)
    gen = torch.Generator("cpu").manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    side = 256 // arch.vae_scale_factor
    if arch.transformer_class == "PixArtTransformer2DModel":
        b = 2 * batch  # CFG: unconditional + conditional in one call
        return {"latents": randn(b, 4, side, side), "fixed": {
            "encoder_hidden_states": randn(b, arch.max_sequence_length, arch.config["caption_channels"]),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}, "timestep_scale": 1000.0}
    tokens = (side // 2) ** 2
    ids = torch.zeros(tokens, 3)
    ids[:, 1] = torch.arange(tokens) // (side // 2)
    ids[:, 2] = torch.arange(tokens) % (side // 2)
    return {"latents": randn(batch, tokens, arch.config["in_channels"]), "fixed": {
        "encoder_hidden_states": randn(batch, arch.max_sequence_length, arch.config["joint_attention_dim"]),
        "pooled_projections": randn(batch, arch.config["pooled_projection_dim"]),
        "guidance": torch.full((batch,), 5.0, device=device, dtype=dtype),
        "txt_ids": torch.zeros(arch.max_sequence_length, 3, device=device, dtype=dtype),
        "img_ids": ids.to(device=device, dtype=dtype)}, "timestep_scale": 1.0}


@torch.no_grad()
def denoise(transformer, inputs: dict, steps: int) -> torch.Tensor:
    """`steps` transformer calls with decreasing timesteps and an Euler update, as a sampler does."""
    x = inputs["latents"]
    for i in range(steps):
        t = torch.full((x.shape[0],), (1.0 - i / steps) * inputs["timestep_scale"], device=x.device, dtype=x.dtype)
        out = transformer(hidden_states=x, timestep=t, return_dict=False, **inputs["fixed"])[0]
        x = x - out[:, : x.shape[1]] / steps
    return x


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def check_model(name: str, args) -> dict:
    bank = ScheduleBank.load(SCHEDULES_DIR / name / MODELS[name])
    dtype = getattr(torch, args.dtype)
    transformer = build_transformer(name, args.device, dtype)
    inputs = make_inputs(name, args.batch_size, args.device, dtype)
    entries = [e for e in bank.entries if not args.entries or e.id in args.entries or e.id == "no-cache"]
    schedules = {e.id: e.cache_schedule().resample(args.steps) for e in entries}
    macs_full = {e.id: e.macs for e in entries}
    if args.steps != bank.num_inference_steps:  # MACs of the resampled schedules, by the same count
        setting = bank.setting.with_changes(num_inference_steps=args.steps)
        macs_full = {k: image_macs(get_architecture(name), setting, s) for k, s in schedules.items()}

    def run(schedule: CacheSchedule | None, steps: int = args.steps):
        def call():
            with cache_schedule(transformer, schedule):
                out = denoise(transformer, inputs, steps)
            sync(args.device)
            return out
        return call

    # exactness: the all-recompute schedule's hooks must not change a bit (two steps are enough)
    identical = bool(torch.equal(run(None, 2)(), run(schedules["no-cache"], 2)()))
    fns = {"unhooked": run(None), **{k: run(s) for k, s in schedules.items()}}
    started = time.perf_counter()
    times = time_rounds(fns, rounds=args.repeats, warmup=args.warmup).wall_s
    elapsed = time.perf_counter() - started
    base = statistics.median(times["unhooked"])
    rows = []
    for entry in entries:
        med = statistics.median(times[entry.id])
        macs = macs_full["no-cache"] / macs_full[entry.id]
        per_round = [b / t for b, t in zip(times["unhooked"], times[entry.id])]
        paper = paper_speedup(entry, bank.no_cache_entry())
        rows.append({"entry": entry.id, "macs_speedup": macs, "realized": base / med,
                     "realized_min": min(per_round), "realized_max": max(per_round),
                     "ratio": base / med / macs, "paper_a6000": paper, "median_s": med})
    result = {"model": bank.model, "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size,
              "steps": args.steps, "threads": torch.get_num_threads(), "repeats": args.repeats,
              "unhooked_s": base, "hook_overhead": statistics.median(times["no-cache"]) / base,
              "hooked_all_recompute_bit_identical": identical, "rows": rows, "seconds": elapsed}
    if args.compile:
        result["compile"] = compile_check(transformer, inputs, schedules, args)
    return result


def compile_check(transformer, inputs, schedules, args) -> dict:
    from torch._dynamo.utils import counters

    from ecad.compile import compile_pipeline

    torch._dynamo.reset()
    counters.clear()
    compile_pipeline(transformer)
    names = list(schedules)
    started = time.perf_counter()
    with cache_schedule(transformer, schedules[names[0]]):
        denoise(transformer, inputs, args.steps)
    sync(args.device)
    first = time.perf_counter() - started
    frames_after_first = counters["frames"]["total"]
    for name in names:
        with cache_schedule(transformer, schedules[name]):
            denoise(transformer, inputs, args.steps)
    sync(args.device)
    return {"graphs": counters["stats"]["unique_graphs"], "frames_after_first_generation": frames_after_first,
            "frames_after_all_schedules": counters["frames"]["total"], "first_generation_s": first,
            "recompiled_when_switching": counters["frames"]["total"] != frames_after_first}


def paper_speedup(entry, no_cache) -> float | None:
    """The source's A6000 latency of no-cache / of `entry` (same GPU), from the bank's provenance."""
    prov, full = entry.provenance, no_cache.provenance
    if prov and full and prov.reference_latency_ms and full.reference_latency_ms and prov.reference_gpu == full.reference_gpu:
        return full.reference_latency_ms / prov.reference_latency_ms
    return None


def macs_table(name: str) -> str:
    """Without running anything: our MACs speedup, the source's MACs speedup and its A6000 speedup."""
    bank = ScheduleBank.load(SCHEDULES_DIR / name / MODELS[name])
    full = bank.no_cache_entry()
    lines = [f"### {bank.model} {bank.setting.name} - MACs only (meta device, no run)", "",
             "| schedule | MACs speedup (ours) | MACs speedup (paper's count) | paper A6000 | A6000 / MACs |",
             "|---|---|---|---|---|"]
    for entry in bank.entries:
        ours = full.macs / entry.macs
        theirs = (full.provenance.reference_macs / entry.provenance.reference_macs
                  if entry.provenance and full.provenance else None)
        paper = paper_speedup(entry, full)
        lines.append(f"| {entry.id} | {ours:.2f}x | {f'{theirs:.2f}x' if theirs else '-'} | "
                     f"{f'{paper:.2f}x' if paper else '-'} | {f'{paper / theirs:.2f}' if paper and theirs else '-'} |")
    return "\n".join(lines)


def table(result: dict) -> str:
    lines = [f"### {result['model']} - {result['device']} {result['dtype']}, batch {result['batch_size']}, "
             f"{result['steps']} steps, {result['threads']} thread(s), {result['repeats']} interleaved rounds",
             "", f"unhooked no-cache loop: {result['unhooked_s']:.2f} s; hook overhead (all-recompute schedule / "
             f"unhooked): {result['hook_overhead']:.3f}; bit-identical: {result['hooked_all_recompute_bit_identical']}",
             "", "| schedule | MACs speedup | realized (min-max over rounds) | realized / MACs | paper A6000 |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        paper = f"{r['paper_a6000']:.2f}x" if r["paper_a6000"] else "-"
        lines.append(f"| {r['entry']} | {r['macs_speedup']:.2f}x | {r['realized']:.2f}x "
                     f"({r['realized_min']:.2f}-{r['realized_max']:.2f}) | {r['ratio']:.2f} | {paper} |")
    if "compile" in result:
        c = result["compile"]
        lines += ["", f"torch.compile (components, before hooks): {c['graphs']} graphs, "
                      f"recompiled when switching schedules: {c['recompiled_when_switching']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--entries", nargs="*", default=None, help="bank entry ids (default: all)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (schedules resampled if not 20)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per call (PixArt doubles it for CFG)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--macs-only", action="store_true", help="print the MACs tables only (no model is built)")
    parser.add_argument("--out", help="write the JSON results and the markdown table here (folder)")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.macs_only:
        print("\n\n".join(macs_table(name) for name in args.models))
        return 0
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        result = check_model(name, args)
        results.append(result)
        print(table(result), flush=True)
        print(flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{args.device.split(':')[0]}-{args.dtype}"
        (out / f"{stem}.json").write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=2) + "\n")
        (out / f"{stem}.md").write_text("\n\n".join(table(r) for r in results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
