"""Figures for the bundled ecad-scenes model: quality, latency, size, and how the reward sees caching.

    python scripts/eval_bundled.py [--model models/ecad-scenes] [--out models/ecad-scenes/metrics.json]
                                   [--grid docs/images/samples.png]

Everything runs on one CPU thread with fixed seeds (image i of a set from its own seed, as
`ecad.generate.generate` does). Images are made and scored through the package's one path
(`ecad.evaluate`: `ecad.generate` + the scorer registry); the cached schedules are
`ecad.heuristics` FORA and step masks from mild to brutal, applied by ecad's hooks. Prints
markdown tables and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ecad.adapters import get_adapter  # noqa: E402
from ecad.evaluate import Scoring, render  # noqa: E402
from ecad.generate import load_pipeline  # noqa: E402
from ecad.heuristics import fora  # noqa: E402
from ecad.quality.fidelity import FidelityScorer  # noqa: E402
from ecad.quality.scenes_reward import ScenesReward, scenes_fid  # noqa: E402
from ecad.schedule import CacheSchedule  # noqa: E402
from ecad.setting import Setting  # noqa: E402
from ecad.timing import time_rounds  # noqa: E402
from ecad.zoo import scenes  # noqa: E402

STEPS = 20
GUIDANCE = 4.5
SETTING = Setting(scenes.IMAGE_SIZE, scenes.IMAGE_SIZE, STEPS, GUIDANCE)
LATENCY_PROMPT = "a red circle at the top left and a blue square at the bottom right"
MAX_PSNR = 100.0  # identical images


def schedules(layout, steps: int = STEPS) -> dict[str, CacheSchedule | None]:
    """From mild to brutal: FORA every n steps, and every component reused after step k."""
    out: dict[str, CacheSchedule | None] = {"no cache": None}
    for n in (2, 3, 4, 5, 6):
        out[f"FORA n={n}"] = fora(layout, steps, n)
    for k in (16, 12, 10, 8, 6, 4):
        out[f"reuse after step {k}"] = CacheSchedule.from_step_mask(layout, np.arange(steps) < k)
    return out


def generate(pipe, prompts, seed, schedule=None, batch=64):
    """Image i from seed ``seed + i``."""
    return render(pipe, SETTING, schedule, [(p, seed + i) for i, p in enumerate(prompts)], batch_size=batch)


def latency(pipe, batches=(1, 8), repeats=5) -> dict[int, float]:
    """Median seconds of one call per batch size (`ecad.timing`: interleaved rounds after a warm-up)."""
    calls = {b: (lambda b=b: generate(pipe, [LATENCY_PROMPT] * b, 0)) for b in batches}
    timings = time_rounds(calls, rounds=repeats, warmup=1)
    return {b: timings.median_s(b) for b in batches}


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
        generate(pipe, [LATENCY_PROMPT], 0)  # warm-up
        for r in range(repeats):
            clock.update(blocks=0.0, transformer=0.0)
            t = time.perf_counter()
            generate(pipe, [LATENCY_PROMPT], r)
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
    args = p.parse_args()
    out = args.out or args.model / "metrics.json"
    results: dict = {}

    pipe = load_pipeline(args.model)
    reward = ScenesReward(args.model)
    scoring = Scoring({"scenes-reward": reward, "fidelity": FidelityScorer(max_psnr=MAX_PSNR)})

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
    gen = generate(pipe, prompts, seed=0)
    gen_held = generate(pipe, held_prompts, seed=10_000)
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
    rows = []
    baseline = None
    cached_images = {}
    for name, schedule in schedules(get_adapter(pipe).layout(pipe.transformer)).items():
        imgs = generate(pipe, cache_prompts, seed=0, schedule=schedule)
        if baseline is None:
            baseline = imgs
        cached_images[name] = imgs
        progress(f"  {name}")
        per_image = scoring.per_image(imgs, cache_prompts, baseline)
        rows.append({"schedule": name, "recompute_fraction": 1.0 if schedule is None else schedule.recompute_fraction,
                     "reward": per_image["scenes-reward"].mean().item(),
                     "accuracy": reward.accuracy(imgs, cache_prompts).mean().item(),
                     "psnr_vs_no_cache": per_image["psnr"].mean().item() if schedule is not None else float("inf")})
    r0 = rows[0]["reward"]
    cached = rows[1:]
    reward_drop = [r0 - r["reward"] for r in cached]
    psnr_drop = [-r["psnr_vs_no_cache"] for r in cached]  # lower PSNR = more damage
    results["caching"] = {"engine": "ecad.hooks", "rows": rows,
                          "spearman_reward_drop_vs_psnr_drop": spearman(reward_drop, psnr_drop)}

    progress("latency")
    # --- latency on one thread
    if not args.skip_latency:
        seconds = latency(pipe)
        results["latency"] = {"breakdown_batch1": step_breakdown(pipe),
                              "image_seconds_batch1": seconds[1], "image_seconds_batch8": seconds[8]}
        results["latency"]["per_image_seconds_batch8"] = results["latency"]["image_seconds_batch8"] / 8

    progress("grid")
    # --- sample grid: rows = prompts; columns = real, no cache (3 seeds), FORA 3, FORA 6, reuse after 8
    grid_prompts = prompts[:6] + held_prompts[:2]
    seeds = [generate(pipe, grid_prompts, seed=s) for s in (100, 200, 300)]
    grid_rows = []
    for i, gp in enumerate(grid_prompts):
        row = [scenes.render_batch([scenes.parse_prompt(gp)], np.random.default_rng(i))[0]] + [s[i] for s in seeds]
        j = prompts.index(gp) if gp in cache_prompts else None
        for name in ("FORA n=3", "FORA n=6", "reuse after step 8"):
            row.append(cached_images[name][j] if j is not None else torch.zeros(3, 32, 32))
        grid_rows.append(row)
    save_grid(grid_rows, args.grid)
    results["grid"] = {"path": str(args.grid), "prompts": grid_prompts,
                       "columns": ["real render", "seed 100+i", "seed 200+i", "seed 300+i", "FORA n=3 (seed 0)",
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
