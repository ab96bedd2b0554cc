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
What runs (same prompts, same seeds, same process):
  no-cache                       the reference
  ecad                           every schedule of the bank (the calibrated front), through our engine
  fora, fora-<component>,        heuristic schedules through our engine (FORA at every n from 2 to
  delta-dit, tgate, block-skip   steps-1, component-wise FORA n=2..6, Delta-DiT, T-GATE, static
                                 whole-block skipping with and without the early steps skipped)
  cache-dit-dbcache[-taylorseer] cache_dit.enable_cache(pipe, DBCacheConfig(F1B0, threshold)), as shipped
  cache-dit-dbprune              cache_dit.enable_cache(pipe, DBPruneConfig(...)), as shipped
  diffusers-fbcache, -taylorseer, diffusers' FirstBlockCache, TaylorSeer, PyramidAttentionBroadcast,
  -pab, -fastercache, -magcache  FasterCache, MagCache through diffusers' own apply_* functions plus
                                 a cache-context shim (PixArt pipelines set no cache context and have
                                 no current_timestep); each is also tried once without it
Every method is tuned finely: thresholds (FirstBlockCache, MagCache, cache-dit's
residual_diff_threshold) are bisected at every quality bar; TaylorSeer over order 0/1 x interval x
late-step cutoff; PAB with equal, pyramid and single-attention intervals; FasterCache over its
self-attention interval x its unconditional-branch cache (every 2/3/5 steps, two timestep ranges).
A method that fails is listed with its error, never dropped.

Quality bars: >= 35 dB and >= 30 dB PSNR to no-cache, each with the reward within 2% of no-cache
(when there is a reward) and PSNR only. Per bar, each method's fastest point is timed with ECAD's
in interleaved rounds at batch 8 and batch 1; speedup = median per-round ratio, spread = min-max;
a winner is called only where the spreads do not overlap, else "tie within spread".

Also measured: MACs that actually ran; peak bytes of cached tensors; PSNR/SSIM, the bundled reward
(with a bootstrap interval) and FID on its features, on held-out prompts (and on the bank's
calibration prompts for the deciding points); hypervolume per method; whether an ECAD point is at
least as fast and as good as each other point; transfer to 30/50 steps and another resolution.

Output folder: results.json, README.md (tables), pareto.png, pareto_macs.png, grid.png, transfer.png.

