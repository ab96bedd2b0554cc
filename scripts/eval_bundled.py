"""Figures for the bundled ecad-scenes model: quality, latency, size, and how the reward sees caching.

    python scripts/eval_bundled.py [--model models/ecad-scenes] [--out models/ecad-scenes/metrics.json]
                                   [--grid docs/images/samples.png]

Everything runs on one CPU thread with fixed seeds. Prints markdown tables and writes the numbers
as JSON. Caching uses ecad's engine (`ecad.hooks.apply_cache_schedule`) when it is importable,
otherwise a few lines of forward-replacing hooks below that do the same thing for step-wise
schedules: at a recompute step attn1/attn2/ff run and keep their output, at a reuse step they
return the kept output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffusers import PixArtAlphaPipeline  # noqa: E402

from ecad.quality.scenes_reward import ScenesReward, scenes_fid  # noqa: E402
from ecad.zoo import scenes  # noqa: E402

STEPS = 20
GUIDANCE = 4.5
CALL = dict(num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=scenes.IMAGE_SIZE, width=scenes.IMAGE_SIZE,
            output_type="pt", use_resolution_binning=False, clean_caption=False,
            max_sequence_length=scenes.MAX_SEQUENCE_LENGTH)


def schedules(steps: int = STEPS) -> dict[str, np.ndarray]:
    """Step masks (True = recompute) from mild to brutal."""
    out = {"no cache": np.ones(steps, bool)}
    for n in (2, 3, 4, 5, 6):
        out[f"FORA n={n}"] = np.arange(steps) % n == 0
    for k in (16, 12, 10, 8, 6, 4):
        out[f"reuse after step {k}"] = np.arange(steps) < k
    return out


@contextlib.contextmanager
def simple_step_cache(pipe, step_mask: np.ndarray):
    """Reuse attn1/attn2/ff outputs at the steps where step_mask is False (one transformer call per step)."""
    tr = pipe.transformer
    state = {"step": -1}
    cache: dict[int, torch.Tensor] = {}
    originals = []

    def count_step(module, args, kwargs):
        state["step"] += 1

    def wrap(key, module):
        original = module.forward

        def forward(*args, **kwargs):
            if step_mask[state["step"]] or key not in cache:
                cache[key] = original(*args, **kwargs)
            return cache[key]

        module.forward = forward
        originals.append((module, original))

    handle = tr.register_forward_pre_hook(count_step, with_kwargs=True)
    for b, block in enumerate(tr.transformer_blocks):
        for c, name in enumerate(("attn1", "attn2", "ff")):
            wrap((b, c), getattr(block, name))
    try:
        yield
    finally:
        handle.remove()
        for module, original in originals:
            module.forward = original


ENGINE = "auto"  # set from --engine


def cache_context(pipe, step_mask):
    if ENGINE == "simple":
        return simple_step_cache(pipe, step_mask), "eval_bundled.simple_step_cache"
    try:
        from ecad.adapters import get_adapter
        from ecad.hooks import cache_schedule
        from ecad.schedule import CacheSchedule

        layout = get_adapter(pipe.transformer).layout(pipe.transformer)
        return cache_schedule(pipe, CacheSchedule.from_step_mask(layout, step_mask)), "ecad.hooks"
    except ImportError:
        if ENGINE == "ecad":
            raise
        return simple_step_cache(pipe, step_mask), "eval_bundled.simple_step_cache"


def generate(pipe, prompts, seed, batch=64, step_mask=None):
    images, engine = [], None
    for start in range(0, len(prompts), batch):
        ctx, engine = cache_context(pipe, step_mask) if step_mask is not None else (contextlib.nullcontext(), None)
        with ctx:
            gen = torch.Generator().manual_seed(seed + start)
            images.append(pipe(prompts[start:start + batch], generator=gen, **CALL).images)
    return torch.cat(images), engine


def psnr(a, b):
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return (10 * torch.log10(1 / mse)).mean().item()


def latency(pipe, batch, repeats=5):
    prompts = ["a red circle at the top left and a blue square at the bottom right"] * batch
    times = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        pipe(prompts, generator=torch.Generator().manual_seed(r), **CALL)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])  # first call warms up


def step_breakdown(pipe, repeats=5):
    """Per denoising step at batch 1 (CFG: the transformer sees batch 2): blocks vs everything else."""
    tr = pipe.transformer
    clock = {"blocks": 0.0, "transformer": 0.0}
    starts = {}

    def pre(name):
        return lambda *a, **k: starts.__setitem__(name, time.perf_counter())

    def post(name):
        return lambda *a, **k: clock.__setitem__(name, clock[name] + time.perf_counter() - starts[name])

    handles = [tr.transformer_blocks[0].register_forward_pre_hook(pre("blocks")),
               tr.transformer_blocks[-1].register_forward_hook(post("blocks")),
               tr.register_forward_pre_hook(pre("transformer")), tr.register_forward_hook(post("transformer"))]
    totals = []
    try:
        latency(pipe, 1, repeats=1)  # warm-up
        for r in range(repeats):
            clock.update(blocks=0.0, transformer=0.0)
            t = time.perf_counter()
            pipe(["a red circle at the top left and a blue square at the bottom right"],
                 generator=torch.Generator().manual_seed(r), **CALL)
            totals.append((time.perf_counter() - t, clock["blocks"], clock["transformer"]))
    finally:
        for h in handles:
            h.remove()
    total, blocks, transformer = (statistics.median(x[i] for x in totals) for i in range(3))
    return {"image_seconds": total, "step_seconds": total / STEPS, "blocks_per_step": blocks / STEPS,
            "transformer_per_step": transformer / STEPS, "blocks_fraction_of_step": blocks / total,
            "blocks_fraction_of_transformer": blocks / transformer}


def spearman(x, y):
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def save_grid(rows: list[list[torch.Tensor]], path: Path, scale=4, pad=2):
    from PIL import Image

    h = w = scenes.IMAGE_SIZE * scale
    grid = Image.new("RGB", (len(rows[0]) * (w + pad) + pad, len(rows) * (h + pad) + pad), (90, 90, 90))
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            grid.paste(Image.fromarray(arr).resize((w, h), Image.NEAREST), (pad + c * (w + pad), pad + r * (h + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


T0 = time.time()


def progress(what):
    print(f"[{time.time() - T0:6.0f} s] {what}", file=sys.stderr, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/ecad-scenes"))
    p.add_argument("--out", type=Path, default=None, help="JSON results (default <model>/metrics.json)")
    p.add_argument("--grid", type=Path, default=Path("docs/images/samples.png"))
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--num-cache-prompts", type=int, default=128)
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--engine", choices=("auto", "ecad", "simple"), default="auto",
                   help="caching implementation: ecad.hooks, the simple hooks here, or ecad.hooks if importable")
    args = p.parse_args()
    global ENGINE
    ENGINE = args.engine
    out = args.out or args.model / "metrics.json"
    results: dict = {}

    pipe = PixArtAlphaPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    reward = ScenesReward(args.model)

    # --- size on disk
    files = [f for f in args.model.rglob("*") if f.is_file() and f.name != "metrics.json"]
    results["size_mb"] = {"total": sum(f.stat().st_size for f in files) / 1e6, **{
        d: sum(f.stat().st_size for f in (args.model / d).rglob("*") if f.is_file()) / 1e6
        for d in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler", "reward")}}
    results["parameters_millions"] = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e6
                                      for name in ("transformer", "vae", "text_encoder")}

    progress("loaded; quality")
    # --- quality: real renders vs no-cache generations of the same prompts (training pairs)
    rng = np.random.default_rng(12345)
    prompts = [scenes.random_scene(rng, exclude_pairs=scenes.HELD_OUT_PAIRS).prompt for _ in range(args.num_prompts)]
    held_prompts = [scenes.random_scene(rng, only_pairs=scenes.HELD_OUT_PAIRS).prompt for _ in range(64)]
    real = scenes.render_batch([scenes.parse_prompt(q) for q in prompts], np.random.default_rng(1))
    real_held = scenes.render_batch([scenes.parse_prompt(q) for q in held_prompts], np.random.default_rng(2))
    real_fid_pool = scenes.random_batch(2048, np.random.default_rng(3))[1]
    t = time.time()
    gen, _ = generate(pipe, prompts, seed=0)
    gen_held, _ = generate(pipe, held_prompts, seed=1)
    results["generation_seconds_eval_set"] = time.time() - t
    q = {}
    for name, imgs, ps in (("real renders", real, prompts), ("generated (20 steps, no cache)", gen, prompts),
                           ("real renders, held-out pairs", real_held, held_prompts),
                           ("generated, held-out pairs", gen_held, held_prompts)):
        q[name] = {"reward": reward.score(imgs, ps).mean().item(), "accuracy": reward.accuracy(imgs, ps).mean().item()}
    # Colour / shape on their own, over prompted objects only: where generations fall short.
    for name, imgs in (("real renders", real), ("generated (20 steps, no cache)", gen)):
        p_shape, p_colour, shapes, _ = reward.probabilities(imgs, prompts)
        occ = shapes > 0
        q[name].update(mean_p_shape=p_shape[occ].mean().item(), mean_p_colour=p_colour[occ].mean().item())
    q["ratio generated / real"] = q["generated (20 steps, no cache)"]["reward"] / q["real renders"]["reward"]
    q["ratio held-out pairs"] = q["generated, held-out pairs"]["reward"] / q["real renders, held-out pairs"]["reward"]
    q["fid features: generated vs real"] = scenes_fid(gen, real_fid_pool, args.model)
    q["fid features: real vs real (floor)"] = scenes_fid(real, real_fid_pool, args.model)
    # Wrong prompts (each image scored against another image's prompt) and noise: should be low.
    q["real renders, shuffled prompts"] = {"reward": reward.score(real, prompts[1:] + prompts[:1]).mean().item()}
    q["uniform noise"] = {"reward": reward.score(torch.rand_like(real), prompts).mean().item()}
    results["quality"] = q

    progress("caching")
    # --- caching: reward drop vs PSNR drop over schedules mild -> brutal
    cache_prompts = prompts[: args.num_cache_prompts]
    rows, engine_used = [], None
    baseline = None
    cached_images = {}
    for name, mask in schedules().items():
        imgs, engine = generate(pipe, cache_prompts, seed=0, step_mask=None if name == "no cache" else mask)
        engine_used = engine or engine_used
        if baseline is None:
            baseline = imgs
        cached_images[name] = imgs
        progress(f"  {name}")
        rows.append({"schedule": name, "recompute_fraction": float(mask.mean()),
                     "reward": reward.score(imgs, cache_prompts).mean().item(),
                     "accuracy": reward.accuracy(imgs, cache_prompts).mean().item(),
                     "psnr_vs_no_cache": psnr(imgs, baseline) if name != "no cache" else float("inf")})
    r0 = rows[0]["reward"]
    cached = rows[1:]
    reward_drop = [r0 - r["reward"] for r in cached]
    psnr_drop = [-r["psnr_vs_no_cache"] for r in cached]  # lower PSNR = more damage
    results["caching"] = {"engine": engine_used, "rows": rows,
                          "spearman_reward_drop_vs_psnr_drop": spearman(reward_drop, psnr_drop)}

    progress("latency")
    # --- latency on one thread
    if not args.skip_latency:
        results["latency"] = {"breakdown_batch1": step_breakdown(pipe),
                              "image_seconds_batch1": latency(pipe, 1),
                              "image_seconds_batch8": latency(pipe, 8)}
        results["latency"]["per_image_seconds_batch8"] = results["latency"]["image_seconds_batch8"] / 8

    progress("grid")
    # --- sample grid: rows = prompts; columns = real, no cache (3 seeds), FORA 3, FORA 6, reuse after 8
    grid_prompts = prompts[:6] + held_prompts[:2]
    seeds = [generate(pipe, grid_prompts, seed=s)[0] for s in (100, 200, 300)]
    grid_rows = []
    for i, gp in enumerate(grid_prompts):
        row = [scenes.render_batch([scenes.parse_prompt(gp)], np.random.default_rng(i))[0]] + [s[i] for s in seeds]
        j = prompts.index(gp) if gp in cache_prompts else None
        for name in ("FORA n=3", "FORA n=6", "reuse after step 8"):
            row.append(cached_images[name][j] if j is not None else torch.zeros(3, 32, 32))
        grid_rows.append(row)
    save_grid(grid_rows, args.grid)
    results["grid"] = {"path": str(args.grid), "prompts": grid_prompts,
                       "columns": ["real render", "seed 100", "seed 200", "seed 300", "FORA n=3 (seed 0)",
                                   "FORA n=6 (seed 0)", "reuse after step 8 (seed 0)"]}

    out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)


def print_tables(results):
    q = results["quality"]
    print(f"size on disk: {results['size_mb']['total']:.2f} MB  {json.dumps(results['size_mb'])}")
    print(f"parameters (M): {json.dumps(results['parameters_millions'])}")
    print("\n| images | reward | accuracy |\n|---|---|---|")
    for k, v in q.items():
        if isinstance(v, dict):
            print(f"| {k} | {v['reward']:.3f} | {v.get('accuracy', float('nan')):.3f} |")
    for k, v in q.items():
        if not isinstance(v, dict):
            print(f"{k}: {v:.3f}")
    c = results["caching"]
    print(f"\ncaching engine: {c['engine']}\n\n| schedule | recompute | reward | accuracy | PSNR vs no-cache |\n|---|---|---|---|---|")
    for r in c["rows"]:
        print(f"| {r['schedule']} | {r['recompute_fraction']:.2f} | {r['reward']:.3f} | {r['accuracy']:.3f} | "
              f"{r['psnr_vs_no_cache']:.1f} dB |")
    print(f"\nSpearman(reward drop, PSNR drop) over {len(c['rows']) - 1} schedules: "
          f"{c['spearman_reward_drop_vs_psnr_drop']:.3f}")
    if "latency" in results:
        print(f"\nlatency (one thread): {json.dumps(results['latency'], indent=1)}")


if __name__ == "__main__":
    main()
