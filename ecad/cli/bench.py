"""ecad-bench: ECAD schedules side by side with heuristics and today's caching methods."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

from ecad.paths import DEFAULT_MODEL, REPO_ROOT, SCHEDULES_DIR

EPILOG = """\
What runs (same prompts, same seeds, same process, one batch size):
  no-cache                       the reference
  ecad                           the bank made for this setting: its entries whose stored validation
                                 scores come near a bar (the fastest --ecad-candidates per bar)
  ecad-transfer, ecad-resampled  with --source-bank: a bank made for another setting, moved here by
                                 noise level (ecad.transfer) and by nearest step index
  fewer-steps                    no caching, every step count from 4 to steps-1
  fora, fora-<component>,        heuristic schedules through our engine (FORA at every n from 2 to
  delta-dit, tgate, block-skip   steps-1, component-wise FORA n=2..4, Delta-DiT, T-GATE, static
                                 whole-block skipping with and without the early steps skipped)
  cache-dit-dbcache[-taylorseer] cache_dit.enable_cache(pipe, DBCacheConfig(F1B0, threshold)), as shipped
  cache-dit-dbprune              cache_dit.enable_cache(pipe, DBPruneConfig(...)), as shipped
  diffusers-fbcache, -taylorseer, diffusers' FirstBlockCache, TaylorSeer, PyramidAttentionBroadcast,
  -pab, -fastercache, -magcache  FasterCache, MagCache through diffusers' own apply_* functions plus
                                 a cache-context shim (PixArt pipelines set no cache context and have
                                 no current_timestep); each is also tried once without it
Every method is tuned on the VALIDATION split (prompts x seeds that calibration never used):
thresholds (FirstBlockCache, MagCache, cache-dit's residual_diff_threshold) are bisected at every
quality bar; TaylorSeer over order 0/1 x interval x late-step cutoff; PAB with equal, pyramid and
single-attention intervals; FasterCache over its self-attention interval x its unconditional-branch
cache. Per bar each family's pick is made on validation (its fastest finalist in a few timed
selection rounds); the picks are judged on HELD-OUT prompts and seeds used by neither calibration
nor validation. A method that fails is listed with its error, never dropped.

Quality bars: >= 35 dB and >= 30 dB PSNR to no-cache, each with the reward within 2% of no-cache
(when there is a reward) and PSNR only. The verdict: the picks are timed in interleaved rounds with
no-cache; ECAD's pick over the best other pick, round by round (paired), median with a 95%
bootstrap interval over rounds; a winner only where the interval excludes 1. Rounds continue
until every interval is narrower than --interval-width of its median (at most --max-rounds).
Min-max spreads are shown as a display.