Examples:
  ecad-bench                                            # bundled model + its bank -> docs/benchmarks/ecad-scenes
  ecad-bench --quick --out /tmp/quick                   # coarse grids, 1 bisection step, 2 rounds
  ecad-bench --model path/to/pixart --bank schedules/pixart/512x512-20steps.json --methods no-cache,ecad,fora
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecad-bench",
        description="Benchmark ECAD cache schedules against heuristic schedules and the caching methods "
        "people use today (cache-dit, diffusers' built-in caches) on one model, side by side.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("model and setting")
    m.add_argument("--model", default=str(DEFAULT_MODEL), help="diffusers folder or hub id (default: the bundled model)")
    m.add_argument("--bank", help="schedule bank JSON (default: schedules/<model>/<H>x<W>-<steps>steps.json, "
                   "or the only bank in schedules/<model>/)")
    m.add_argument("--steps", type=int, help="denoising steps (default: the bank's, else 20)")
    m.add_argument("--guidance", type=float, help="guidance scale (default: the bank's, else 4.5)")
    m.add_argument("--height", type=int, help="image height (default: the bank's, else the model's native size)")
    m.add_argument("--width", type=int, help="image width (default: as --height)")
    m.add_argument("--device", default="cpu")
    m.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    q = p.add_argument_group("prompts and quality")
    q.add_argument("--held-out-prompts", type=int, default=8, help="held-out prompts calibration never saw (default %(default)s)")
    q.add_argument("--seeds", default="0,1", help="seeds for the held-out prompts (default %(default)s)")
    q.add_argument("--calibration-prompts", type=int, default=4,
                   help="how many of the bank's calibration prompts the deciding points are scored on too "
                   "(default %(default)s; 0 = none)")
    q.add_argument("--calibration-seeds", type=int, default=2,
                   help="how many of the bank's calibration seeds to use with them (default %(default)s)")
    q.add_argument("--scorer", default="auto", help="reward scorer: 'auto' (scenes-reward on the bundled model, "
                   "else none), 'none', or a scorer name (e.g. clip)")
    q.add_argument("--fid-renders", type=int, default=4, help="real renders per prompt for FID (bundled model; default %(default)s)")
    r = p.add_argument_group("what runs")
    r.add_argument("--methods", default="all", help="comma-separated families to run (no-cache always runs), or 'all'")
    r.add_argument("--batch-size", type=int, default=8, help="images per pipeline call while tuning; the main "
                   "timed batch size (default %(default)s)")
    r.add_argument("--timing-batch-sizes", default="8,1", help="batch sizes the deciding points are timed at "
                   "(default %(default)s; capped at the held-out images)")
    r.add_argument("--rounds", type=int, help="interleaved timed rounds of the deciding points (default 4; --quick 2)")
    r.add_argument("--cost-model", metavar="FILE",
                   help="a fitted cost of this machine (a FittedCost JSON, or a report holding one under 'model', "
                   "e.g. docs/benchmarks/actions/cost-crossfit-32x32-20steps.json): the bank's and the heuristics' "
                   "deciding points are the fastest it predicts, not the fewest MACs (default: the cost model the "
                   "bank was calibrated under, if it was searched with --cost fitted; 'none': MACs)")
    r.add_argument("--bisect-steps", type=int, help="bisection midpoints per threshold method and bar (default 3; --quick 1)")
    r.add_argument("--quick", action="store_true", help="coarse knob grids, 1 bisection step, 2 rounds: a smoke "
                   "test, not a fair benchmark")
    r.add_argument("--transfer-steps", default="30,50", help="step counts for the transfer test (default %(default)s)")
    r.add_argument("--transfer-size", type=int, help="another resolution for the transfer test (default: 1.5x native)")
    r.add_argument("--transfer-prompts", type=int, default=8, help="held-out prompts for transfer runs (default %(default)s)")
    r.add_argument("--no-transfer", action="store_true", help="skip the transfer experiments")
    r.add_argument("--no-as-shipped", action="store_true", help="do not try diffusers caches without the shim")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output folder (default docs/benchmarks/<model name>)")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("-v", "--verbose", action="store_true")
    return p


def _find_bank(model: str, args) -> Path | None:
    from ecad.paths import model_name

    if args.bank:
        return Path(args.bank)
    folder = SCHEDULES_DIR / model_name(model)
    candidates = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if args.height and args.steps:
        exact = folder / f"{args.height}x{args.width or args.height}-{args.steps}steps.json"
        if exact.exists():
            return exact
    preferred = [c for c in candidates if c.name.endswith("-20steps.json")]
    return (preferred or candidates or [None])[0]


