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

The other families (`--family`, names as in `ecad/configs/`, comma-separated) have no committed
bank of published schedules: each runs no hooks, the all-recompute schedule (its output must be
bit-identical to no hooks), FORA n=2 and a block skip (`ecad.heuristics`), at a stated size, with
inputs shaped from the adapter and the architecture as the family's pipeline gives them (latent
layout, tokens, padded text length and width, pooled projections, CFG as a batch of 2, a second
call, or none). The loop is driven like a pipeline's (the hooks read the step from a scheduler
stand-in, no sync). Progress is printed with timestamps; with --out the JSON and markdown are
rewritten (atomically) after each family.

On a GPU:   python scripts/device_check.py --device cuda --family stable-diffusion-3.5-large,Qwen-Image \
                --steps 20 --repeats 3 --out docs/benchmarks/fullsize
On a CPU:   python scripts/device_check.py --family stable-diffusion-3.5-large,Qwen-Image --tiny --steps 2
(--tiny scales every family's config down to two blocks of width 16 at 64x64: the same code, seconds.)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from ecad import heuristics
from ecad.adapters import get_adapter
from ecad.atomic import atomic_write_text
from ecad.bank import ScheduleBank
from ecad.configs import architecture_names, get_architecture
from ecad.cost import image_macs
from ecad.hooks import cache_schedule
from ecad.paths import SCHEDULES_DIR
from ecad.schedule import CacheSchedule
from ecad.setting import Setting
from ecad.timing import paired_verdict, time_rounds

MODELS = {"PixArt-XL-2-256x256": "256x256-20steps.json", "FLUX.1-dev": "256x256-20steps.json"}


def build_transformer(name: str, device: str, dtype: torch.dtype, seed: int = 0,
                      config_changes: dict | None = None) -> torch.nn.Module:
    """The architecture's transformer with random weights, built on `device` in `dtype`
    (`config_changes` replace config values: `--tiny`)."""
    import diffusers

    arch = get_architecture(name)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in `dtype` on `device`: FLUX in float32 first would need 48 GB
    try:
        with torch.device(device):
            transformer = getattr(diffusers, arch.transformer_class)(**{**arch.config, **(config_changes or {})})
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
             *family_header(result),
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


# -- the other families: FORA n=2 and a block skip against no hooks (no bank of theirs needed) -----

@dataclass(frozen=True)
class CallConvention:
    """How a family's pipeline calls its transformer, beyond what its adapter and config say."""

    latents: str  # "spatial": (B, C, h, w); "tokens": (B, tokens, C), patches packed; "video": (B, C, f, h, w)
    text_width: str  # config key of the width of `encoder_hidden_states`
    timestep_scale: float  # the pipeline passes sigma times this (Qwen-Image divides its timesteps by 1000)
    pooled_width: str | None = None  # config key of the width of `pooled_projections` (SD3)
    img_shapes: bool = False  # Qwen-Image: the (frames, rows, columns) token grid of each sample, for RoPE


CONVENTIONS = {
    "SD3Transformer2DModel": CallConvention("spatial", "joint_attention_dim", 1000.0,
                                            pooled_width="pooled_projection_dim"),
    "QwenImageTransformer2DModel": CallConvention("tokens", "joint_attention_dim", 1.0, img_shapes=True),
    "WanTransformer3DModel": CallConvention("video", "text_dim", 1000.0),
}

#: `--tiny`: config values that make a family's transformer two blocks of width 16 (2 heads of 8),
#: run at TINY_SIZE pixels (video at the pipeline's default frame count, as the cost model counts it)
TINY = {
    "SD3Transformer2DModel": dict(num_layers=2, num_attention_heads=2, attention_head_dim=8, caption_projection_dim=16,
                                  joint_attention_dim=32, pooled_projection_dim=32, pos_embed_max_size=16,
                                  sample_size=8),
    "QwenImageTransformer2DModel": dict(num_layers=2, num_attention_heads=2, attention_head_dim=8,
                                        joint_attention_dim=32, axes_dims_rope=[2, 2, 4]),
    "WanTransformer3DModel": dict(num_layers=2, num_attention_heads=2, attention_head_dim=8, ffn_dim=32, text_dim=32,
                                  freq_dim=32),
}
TINY_SIZE = 64

#: what each family runs besides no hooks (names as in `ecad.heuristics.heuristic_suite`)
FAMILY_SCHEDULES = {
    "no-cache": heuristics.no_cache,
    "fora-2": lambda layout, steps: heuristics.fora(layout, steps, 2),
    "block-skip-2": lambda layout, steps: heuristics.block_skip(layout, steps, 2),
}

BATCHED_CFG, TWO_CALLS, NO_CFG = "CFG as a batch of 2", "CFG as a second call", "one call, no CFG"


@dataclass(frozen=True)
class LoopInputs:
    """What a denoising loop of one image (or video) feeds the transformer."""

    latents: torch.Tensor  # at sigma 1
    calls: tuple[dict, ...]  # per transformer call of a step: its keywords besides hidden_states and timestep
    guidance: str  # BATCHED_CFG, TWO_CALLS or NO_CFG
    guidance_scale: float
    timestep_scale: float


def make_family_inputs(arch, transformer, setting: Setting, device: str, dtype: torch.dtype) -> LoopInputs:
    """Random inputs shaped as the family's pipeline gives them for one image at `setting`: the
    adapter says the tokens, latent frames and how guidance is batched; the architecture the VAE
    factor and the padded prompt length; the config the channels and widths."""
    conv = CONVENTIONS[arch.transformer_class]
    adapter, config = get_adapter(transformer), transformer.config
    rows, calls = adapter.transformer_batch(None, 1, guidance_scale=setting.guidance_scale)
    guidance = BATCHED_CFG if rows == 2 else TWO_CALLS if calls == 2 else NO_CFG
    gen = torch.Generator("cpu").manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    vsf = arch.vae_scale_factor
    h, w = setting.height // vsf, setting.width // vsf
    if conv.latents == "spatial":
        latents = randn(1, config.in_channels, h, w)
    elif conv.latents == "tokens":
        tokens = adapter.num_tokens(transformer, height=setting.height, width=setting.width, vae_scale_factor=vsf)
        latents = randn(1, tokens, config.in_channels)
    else:
        latents = randn(1, config.in_channels, adapter.latent_frames(), h, w)

    def prompt_rows() -> dict:  # one call's text conditioning (the two calls of TWO_CALLS differ)
        kw = {"encoder_hidden_states": randn(rows, arch.max_sequence_length, config[conv.text_width])}
        if conv.pooled_width:
            kw["pooled_projections"] = randn(rows, config[conv.pooled_width])
        if conv.img_shapes:
            kw["img_shapes"] = [[(1, h // config.patch_size, w // config.patch_size)]] * rows
        return kw

    return LoopInputs(latents, tuple(prompt_rows() for _ in range(calls)), guidance, setting.guidance_scale,
                      conv.timestep_scale)


class Sampler:
    """What the hooks' step clock reads from a pipeline: its transformer, and a scheduler's
    timesteps (a new tensor per denoising run) and step index, so no step costs a device sync."""

    def __init__(self, transformer: torch.nn.Module):
        self.transformer = transformer
        self.scheduler = SimpleNamespace(timesteps=None, step_index=None)

    @torch.no_grad()
    def __call__(self, inputs: LoopInputs, steps: int) -> torch.Tensor:
        """`steps` Euler steps of a flow from sigma 1 to 0, guided as the family's pipeline does."""
        x = inputs.latents
        sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
        self.scheduler.timesteps = torch.tensor(sigmas[:-1]) * inputs.timestep_scale
        batched = inputs.guidance == BATCHED_CFG
        for i in range(steps):
            self.scheduler.step_index = i
            model_in = torch.cat([x, x]) if batched else x
            t = torch.full((model_in.shape[0],), sigmas[i] * inputs.timestep_scale, device=x.device)
            outs = [self.transformer(hidden_states=model_in, timestep=t, return_dict=False, **kw)[0]
                    for kw in inputs.calls]
            if batched:
                uncond, cond = outs[0].chunk(2)
            elif inputs.guidance == TWO_CALLS:
                cond, uncond = outs
            else:
                uncond = cond = outs[0]
            velocity = uncond + inputs.guidance_scale * (cond - uncond) if inputs.guidance != NO_CFG else cond
            if velocity.shape != x.shape:
                raise ValueError(f"the transformer returned {tuple(velocity.shape)} for latents {tuple(x.shape)}")
            x = x + (sigmas[i + 1] - sigmas[i]) * velocity
        return x


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (NaN included: random full-size weights may overflow, which the timing does not mind)."""
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a.view(as_int), b.view(as_int)))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - STARTED:6.1f}s] {message}", flush=True)


STARTED = time.perf_counter()


def check_family(name: str, args) -> dict:
    """No hooks, the all-recompute schedule, FORA n=2 and a block skip on `name`'s full-size
    transformer (random weights), interleaved; MACs speedups from the architecture."""
    arch = get_architecture(name)
    dtype = getattr(torch, args.dtype)
    log(f"{arch.name}: building {arch.transformer_class}{' (tiny)' if args.tiny else ''} on {args.device} in {args.dtype}")
    started = time.perf_counter()
    transformer = build_transformer(name, args.device, dtype, config_changes=TINY[arch.transformer_class] if args.tiny else None)
    sync(args.device)
    build_s = time.perf_counter() - started
    parameters = sum(p.numel() for p in transformer.parameters())
    height, width = (TINY_SIZE, TINY_SIZE) if args.tiny else (args.size or arch.default_size)
    setting = Setting(height, width, args.steps, arch.default_guidance_scale)
    inputs = make_family_inputs(arch, transformer, setting, args.device, dtype)
    log(f"{arch.name}: {parameters:,} parameters built in {build_s:.1f} s; {height}x{width}, "
        f"latents {tuple(inputs.latents.shape)}, {arch.max_sequence_length} text tokens, {inputs.guidance}")

    layout = get_adapter(transformer).layout(transformer)
    schedules = {key: make(layout, args.steps) for key, make in FAMILY_SCHEDULES.items()}
    # the MACs recipe on the published architecture (meta device); a --tiny model is costed as built
    costed = transformer if args.tiny else arch
    macs = {key: image_macs(costed, setting, s) for key, s in schedules.items()}

    sampler, outputs = Sampler(transformer), {}

    def run(key: str, schedule: CacheSchedule | None):
        def call():
            with cache_schedule(sampler, schedule):
                outputs[key] = sampler(inputs, args.steps)
            sync(args.device)
        return call

    fns = {"unhooked": run("unhooked", None), **{key: run(key, s) for key, s in schedules.items()}}
    total, done = (args.warmup + args.repeats) * len(fns), [0]

    def progress(n: int) -> None:
        done[0] += n
        log(f"{arch.name}: {done[0]}/{total} denoising runs")

    started = time.perf_counter()
    timings = time_rounds(fns, rounds=args.repeats, warmup=args.warmup, progress=progress,
                          time_budget_s=args.family_budget_s)
    elapsed = time.perf_counter() - started
    base = statistics.median(timings.wall_s["unhooked"])
    reference = outputs["unhooked"]
    rows = []
    for key in schedules:
        med = statistics.median(timings.wall_s[key])
        per_round = [b / t for b, t in zip(timings.wall_s["unhooked"], timings.wall_s[key])]
        verdict = paired_verdict(timings, key, "unhooked")
        macs_speedup = macs["no-cache"] / macs[key]
        rows.append({"entry": key, "macs_speedup": macs_speedup, "realized": base / med,
                     "realized_min": min(per_round), "realized_max": max(per_round),
                     "realized_interval": list(verdict.interval), "ratio": base / med / macs_speedup,
                     "paper_a6000": None, "median_s": med, "macs": macs[key],
                     "max_abs_diff_vs_unhooked": float((outputs[key].float() - reference.float()).abs().max())})
    result = {"model": arch.hub_id, "architecture": arch.name, "transformer_class": arch.transformer_class,
              "tiny": args.tiny, "parameters": parameters, "build_s": build_s, "device": args.device,
              "dtype": args.dtype, "height": height, "width": width, "num_frames": arch.default_num_frames,
              "latents": list(inputs.latents.shape), "text_len": arch.max_sequence_length,
              "guidance": inputs.guidance, "guidance_scale": setting.guidance_scale, "batch_size": 1,
              "steps": args.steps, "threads": torch.get_num_threads(), "repeats": timings.rounds,
              "unhooked_s": base, "hook_overhead": statistics.median(timings.wall_s["no-cache"]) / base,
              "hooked_all_recompute_bit_identical": same_bits(outputs["no-cache"], reference),
              "output_finite": bool(torch.isfinite(reference).all()), "rows": rows, "seconds": elapsed}
    log(f"{arch.name}: {timings.rounds} rounds timed in {elapsed:.1f} s")
    del transformer, sampler, outputs, inputs, reference
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def family_names(value: str) -> list[str]:
    """`--family a,b`: bundled architecture names (or hub ids) of a family with a call convention."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    known = [n for n in architecture_names() if get_architecture(n).transformer_class in CONVENTIONS]
    out = []
    for name in names:
        try:
            arch = get_architecture(name)
        except KeyError:
            arch = None
        if arch is None or arch.transformer_class not in CONVENTIONS:
            raise argparse.ArgumentTypeError(f"--family: {name!r} is not one of {', '.join(known)}")
        out.append(arch.name)
    if not out:
        raise argparse.ArgumentTypeError(f"--family: give one or more of {', '.join(known)}, comma-separated")
    return out


def size(value: str) -> tuple[int, int]:
    """`--size HEIGHTxWIDTH` in pixels."""
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size: expected HEIGHTxWIDTH in pixels, e.g. 1024x1024, got {value!r}")
    if h < 16 or w < 16 or h % 16 or w % 16:
        raise argparse.ArgumentTypeError(f"--size: height and width must be positive multiples of 16 pixels "
                                         f"(VAE factor 8 x patch 2), got {value!r}")
    return h, w


def write_results(out: Path, stem: str, results: list[dict], argv: list[str]) -> None:
    """The JSON and markdown of the results so far (atomic: a run cut short leaves the last family's)."""
    atomic_write_text(out / f"{stem}.json", json.dumps({"argv": argv, "results": results}, indent=2) + "\n")
    atomic_write_text(out / f"{stem}.md", "\n\n".join(table(r) for r in results) + "\n")


def family_header(result: dict) -> list[str]:
    """The size, inputs and model of a `--family` result (none for the banks' models)."""
    if "transformer_class" not in result:
        return []
    frames = f", {result['num_frames']} frames" if result["num_frames"] else ""
    return ["", f"{result['transformer_class']}{' (--tiny)' if result['tiny'] else ''}, "
                f"{result['parameters']:,} random parameters (built in {result['build_s']:.0f} s); "
                f"{result['height']}x{result['width']}{frames}, latents {tuple(result['latents'])}, "
                f"{result['text_len']} text tokens, {result['guidance']} (scale {result['guidance_scale']:g}); "
                f"output finite: {result['output_finite']}"]


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
    parser.add_argument("--family", type=family_names, default=None, metavar="NAME[,NAME...]",
                        help="instead of --models: time no hooks, all-recompute, fora-2 and block-skip-2 on these "
                             "architectures (ecad/configs names, comma-separated)")
    parser.add_argument("--size", type=size, default=None, metavar="HxW",
                        help="--family: image size in pixels (default: the pipeline's)")
    parser.add_argument("--family-budget-s", type=float, default=None,
                        help="--family: start no new timed round after this many seconds per family")
    parser.add_argument("--tiny", action="store_true",
                        help="--family: two blocks of width 16 at 64x64 instead of the published config (CPU test)")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if not args.family and (args.tiny or args.size or args.family_budget_s):
        parser.error("--tiny, --size and --family-budget-s go with --family")
    if args.macs_only and args.family:
        parser.error("--macs-only goes with --models (a --family run prints its MACs speedups next to the timings)")
    if args.macs_only:
        print("\n\n".join(macs_table(name) for name in args.models))
        return 0
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    stem = f"{args.device.split(':')[0]}-{args.dtype}"
    if args.family:
        names, check, stem = args.family, check_family, f"{stem}-families{'-tiny' if args.tiny else ''}"
    else:
        names, check = args.models, check_model
    results = []
    for name in names:
        result = check(name, args)
        results.append(result)
        print(table(result), flush=True)
        print(flush=True)
        if args.out:
            write_results(Path(args.out), stem, results, sys.argv[1:] if argv is None else list(argv))
            log(f"wrote {Path(args.out) / stem}.json and .md ({len(results)}/{len(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