Also measured: MACs that actually ran (equal to ecad.cost.image_macs for our engine's actions);
the speedup a fitted cost predicts; peak bytes of cached tensors; PSNR/SSIM, the bundled reward
(with a bootstrap interval) and FID on its features; latency predictability (per-image MACs and
seconds over --latency-prompts held-out prompts at batch 1: p5/p50/p95 and the margin for 95% of
requests); hypervolume and dominance, MACs-only over every point and timed over the picks.

Resumable: every finished unit of work is kept under --work-dir; rerunning the same command
resumes it (--fresh starts over).

Output folder: results.json, README.md (tables), pareto.png, pareto_macs.png, grid.png.

Examples:
  ecad-bench                                            # bundled model + its bank -> docs/benchmarks/ecad-scenes
  ecad-bench --quick --out /tmp/quick                   # coarse grids, few rounds: a smoke test
  ecad-bench --steps 50 --source-bank schedules/ecad-scenes/32x32-20steps.json \\
      --out /tmp/bench-50 --settings-rows docs/benchmarks/settings/results.json
  ecad-bench --model path/to/pixart --bank schedules/pixart/512x512-20steps.json --methods no-cache,ecad,fora
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecad-bench",
        description="Benchmark ECAD cache schedules against heuristic schedules, fewer steps and the caching "
        "methods people use today (cache-dit, diffusers' built-in caches) on one model, side by side: every "
        "method selected on validation prompts, judged on held-out prompts and seeds.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("model and setting")
    m.add_argument("--model", default=str(DEFAULT_MODEL), help="diffusers folder or hub id (default: the bundled model)")
    m.add_argument("--bank", help="the schedule bank made for this setting (default: the catalogue's bank at this "
                   "setting, schedules/<model>/<H>x<W>-<steps>steps.json)")
    m.add_argument("--source-bank", metavar="FILE", help="a bank made for another setting (e.g. the 20-step bank "
                   "for a --steps 50 run): adds ecad-transfer (moved by noise level) and ecad-resampled (nearest "
                   "step index), selected on validation like everything else")
    m.add_argument("--steps", type=int, help="denoising steps (default: the bank's, else 20)")
    m.add_argument("--guidance", type=float, help="guidance scale (default: the bank's, else 4.5)")
    m.add_argument("--height", type=int, help="image height (default: the bank's, else the model's native size)")
    m.add_argument("--width", type=int, help="image width (default: as --height)")
    m.add_argument("--device", default="cpu")
    m.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    q = p.add_argument_group("prompts and quality")
    q.add_argument("--validation-prompts", type=int, default=64,
                   help="validation prompts every method is tuned and picked on (default %(default)s)")
    q.add_argument("--validation-seeds", type=int, default=4, help="seeds per validation prompt (default %(default)s; "
                   "from 1000, disjoint from calibration's)")
    q.add_argument("--held-out-prompts", type=int, default=64, help="held-out prompts the picks are judged on "
                   "(default %(default)s)")
    q.add_argument("--held-out-seeds", type=int, default=4, help="seeds per held-out prompt (default %(default)s; "
                   "from 2000)")
    q.add_argument("--scorer", default="auto", help="reward scorer: 'auto' (scenes-reward on the bundled model, "
                   "else none), 'none', or a scorer name (e.g. clip)")
    q.add_argument("--fid-renders", type=int, default=4, help="real renders per prompt for FID (bundled model; default %(default)s)")
    r = p.add_argument_group("what runs")
    r.add_argument("--methods", default="all", help="comma-separated families to run (no-cache always runs), or 'all'")
    r.add_argument("--batch-size", type=int, default=8, help="images per pipeline call, for tuning and timing "
                   "(default %(default)s; 1 for a verdict one image at a time)")
    r.add_argument("--ecad-candidates", type=int, default=10, help="bank entries per bar rendered on validation, "
                   "the fastest whose stored scores come near the bar (default %(default)s; 0: every entry)")
    r.add_argument("--selection-rounds", type=int, help="timed rounds that pick a family's fastest finalist "
                   "(default 4; --quick 2)")
    r.add_argument("--rounds", type=int, help="verdict rounds at least (default 10; --quick 2)")
    r.add_argument("--max-rounds", type=int, help="verdict rounds at most (default 40; --quick 3)")
    r.add_argument("--interval-width", type=float, default=0.10, help="stop the verdict rounds when every paired "
                   "interval is narrower than this share of its median (default %(default)s)")
    r.add_argument("--latency-prompts", type=int, default=64, help="held-out prompts rendered one at a time for "
                   "latency predictability (default %(default)s; 0: skip)")
    r.add_argument("--cost-model", metavar="FILE",
                   help="a fitted cost of this machine (a FittedCost JSON, or a report holding one under 'model'): "
                   "shown beside every schedule's speedup and ranking the finalists of schedule families (default: "
                   "the bank's calibration cost model, else on the bundled model "
                   "docs/benchmarks/actions/cost-crossfit-<H>x<W>-*.json; 'none': MACs only)")
    r.add_argument("--bisect-steps", type=int, help="bisection midpoints per threshold method and bar (default 3; --quick 1)")
    r.add_argument("--quick", action="store_true", help="coarse knob grids, 1 bisection step, 2-3 rounds: a smoke "
                   "test, not a fair benchmark")
    r.add_argument("--no-as-shipped", action="store_true", help="do not try diffusers caches without the shim")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output folder (default docs/benchmarks/<model name>)")
    o.add_argument("--work-dir", help="where finished work is kept for resuming (default "
                   "runs/bench/<model>/<setting>)")
    o.add_argument("--fresh", action="store_true", help="discard the work kept in --work-dir and start over")
    o.add_argument("--settings-rows", metavar="FILE", help="also merge this run's per-bar rows (steps, bar, ecad, "
                   "transfer, resampled, best_other, best_other_name) into FILE, replacing rows of the same steps")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("-v", "--verbose", action="store_true")
    return p


def _load_bank(path, pipe, label: str):
    from ecad.bank import ScheduleBank

    bank = ScheduleBank.load(path)
    bank.check_transformer(dict(pipe.transformer.config), source=f"{label} {path}")
    return bank


def _catalogue(model: str) -> dict[Path, "ScheduleBank"]:
    """The model's banks by file (``ecad.bank_catalog.find_banks``), none for a hub id without banks."""
    from ecad.bank_catalog import find_banks

    try:
        return find_banks(model)
    except Exception:  # noqa: BLE001 - no catalogue for a hub id without banks
        return {}


def _default_setting(model: str, args, catalogue, bank):
    """The run's setting: flags first, then the given bank's, then the catalogue's 20-step bank's."""
    from ecad.generate import native_resolution
    from ecad.setting import Setting

    base = bank.setting if bank is not None else next(
        (b.setting for b in catalogue.values() if b.num_inference_steps == 20),
        next(iter(catalogue.values())).setting if catalogue else None)
    native = native_resolution(model) if Path(model).exists() else (512, 512)
    height = args.height or (base.height if base else native[0])
    width = args.width or args.height or (base.width if base else native[1])
    steps = args.steps or (base.num_inference_steps if base else 20)
    guidance = args.guidance if args.guidance is not None else (base.guidance_scale if base else 4.5)
    return Setting(height, width, steps, guidance)


def _splits(model: str, args, calibration: tuple[list[str], list[int]], bank_validation: list[str]):
    """(validation, held-out) splits, disjoint in prompts and seeds from each other and from the
    calibration (asserted); notes on anything smaller than asked."""
    from ecad.bench.runner import HELD_OUT, VALIDATION, Split
    from ecad.quality.prompts import assert_disjoint_splits, held_out_prompts, split_seeds, validation_prompts

    notes = []
    source = model if Path(model).exists() else "generic"
    held = held_out_prompts(source, args.held_out_prompts, calibration[0])
    try:
        val = validation_prompts(source, args.validation_prompts, calibration[0])
    except ValueError:  # a small generic list: as many as there are
        val = validation_prompts(source, len(_generic_validation(source, calibration[0])), calibration[0])
    for name, got, asked in (("held-out", held, args.held_out_prompts), ("validation", val, args.validation_prompts)):
        if len(got) < asked:
            notes.append(f"only {len(got)} distinct {name} prompts exist for this model ({asked} asked)")
    validation = Split(VALIDATION, val, split_seeds(VALIDATION, args.validation_seeds))
    held_out = Split(HELD_OUT, held, split_seeds(HELD_OUT, args.held_out_seeds))
    assert_disjoint_splits({"calibration": calibration, VALIDATION: (validation.prompts, validation.seeds),
                            HELD_OUT: (held_out.prompts, held_out.seeds)})
    # the bank's own validation used its calibration seeds: its prompts must not be held out either
    assert_disjoint_splits({"bank validation": (bank_validation, calibration[1]),
                            HELD_OUT: (held_out.prompts, held_out.seeds)})
    return validation, held_out, notes


def _generic_validation(model: str, calibration: list[str]) -> list[str]:
    from ecad.quality.prompts import VALIDATION_GENERIC_PROMPTS, HELD_OUT_RESERVE, prompt_set

    excluded = set(calibration) | set(prompt_set(model, HELD_OUT_RESERVE, "held-out"))
    return [p for p in VALIDATION_GENERIC_PROMPTS if p not in excluded]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    warnings.filterwarnings("ignore", message=".*meshgrid.*")
    import torch

    torch.set_num_threads(args.threads)
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    from ecad.adapters import get_adapter
    from ecad.bank import device_name, fingerprint
    from ecad.bench import competitors as C
    from ecad.bench.report import settings_rows, write_report
    from ecad.bench.runner import BenchConfig, run_experiment
    from ecad.bench.store import WorkStore
    from ecad.bench.tuning import default_bars
    from ecad.generate import load_pipeline
    from ecad.paths import model_name
    from ecad.quality.prompts import is_scenes_model, prompt_set, split_seeds

    model = str(args.model)
    if not Path(model).exists() and "/" not in model:
        print(f"ecad-bench: model {model!r} not found (train it with ecad-train-bundled, or pass --model)", file=sys.stderr)
        return 2
    for flag in ("validation_prompts", "validation_seeds", "held_out_prompts", "held_out_seeds", "batch_size"):
        if getattr(args, flag) < 1:
            print(f"ecad-bench: --{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}", file=sys.stderr)
            return 2
    notes: list[str] = []
    pipe = load_pipeline(model, device=args.device)
    catalogue = _catalogue(model)
    try:
        bank = _load_bank(args.bank, pipe, "--bank") if args.bank else None
        source = _load_bank(args.source_bank, pipe, "--source-bank") if args.source_bank else None
    except Exception as err:  # noqa: BLE001 - a bank file the run cannot use: say which and why
        print(f"ecad-bench: {err}", file=sys.stderr)
        return 2
    setting = _default_setting(model, args, catalogue, bank)
    bank_path = Path(args.bank) if args.bank else None
    if bank is not None and bank.setting != setting:
        print(f"ecad-bench: --bank is made for {bank.setting}, the run is at {setting}: pass it as --source-bank "
              "to move it here", file=sys.stderr)
        return 2
    if bank is None:
        exact = next((path for path, b in catalogue.items() if b.setting == setting), None)
        if exact is not None:
            bank, bank_path = catalogue[exact], exact
        else:
            notes.append(f"**no bank made for {setting.name} (guidance {setting.guidance_scale})**: the ecad family is "
                         "missing from this run" + ("; the source bank's transfer and resampling stand in" if source
                                                    else "; calibrate one with ecad-calibrate, or pass --source-bank"))
    layout = get_adapter(pipe).layout(pipe.transformer)
    scenes = Path(model).exists() and is_scenes_model(model)

    # prompts and seeds: calibration's (the bank's), then validation and held-out, all disjoint
    made_by = bank or source
    calibration = (list(made_by.calibration.get("prompts", [])), [int(x) for x in made_by.calibration.get("seeds", [])]) \
        if made_by is not None and made_by.calibration.get("prompts") else \
        (prompt_set(model if Path(model).exists() else "generic", 8, "calibration"), split_seeds("calibration", 2))
    bank_validation = list(made_by.calibration.get("validation_prompts", [])) if made_by is not None else []
    try:
        validation, held_out, split_notes = _splits(model, args, calibration, bank_validation)
    except ValueError as err:
        print(f"ecad-bench: {err}", file=sys.stderr)
        return 2
    notes += split_notes

    # scorers
    reward, fid_fn = None, None
    scorer = args.scorer
    if scorer == "auto":
        scorer = "scenes-reward" if scenes else "none"
    if scorer != "none":
        from ecad.quality import build_scorer

        reward = build_scorer(scorer, **({"model_dir": model} if scorer == "scenes-reward" else {}))
    if scenes and args.fid_renders > 0:
        fid_fn = _scenes_fid_fn(model, [held_out], args.fid_renders, reward)

    try:
        speed_model, ranked_by, cost_source = _speed_model(args.cost_model, made_by, pipe, setting, model)
    except (OSError, ValueError, KeyError) as err:  # json.JSONDecodeError is a ValueError
        print(f"ecad-bench: --cost-model: {err}", file=sys.stderr)
        return 2

    # methods
    bars = default_bars(reward is not None)
    wanted = None if args.methods == "all" else {m.strip() for m in args.methods.split(",") if m.strip()}
    steps = setting.num_inference_steps

    def pick(methods):
        return [m for m in methods if m.family == "no-cache" or wanted is None or m.family in wanted]

    candidates = None if args.ecad_candidates == 0 else args.ecad_candidates
    bank_kwargs = dict(reward_metric=reward.name if reward is not None else None, speed_model=speed_model,
                       per_bar=candidates, log=lambda message: notes.append(message))
    ecad = []
    if bank is not None:
        ecad.append(C.bank_method(bank, pipe, setting, bars, how="bank", **bank_kwargs))
    if source is not None:
        from ecad.transfer import TransferQualityModel

        moved_quality = TransferQualityModel.beside(args.source_bank)
        ecad += [C.bank_method(source, pipe, setting, bars, how="transfer", transfer_quality=moved_quality, **bank_kwargs),
                 C.bank_method(source, pipe, setting, bars, how="resampled", **bank_kwargs)]
    engine = C.engine_methods(layout, steps, **({"fora_range": range(2, 7), "component_range": (2, 4)} if args.quick else {}))
    methods = pick(engine[:1] + ecad + [C.fewer_steps_method(steps)] + engine[1:]
                   + C.competitor_methods(setting, quick=args.quick))

    out = Path(args.out or REPO_ROOT / "docs" / "benchmarks" / model_name(model))
    config = BenchConfig(
        batch_size=args.batch_size, bars=tuple(bars),
        bisect_steps=args.bisect_steps if args.bisect_steps is not None else (1 if args.quick else 3),
        selection_rounds=args.selection_rounds or (2 if args.quick else 4),
        min_rounds=args.rounds or (2 if args.quick else 10),
        max_rounds=max(args.max_rounds or (3 if args.quick else 40), args.rounds or 0),
        interval_width=args.interval_width, latency_prompts=args.latency_prompts, as_shipped=not args.no_as_shipped)
    banks = {k: v for k, v in (("bank", bank_path), ("source bank", Path(args.source_bank) if args.source_bank else None)) if v}
    meta = {
        # local paths relative to the report's folder: a committed report names no path of this machine
        "model": model_name(model), "model_path": _relative_to(model, out),
        "banks": {k: _relative_to(str(v), out) for k, v in banks.items()},
        "bank_entries": {m.family: m.candidates for m in ecad},
        "calibration_split": {"prompts": calibration[0], "seeds": calibration[1], "validation_prompts": bank_validation},
        "command": "ecad-bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": device_name(args.device),
        "threads": args.threads, "versions": _versions(), "reward_scorer": scorer,
        "model_fingerprint": fingerprint(dict(pipe.transformer.config)), "git": _git(model),
        "finalists_ranked_by": ranked_by, "cost_model": cost_source, "quick": args.quick,
        "notes": notes + _standard_notes(),
    }
    identity = {"model": meta["model_fingerprint"], "setting": setting.to_dict(), "reward": scorer,
                "validation": [validation.prompts, validation.seeds], "held_out": [held_out.prompts, held_out.seeds],
                "batch_size": config.batch_size, "bars": [b.key for b in bars], "bisect_steps": config.bisect_steps,
                "methods": {m.family: len(m.knobs) for m in methods}, "cost_model": cost_source,
                "banks": {k: _file_hash(v) for k, v in banks.items()}, "ecad_candidates": args.ecad_candidates}
    work = Path(args.work_dir or REPO_ROOT / "runs" / "bench" / model_name(model) / f"{setting.name}-b{config.batch_size}")
    try:
        store = WorkStore(work, identity, fresh=args.fresh)
    except ValueError as err:
        print(f"ecad-bench: {err}", file=sys.stderr)
        return 2
    calibration_items = [(p, s) for p in calibration[0] for s in calibration[1]][:2]
    experiment = run_experiment(pipe, methods, setting, validation, held_out, config=config, reward=reward,
                                fid_fn=fid_fn, calibration_items=calibration_items, speed_model=speed_model,
                                store=store, progress=not args.no_progress, name=setting.name)
    write_report(out, meta, experiment)
    if args.settings_rows:
        _merge_settings_rows(Path(args.settings_rows), settings_rows(experiment))
    print(f"ecad-bench: wrote {out}/README.md, results.json, pareto.png, pareto_macs.png, grid.png "
          f"({experiment.seconds / 60:.0f} min)")
    return 0


def _file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _merge_settings_rows(path: Path, rows: list[dict]) -> None:
    """Replace the rows of this run's step count in the list at ``path`` (created if missing)."""
    from ecad.atomic import atomic_write_text

    existing = json.loads(path.read_text()) if path.exists() else []
    steps = {r["steps"] for r in rows}
    merged = [r for r in existing if r.get("steps") not in steps] + rows
    merged.sort(key=lambda r: (r["steps"], r["bar"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(merged, indent=1) + "\n")


def _speed_model(option: str | None, bank, pipe, setting, model: str):
    """(schedule -> predicted speedup, or None; what ranks the finalists; where the cost model came from)."""
    from ecad.cost import FittedCost, predicted_speedup
    from ecad.paths import DEFAULT_MODEL

    if option == "none":
        return None, "MACs", None
    if option:
        data, source = json.loads(Path(option).read_text()), option
    elif bank is not None and bank.calibration.get("cost_model"):
        data, source = bank.calibration["cost_model"], "the bank's calibration cost model"
    else:
        fits = sorted((REPO_ROOT / "docs" / "benchmarks" / "actions").glob(f"cost-crossfit-{setting.height}x{setting.width}-*.json"))
        exact = [f for f in fits if f.name.endswith(f"-{setting.num_inference_steps}steps.json")]
        bundled = Path(model).exists() and Path(model).resolve() == Path(DEFAULT_MODEL).resolve()
        if not (bundled and fits):
            return None, "MACs", None
        path = (exact or fits)[0]
        data, source = json.loads(path.read_text()), os.path.relpath(path, REPO_ROOT)
    return predicted_speedup(FittedCost.from_report(data), pipe, setting), f"fitted cost ({source})", source


def _relative_to(path: str, folder: Path) -> str:
    """A local file or folder as a path relative to ``folder``; a hub id as it is."""
    if not Path(path).exists():
        return path
    return os.path.relpath(Path(path).absolute(), folder.absolute())


def _scenes_fid_fn(model: str, splits, renders_per_prompt: int, reward):
    """FID on the reward network's features vs real renders of each split's prompts.

    The same metric as `ecad.quality.scenes_reward.scenes_fid`, with the real renders' statistics
    computed once per split (torchmetrics `reset_real_features=False`) instead of once per point.
    """
    import numpy as np
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    from ecad.quality.scenes_reward import ScenesReward, _FeatureExtractor
    from ecad.zoo import scenes as zs

    net = reward.net if isinstance(reward, ScenesReward) else ScenesReward(model).net
    rng = np.random.default_rng(12345)
    metrics = {}
    for split in splits:
        real = zs.render_batch([zs.parse_prompt(p) for p in split.prompts for _ in range(renders_per_prompt)], rng)
        fid = FrechetInceptionDistance(feature=_FeatureExtractor(net), normalize=True, reset_real_features=False)
        with torch.no_grad():
            fid.update(real, real=True)
        metrics[split.name] = fid

    def fid_fn(images, split_name):
        fid = metrics[split_name]
        fid.reset()
        with torch.no_grad():
            fid.update(images.float().clamp(0, 1), real=False)
            return float(fid.compute())

    return fid_fn


def _git(model: str) -> dict:
    """The checkout's HEAD and the last commit that touched the model folder (if it is in the repo)."""
    import subprocess

    def git(*cmd):
        try:
            return subprocess.run(["git", "-C", str(REPO_ROOT), *cmd], capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None
        except Exception:  # noqa: BLE001
            return None

    return {"head": git("rev-parse", "--short", "HEAD"), "model_commit": git("log", "-1", "--format=%h", "--", str(model)),
            "dirty_model": bool(git("status", "--porcelain", "--", str(model)))}


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "diffusers", "transformers", "cache-dit"):
        try:
            out[name.replace("-", "_")] = md.version(name)
        except md.PackageNotFoundError:
            out[name.replace("-", "_")] = None
    return out


def _standard_notes() -> list[str]:
    return [
        "diffusers caches (FirstBlockCache, TaylorSeer, PAB, FasterCache, MagCache) run through diffusers' own "
        "`apply_*` functions plus ecad's cache-context shim: a transformer pre-forward hook (diffusers HookRegistry) "
        "that resets the cache hooks at the first step of each pipeline call, sets a `CacheContext` per step and "
        "records the timestep for PAB/FasterCache's `current_timestep_callback`. PixArt pipelines (diffusers 0.42) "
        "set no cache context and have no `current_timestep`; the table below shows what each does without the shim.",
        "TaylorSeer: its default module pattern (`^transformer_blocks.*attn`, fullmatch) matches no PixArt module "
        "(attn1/attn2) and silently does nothing; here it caches `transformer_blocks.N.(attn1|attn2|ff)`, 3 warm-up "
        "steps, float32 factors, swept over order (0, 1) x interval x the step from which it computes fully "
        "(`disable_cache_after_step`).",
        "MagCache: magnitude ratios calibrated once on calibration prompts with diffusers' own `calibrate=True` mode; "
        "max_skip_steps 3, retention 0.2, threshold bisected. PAB: timestep range (100, 800); self- and "
        "cross-attention intervals swept equal, pyramid (cross = 2x) and each alone. FasterCache: tensor_format BCHW, "
        "attention weight 0.3, self-attention interval x unconditional-branch cache (every 2/3/5 steps, skipped "
        "below timestep 641 or 381).",
        "cache-dit: `cache_dit.enable_cache(pipe, ...)` as shipped, F1B0 (first block computes, the 'Fn' diff "
        "decides), warm-up 15% of the steps; it patches the pipeline class and is disabled after every run.",
        "Cache memory: bytes of the distinct tensor storages reachable from each method's state objects (hooks and "
        "their StateManager states, cache-dit's context manager, ecad's cache state), sampled after every transformer "
        "call of the probe batch, peak divided by images in the batch (CFG doubles the transformer batch).",
        "MACs: counted while each point ran, the way `ecad.cost.image_macs` counts a schedule: a component's MACs "
        "when its first linear layer runs (scaled by the rows it saw), a block's work outside its components when "
        "the block runs, the work outside the blocks at `proj_out`, and our engine's forecast and skip element-wise "
        "ops; equal to `image_macs` for every static point (checked below).",
    ]


if __name__ == "__main__":
    sys.exit(main())