def _round_to(x: int, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    warnings.filterwarnings("ignore", message=".*meshgrid.*")
    import torch

    torch.set_num_threads(args.threads)
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    from ecad.adapters import get_adapter
    from ecad.bank import ScheduleBank, device_name, fingerprint
    from ecad.bench import competitors as C
    from ecad.bench.report import write_report
    from ecad.bench.runner import Split, run_experiment
    from ecad.generate import load_pipeline
    from ecad.setting import Setting
    from ecad.paths import model_name
    from ecad.generate import native_resolution
    from ecad.quality.prompts import is_scenes_model, prompt_set

    model = str(args.model)
    if not Path(model).exists() and "/" not in model:
        print(f"ecad-bench: model {model!r} not found (train it with ecad-train-bundled, or pass --model)", file=sys.stderr)
        return 2
    notes: list[str] = []
    bank_path = _find_bank(model, args)
    bank = None
    if bank_path is not None and bank_path.exists():
        bank = ScheduleBank.load(bank_path)
    else:
        msg = (f"no schedule bank found ({bank_path or 'schedules/' + model_name(model) + '/'}): the ECAD front is "
               "missing from this run; calibrate with ecad-calibrate and rerun")
        print(f"ecad-bench: WARNING: {msg}", file=sys.stderr)
        notes.append(f"**{msg}**")
    steps = args.steps or (bank.num_inference_steps if bank else 20)
    guidance = args.guidance if args.guidance is not None else (bank.guidance_scale if bank else 4.5)
    native = native_resolution(model) if Path(model).exists() else (512, 512)
    height = args.height or (bank.height if bank else native[0])
    width = args.width or args.height or (bank.width if bank else native[1])
    if bank is not None and steps != bank.num_inference_steps:
        notes.append(f"bank calibrated at {bank.num_inference_steps} steps, resampled to {steps}")

    pipe = load_pipeline(model, device=args.device)
    adapter = get_adapter(pipe)
    if bank is not None:
        bank.check_transformer(dict(pipe.transformer.config), source=str(bank_path))
    layout = adapter.layout(pipe.transformer)
    scenes = Path(model).exists() and is_scenes_model(model)

    # prompts
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    splits = [Split("held-out", prompt_set(model, args.held_out_prompts, "held-out") if Path(model).exists()
                    else prompt_set("generic", args.held_out_prompts, "held-out"), seeds)]
    calib_prompts, calib_seeds = [], seeds[: max(1, args.calibration_seeds)]
    if args.calibration_prompts > 0:
        if bank is not None and bank.calibration.get("prompts"):
            calib_prompts = list(bank.calibration["prompts"])[: args.calibration_prompts]
            calib_seeds = [int(s) for s in bank.calibration.get("seeds", seeds)][: max(1, args.calibration_seeds)]
        else:
            calib_prompts = prompt_set(model, args.calibration_prompts, "calibration")
            notes.append("no bank calibration metadata: 'calibration' prompts are the built-in calibration set "
                         "(what ecad-calibrate uses by default), with the held-out seeds")
        splits.append(Split("calibration", calib_prompts, calib_seeds))
    overlap = set(splits[0].prompts) & set(calib_prompts)
    if overlap:
        notes.append(f"{len(overlap)} held-out prompt(s) also appear in the calibration set")

    # scorers
    reward, fid_fn = None, None
    scorer = args.scorer
    if scorer == "auto":
        scorer = "scenes-reward" if scenes else "none"
    if scorer != "none":
        from ecad.quality import build_scorer

        reward = build_scorer(scorer, **({"model_dir": model} if scorer == "scenes-reward" else {}))
    if scenes and args.fid_renders > 0:
        fid_fn = _scenes_fid_fn(model, splits, args.fid_renders, reward)

    # methods
    setting = Setting(height, width, steps, guidance)
    wanted = None if args.methods == "all" else {m.strip() for m in args.methods.split(",") if m.strip()}

    def pick(methods):
        return [m for m in methods if m.family == "no-cache" or wanted is None or m.family in wanted]

    engine = C.engine_methods(layout, steps)
    if args.quick:
        engine = C.engine_methods(layout, steps, fora_range=range(2, 7), component_range=(2, 4))
    methods = pick(engine[:1] + ([C.ecad_method(bank, steps)] if bank else []) + engine[1:]
                   + C.competitor_methods(setting, quick=args.quick))
    calibration_items = [(p, s) for p in (calib_prompts or splits[0].prompts) for s in calib_seeds][:2]

    out = Path(args.out or REPO_ROOT / "docs" / "benchmarks" / model_name(model))
    meta = {
        # local paths relative to the report's folder: a committed report names no path of this machine
        "model": model_name(model), "model_path": _relative_to(model, out),
        "bank": _relative_to(str(bank_path), out) if bank else None,
        "bank_entries": [e.id for e in bank.entries] if bank else [],
        "bank_scorer": bank.scorer if bank else None, "bank_calibration": {
            k: v for k, v in (bank.calibration if bank else {}).items() if k in ("prompts", "seeds", "generations", "population", "cost")},
        "command": "ecad-bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": device_name(args.device),
        "threads": args.threads, "versions": _versions(), "reward_scorer": scorer,
        "model_fingerprint": fingerprint(dict(pipe.transformer.config)), "git": _git(model),
        "notes": notes + _standard_notes(),
    }
    bar = not args.no_progress
    rounds = args.rounds or (2 if args.quick else 4)
    bisect_steps = args.bisect_steps if args.bisect_steps is not None else (1 if args.quick else 3)
    timing_sizes = [int(b) for b in args.timing_batch_sizes.split(",") if b.strip()]
    meta.update(rounds=rounds, bisect_steps=bisect_steps, quick=args.quick)
    try:
        speed_model, ranked_by = _speed_model(args.cost_model, bank, pipe, setting)
    except (OSError, ValueError, KeyError) as err:  # json.JSONDecodeError is a ValueError
        print(f"ecad-bench: --cost-model: {err}", file=sys.stderr)
        return 2
    meta.update(finalists_ranked_by=ranked_by)
    experiments = [run_experiment(pipe, methods, setting, splits, batch_size=args.batch_size, reward=reward,
                                  fid_fn=fid_fn, calibration_items=calibration_items, timing_batch_sizes=timing_sizes,
                                  rounds=rounds, bisect_steps=bisect_steps, as_shipped=not args.no_as_shipped,
                                  progress=bar, speed_model=speed_model)]

    if not args.no_transfer:
        transfer_splits = [Split("held-out", splits[0].prompts[: args.transfer_prompts], seeds[:1])]
        multiple = adapter.spatial_multiple(pipe)
        size = args.transfer_size or _round_to(int(height * 1.5), multiple)
        transfers = [(f"{n}-steps", setting.with_changes(num_inference_steps=int(n)))
                     for n in args.transfer_steps.split(",") if n.strip()]
        transfers.append((f"{size}px", setting.with_changes(height=size, width=size)))
        for name, ts in transfers:
            eng = C.engine_methods(layout, ts.num_inference_steps)
            tmethods = [eng[0]] + ([C.ecad_method(bank, ts.num_inference_steps)] if bank else []) + \
                       [m for m in eng if m.family == "fora"]
            transfer_batch = min(args.batch_size, 4, len(transfer_splits[0].items()))
            try:
                # ranked as the main experiment is, with the fitted cost predicting at this setting
                transfer_speed = _speed_model(args.cost_model, bank, pipe, ts)[0]
                experiments.append(run_experiment(pipe, tmethods, ts, transfer_splits, name=name,
                                                  batch_size=transfer_batch, timing_batch_sizes=[transfer_batch],
                                                  rounds=min(rounds, 3), reward=reward, fid_fn=None, as_shipped=False,
                                                  progress=bar, speed_model=transfer_speed))
            except Exception as err:  # noqa: BLE001
                meta["notes"].append(f"transfer {name} failed: {type(err).__name__}: {err}")

    write_report(out, meta, experiments)
    print(f"ecad-bench: wrote {out}/README.md, results.json, pareto.png, grid.png"
          + (", transfer.png" if len(experiments) > 1 else ""))
    return 0


def _speed_model(option: str | None, bank, pipe, setting):
    """(schedule -> predicted speedup, or None; what ranks the deciding points, for the report)."""
    from ecad.cost import FittedCost, predicted_speedup

    if option == "none":
        return None, "MACs"
    if option:
        data = json.loads(Path(option).read_text())
        source = option
    elif bank is not None and bank.calibration.get("cost_model"):
        data, source = bank.calibration["cost_model"], "the bank's calibration cost model"
    else:
        return None, "MACs"
    return predicted_speedup(FittedCost.from_report(data), pipe, setting), f"fitted cost ({source})"


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
        "MACs: analytic per-component MACs counted when the component's first linear layer actually runs "
        "(scaled by the rows it saw) plus the non-cacheable part at `proj_out`.",
    ]


if __name__ == "__main__":
    sys.exit(main())
