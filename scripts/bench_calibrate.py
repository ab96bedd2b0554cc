#!/usr/bin/env python
"""Benchmark ecad-calibrate: hypervolume per generation vs the heuristic schedules' front, on the
calibration prompts and on held-out prompts; wall time per generation; Ray (N workers) vs
in-process.

    python scripts/bench_calibrate.py                       # bundled model if present, else a tiny one
    python scripts/bench_calibrate.py --model models/ecad-scenes --generations 6 --population 24

Writes <out>/bench.json, <out>/hypervolume.png and prints a Markdown summary.

    python scripts/bench_calibrate.py --efficiency     # no model: the synthetic problem

compares plain NSGA-II with racing, the surrogate pre-screen (a pool of 4 or 8 populations) and
both at equal images rendered (search seeds 0,1,2 by default, ``--efficiency-seeds``; noisy
synthetic problem; hypervolume of the true values of each run's front), writes
<out>/efficiency.json and the plot docs/benchmarks/search-efficiency.png (--plot).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="default: models/ecad-scenes if trained, else a small random PixArt-Sigma")
    p.add_argument("--scorer", default="auto")
    p.add_argument("--scorer-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--held-out-prompts", type=int, default=8)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--population", type=int, default=24)
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--ray-generations", type=int, default=2, help="generations timed on Ray (0: skip Ray)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-calibrate")
    p.add_argument("--efficiency", action="store_true", help="compare the search variants on the synthetic problem")
    p.add_argument("--plot", default=str(REPO / "docs" / "benchmarks" / "search-efficiency.png"))
    p.add_argument("--efficiency-seeds", default="0,1,2", help="search seeds of --efficiency (default %(default)s)")
    return p.parse_args(argv)


def default_model(out: Path) -> str:
    bundled = REPO / "models" / "ecad-scenes"
    if (bundled / "model_index.json").is_file():
        return str(bundled)
    from ecad.tiny import build_tiny_pipeline

    return str(build_tiny_pipeline("pixart-sigma", out / "tiny-pixart-sigma-small", scale="small"))


def front_hv(points: np.ndarray, lower, upper) -> float:
    from ecad.search.optimizer.hypervolume import hypervolume

    return hypervolume(points, lower, upper) if len(points) else 0.0


def F_of(records, values=None):
    from ecad.search.optimizer.hypervolume import objectives

    if values is None:
        return objectives([r.result.quality for r in records], [r.result.cost for r in records])
    return objectives([values[r.key].quality for r in records], [values[r.key].cost for r in records])


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.efficiency:
        return efficiency(args, search_seeds=tuple(int(x) for x in args.efficiency_seeds.split(",") if x.strip()))
    import torch

    torch.set_num_threads(1)
    from ecad.cli.calibrate import _scorer_arg, resolve_scorer
    from dataclasses import replace

    from ecad.generate import native_resolution
    from ecad.quality.prompts import prompt_set
    from ecad.search.optimizer.hypervolume import normalization_from
    from ecad.search.optimizer.loop import archive_front, run_search
    from ecad.search.optimizer.nsga import GeneticSettings
    from ecad.search.executors import LocalExecutor
    from ecad.search.evaluator import RenderRecipe
    from ecad.search.task import build_model_task
    from ecad.setting import Setting

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model or default_model(out)
    args.model = model
    args.scorer_arg = [_scorer_arg(a) for a in args.scorer_arg]
    scorer, scorer_kwargs, _ = resolve_scorer(args)
    height, width = native_resolution(model)
    seeds = [int(s) for s in args.seeds.split(",")]
    recipe = RenderRecipe(model=model, setting=Setting(height, width, args.steps, args.guidance), scorer=scorer,
                          scorer_kwargs=scorer_kwargs, prompts=prompt_set(model, args.num_prompts, "calibration"),
                          seeds=seeds, num_threads=1)
    task = build_model_task(recipe)
    settings = GeneticSettings(population=args.population)
    tag = f"{Path(model).name}-{scorer}-p{args.population}-s{args.seed}"

    # 1. in-process search
    started = time.perf_counter()
    local = run_search(task, out / f"run-local-{tag}", LocalExecutor(task.recipe), generations=args.generations,
                       settings=settings, seed=args.seed, progress=False)
    local_wall = time.perf_counter() - started
    history = local.state.history
    heuristics = local.seed_records
    lower, upper = local.state.normalization
    heuristic_hv = front_hv(F_of(heuristics), lower, upper)

    # 2. held-out prompts: re-score every schedule that was on a front at some generation + heuristics
    held = replace(recipe, prompts=prompt_set(model, args.held_out_prompts, "held-out")).build()
    held.set_references(held.compute_references())
    fronts = {g: archive_front(local.memo, g) for g in range(local.state.generation + 1)}
    to_score = {r.key: r for rs in fronts.values() for r in rs} | {r.key: r for r in heuristics}
    started = time.perf_counter()
    held_values = {key: held.evaluate(r.bits) for key, r in to_score.items()}
    held_seconds = time.perf_counter() - started
    held_all = F_of(list(to_score.values()), held_values)
    held_lower, held_upper = normalization_from(F_of(heuristics, held_values))
    held_heuristic_hv = front_hv(F_of(heuristics, held_values), held_lower, held_upper)
    rows = []
    for g, front in fronts.items():
        rows.append({
            "generation": g,
            "hv_calibration": history[g]["hypervolume"],
            "hv_held_out": front_hv(F_of(front, held_values), held_lower, held_upper),
            "front_size": len(front),
            "seconds": history[g]["seconds"],
            "evaluated": history[g]["evaluated"],
        })

    # 3. Ray with N workers vs in-process, same seed: wall time per generation, same front
    ray_result = None
    if args.ray_generations > 0:
        import ray

        from ecad.search.executors.ray_actors import RayExecutor

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})
        g_ray = min(args.ray_generations, args.generations)
        started = time.perf_counter()
        with RayExecutor(task.recipe, num_workers=args.workers) as executor:
            startup = time.perf_counter() - started
            distributed = run_search(task, out / f"run-ray-{tag}-{time.time_ns()}", executor, generations=g_ray,
                                     settings=settings, seed=args.seed, progress=False, plot=False)
        ray_wall = time.perf_counter() - started
        ray.shutdown()
        local_front_g = [(r.key, r.result.quality, r.result.cost) for r in archive_front(local.memo, g_ray)]
        ray_front = [(r.key, r.result.quality, r.result.cost) for r in distributed.front]
        local_gen = [h["seconds"] for h in history[1 : g_ray + 1]]
        ray_gen = [h["seconds"] for h in distributed.state.history[1:]]
        ray_result = {
            "workers": args.workers,
            "generations": g_ray,
            "actor_startup_seconds": round(startup, 2),
            "wall_seconds": round(ray_wall, 2),
            "seconds_per_generation": ray_gen,
            "in_process_seconds_per_generation": local_gen,
            "speedup_per_generation": round(float(np.mean(local_gen) / np.mean(ray_gen)), 3) if ray_gen else None,
            "same_front_as_in_process": ray_front == local_front_g,
        }

    summary = {
        "model": model, "scorer": scorer, "setting": recipe.setting.name,
        "population": args.population, "generations": args.generations, "bits": task.space.n_var,
        "calibration_prompts": args.num_prompts, "held_out_prompts": args.held_out_prompts, "seeds": seeds,
        "heuristics": len(heuristics), "hv_heuristics_calibration": heuristic_hv,
        "hv_heuristics_held_out": held_heuristic_hv, "per_generation": rows,
        "in_process_wall_seconds": round(local_wall, 2), "held_out_scoring_seconds": round(held_seconds, 2),
        "evaluations": len(local.memo), "ray": ray_result, "warnings": local.warnings,
        "final_front": [
            {"key": r.key[:12], "label": r.label, "generation": r.generation, "cost": r.result.cost,
             "quality": r.result.quality, "held_out_quality": held_values[r.key].quality}
            for r in local.front
        ],
        "heuristics_detail": [
            {"label": r.label, "cost": r.result.cost, "quality": r.result.quality,
             "held_out_quality": held_values[r.key].quality}
            for r in heuristics
        ],
    }
    (out / "bench.json").write_text(json.dumps(summary, indent=1))
    plot(out / "hypervolume.png", summary)
    print(markdown(summary))


def plot(path, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = summary["per_generation"]
    g = [r["generation"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot(g, [r["hv_calibration"] for r in rows], "o-", label="ECAD front, calibration prompts")
    ax.plot(g, [r["hv_held_out"] for r in rows], "s-", label="ECAD front, held-out prompts")
    ax.axhline(summary["hv_heuristics_calibration"], ls="--", c="tab:blue", label="heuristics, calibration")
    ax.axhline(summary["hv_heuristics_held_out"], ls=":", c="tab:orange", label="heuristics, held-out")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (normalised)")
    ax.set_title(f"{Path(summary['model']).name} {summary['setting']} — {summary['scorer']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(s):
    lines = [
        f"model {s['model']} ({s['setting']}), scorer {s['scorer']}, {s['bits']} bits, population "
        f"{s['population']}, {s['calibration_prompts']} calibration / {s['held_out_prompts']} held-out prompts x "
        f"{len(s['seeds'])} seeds, {s['evaluations']} evaluations",
        "",
        "| generation | HV calibration | HV held-out | front | new evals | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in s["per_generation"]:
        lines.append(f"| {r['generation']} | {r['hv_calibration']:.4f} | {r['hv_held_out']:.4f} | {r['front_size']} | "
                     f"{r['evaluated']} | {r['seconds']:.1f} |")
    lines.append(f"| heuristics ({s['heuristics']}) | {s['hv_heuristics_calibration']:.4f} | "
                 f"{s['hv_heuristics_held_out']:.4f} | | | |")
    if s["ray"]:
        r = s["ray"]
        lines += ["", f"Ray {r['workers']} workers vs in-process over {r['generations']} generations: "
                      f"{r['seconds_per_generation']} s vs {r['in_process_seconds_per_generation']} s per generation "
                      f"(speedup {r['speedup_per_generation']}x; actor start-up {r['actor_startup_seconds']} s); "
                      f"same front: {r['same_front_as_in_process']}"]
    for w in s["warnings"]:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)


EFFICIENCY_VARIANTS = ("plain", "racing", "surrogate", "racing+surrogate", "racing+surrogate8")


def efficiency(args, shape=(10, 4, 3), num_samples=8, noise=0.05, generations=40, search_seeds=(0, 1, 2)):
    """Hypervolume vs images rendered for each search variant, on a noisy synthetic problem.

    Each candidate's quality is a mean over ``num_samples`` noisy samples (the stand-in for
    prompt x seed images); the hypervolume is that of the *true* (noise-free) values of the
    front each run believes in, normalised by the true front's range, so noise that fools a run
    costs it hypervolume.
    """
    import tempfile

    from ecad.search.optimizer.hypervolume import hypervolume
    from ecad.search.optimizer.loop import archive_front, run_search
    from ecad.search.optimizer.noise import RacingSettings
    from ecad.search.optimizer.nsga import GeneticSettings
    from ecad.search.optimizer.surrogate import SurrogateSettings
    from ecad.search.optimizer.synthetic import SyntheticRecipe, synthetic_task
    from ecad.search.executors import LocalExecutor

    logging.getLogger("ecad.search").setLevel(logging.WARNING)
    task = synthetic_task(shape=shape, num_samples=num_samples, noise=noise)
    truth = SyntheticRecipe(task.recipe.weights).build()  # the same problem without noise
    lower, upper = [-1.0, 0.0], [0.0, 1.0]  # true quality and cost both span [0, 1]
    features = {
        "plain": {},
        "racing": {"racing": RacingSettings(0.25)},
        "surrogate": {"surrogate": SurrogateSettings(pool_factor=4)},
        "racing+surrogate": {"racing": RacingSettings(0.25), "surrogate": SurrogateSettings(pool_factor=4)},
        "racing+surrogate8": {"racing": RacingSettings(0.25), "surrogate": SurrogateSettings(pool_factor=8)},
    }
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in EFFICIENCY_VARIANTS:
            for seed in search_seeds:
                result = run_search(task, Path(tmp) / f"{variant}-{seed}", LocalExecutor(task.recipe),
                                    generations=generations, settings=GeneticSettings(population=args.population),
                                    seed=seed, progress=False, plot=False, **features[variant])
                points = []
                for record in result.state.history:
                    front = archive_front(result.memo, record["generation"])
                    true_F = np.array([[-truth.evaluate(r.bits).quality, r.result.cost] for r in front])
                    points.append((record["images_total"], hypervolume(true_F, lower, upper)))
                curves[f"{variant}/{seed}"] = points
    ratios = {}
    for seed in search_seeds:
        plain = curves[f"plain/{seed}"]
        target, plain_images = plain[-1][1], plain[-1][0]
        for variant in EFFICIENCY_VARIANTS[1:]:
            reached = [images for images, hv in curves[f"{variant}/{seed}"] if hv >= target]
            ratios.setdefault(variant, []).append(reached[0] / plain_images if reached else None)
    summary = {"problem": {"shape": list(shape), "bits": task.space.n_var, "num_samples": num_samples, "noise": noise},
               "population": args.population, "generations": generations, "search_seeds": list(search_seeds),
               "curves": curves,
               "images_to_reach_plain_final_hv_over_plain_images": ratios}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "efficiency.json").write_text(json.dumps(summary, indent=1))
    plot_efficiency(Path(args.plot), summary)
    lines = ["| variant | images to reach plain NSGA-II's final HV / plain's images (per seed) |", "|---|---|"]
    for variant, values in ratios.items():
        lines.append(f"| {variant} | {', '.join('not reached' if v is None else f'{v:.2f}' for v in values)} |")
    print("\n".join(lines))


def plot_efficiency(path: Path, summary) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(EFFICIENCY_VARIANTS, ("tab:gray", "tab:blue", "tab:red", "tab:purple", "tab:green")))
    labels = {"surrogate": "surrogate (pool 4)", "racing+surrogate": "racing + surrogate (pool 4)",
              "racing+surrogate8": "racing + surrogate (pool 8)"}
    first_seed = str(summary["search_seeds"][0])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, points in summary["curves"].items():
        variant, seed = name.split("/")
        images, hv = zip(*points)
        label = labels.get(variant, variant) if seed == first_seed else None
        ax.plot(images, hv, "-", c=colours[variant], lw=1.2, alpha=0.8, label=label)
    p = summary["problem"]
    ax.set_xlabel("images rendered (candidate evaluations x samples)")
    ax.set_ylabel("hypervolume of the true front values")
    ax.set_title(f"synthetic problem, {p['bits']} bits, {p['num_samples']} samples (noise {p['noise']}), "
                 f"population {summary['population']}, {len(summary['search_seeds'])} seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
