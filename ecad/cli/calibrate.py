"""ecad-calibrate: search the Pareto front of cache schedules for a model and write a bank.

Thin shell over ecad.search: parse arguments, build the recipe, task and executor (in-process or
Ray: the choice is made here), run the optimizer, write the bank.

Three kinds of seed, three names: *seed schedules* start the search's population (the heuristics,
``--seed-bank``); *image seeds* (``--seeds``) are the RNG seeds of the images every candidate is
rendered with; the *search seed* (``--search-seed``) drives the genetic search.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ecad.cli.options import DTYPES
from ecad.paths import DEFAULT_MODEL, SCHEDULES_DIR
from ecad.search.genome import ACTIONS

#: searched by default: every action but guidance reuse, which needs classifier-free guidance run
#: as one batch (PixArt at guidance > 1) and is opt-in, so earlier run folders resume unchanged
DEFAULT_ACTIONS = ("reuse", "forecast", "skip")

EPILOG = """\
examples:
  # the bundled model, paper defaults (population 72), 10 generations
  ecad-calibrate
  # resume after an interruption (kill -9 is fine): repeat the same command
  # extend a finished run by 10 more generations
  ecad-calibrate --generations 20
  # search recompute/reuse only (the v1 search; its run folders resume with this)
  ecad-calibrate --actions reuse
  # a Ray cluster (one actor per GPU, or per CPU worker): see docs/calibration.md
  ecad-calibrate --model PixArt-alpha/PixArt-XL-2-512x512 --scorer image-reward \\
      --scorer-arg model=/models/ImageReward --scorer-arg tokenizer=/models/bert-base-uncased \\
      --height 512 --width 512 --ray auto

The run folder (--run-dir) keeps config, state after each generation, the evaluation memo,
reference images and a Pareto plot; the bank (--out) is what ecad-profile and the server read.
"""


def _scorer_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--scorer-arg wants KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecad-calibrate",
        description=(
            "Find the quality-vs-cost Pareto front of cache schedules for a diffusers DiT with "
            "NSGA-II (ECAD), resumably, in-process or on Ray, and write it as a schedule bank."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("model and setting")
    m.add_argument("--model", default=str(DEFAULT_MODEL), help="diffusers folder or hub id (default: the bundled %(default)s)")
    m.add_argument("--steps", type=int, default=20, help="denoising steps (default %(default)s)")
    m.add_argument("--guidance", type=float, default=4.5, help="guidance scale (default %(default)s)")
    m.add_argument("--height", type=int, help="image height (default: the model's native size)")
    m.add_argument("--width", type=int, help="image width (default: the model's native size)")
    m.add_argument("--device", default="cpu", help="torch device for evaluation (default %(default)s)")
    m.add_argument("--dtype", default="float32", choices=DTYPES)
    q = p.add_argument_group("quality objective")
    q.add_argument(
        "--scorer", default="auto",
        help="scorer name: combined, fidelity, scenes-reward, clip, image-reward. 'auto' (default): "
        "on the bundled model 'combined' (scenes reward + SSIM to the uncached image, which sees "
        "caching damage), else 'fidelity' (PSNR to the uncached image)",
    )
    q.add_argument(
        "--objectives", metavar="LIST",
        help="quality objectives searched as separate objectives beside cost, comma-separated: psnr, ssim "
        "(vs the uncached image), reward (the bundled model's scenes-reward) or a scorer name; e.g. "
        "'psnr' or 'psnr,reward' (NSGA-II over 3 objectives). Default: the scorer's single score",
    )
    q.add_argument("--scorer-arg", type=_scorer_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="scorer constructor argument (JSON value or string), repeatable, e.g. metric=ssim")
    q.add_argument("--prompts", help="file with one calibration prompt per line (default: built-in set)")
    q.add_argument("--num-prompts", type=int, default=8, help="built-in prompts to use (default %(default)s)")
    q.add_argument("--validation-prompts", type=int, default=0, metavar="N",
                   help="re-score the final front on N validation prompts the search never saw (disjoint from "
                   "the calibration and the benchmark's held-out prompts); entries then store validation means "
                   "and bootstrap intervals (default 0: off)")
    q.add_argument("--seeds", dest="image_seeds", default="0,1",
                   help="image seeds shared by every candidate (default %(default)s)")
    q.add_argument("--batch-size", type=int, help="images per pipeline call (default: all prompts x seeds)")
    c = p.add_argument_group("cost objective")
    c.add_argument("--cost", choices=["macs", "latency", "fitted"], default="macs",
                   help="analytic transformer MACs relative to no-cache (default, deterministic), measured seconds per "
                   "image, or the seconds a cost model fitted on timed schedules predicts (--cost-model)")
    c.add_argument("--cost-model", metavar="FILE",
                   help="for --cost fitted: a FittedCost JSON, or docs/benchmarks/actions/cost-fit.json (scripts/bench_actions.py "
                   "--stage fit) that holds one")
    s = p.add_argument_group("search")
    s.add_argument("--actions", default=",".join(DEFAULT_ACTIONS), metavar="LIST",
                   help="engine actions searched besides recompute, comma-separated: reuse (the cached output), "
                   "forecast (order-1 extrapolation of it), skip (a whole block, replaying its residual), "
                   "guidance (run only the conditional rows at a step and reuse the last guidance difference; "
                   "PixArt with --guidance > 1). 'reuse' is the v1 search (default: %(default)s)")
    s.add_argument("--generations", type=int, default=10, help="total generations; more on an existing run extends it (default %(default)s)")
    s.add_argument("--population", type=int, default=72, help="population size (paper: 72)")
    s.add_argument("--crossover-points", type=int, default=4, help="k-point crossover (paper: 4)")
    s.add_argument("--crossover-prob", type=float, default=0.9, help="crossover probability (paper: 0.9)")
    s.add_argument("--mutation-prob", type=float, default=1.0, help="chance an offspring is mutated (default %(default)s)")
    s.add_argument("--mutation-bit-prob", type=float, help="per-bit flip probability (default 1/bits)")
    s.add_argument("--step-mutation", type=float, default=0.0, metavar="PROB",
                   help="chance an offspring also gets one step-aligned move: one step's skip or action plane "
                   "filled with one value (e.g. every block skipped) or copied from the step before or after "
                   "(default 0: off; e.g. 0.3)")
    s.add_argument("--search-seed", type=int, default=0,
                   help="seed of the genetic search (default %(default)s); the image seeds are --seeds")
    s.add_argument("--seed", type=int, dest="search_seed", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    s.add_argument("--seed-bank", action="append", default=[], metavar="BANK",
                   help="warm start: add this bank's entries (same model layout and steps) to the heuristic seed "
                   "schedules of the initial population, e.g. the front of an earlier run; repeatable")
    s.add_argument("--renders-from", action="append", default=[], metavar="RUN_DIR",
                   help="reuse the renders of another run folder that differs from this run only in its cost "
                   "(e.g. the same search under --cost macs): its candidates enter this run's memo with their "
                   "cost recomputed (--cost macs or fitted), so they are not rendered again, and so do its "
                   "validation scores; the search reads it before generation 0, the validation at every pass; "
                   "repeatable")
    s.add_argument("--quality-floor", action="append", default=[], metavar="METRIC=VALUE",
                   help="a region of interest: candidates whose METRIC (one of --objectives; 'reward' = "
                   "scenes-reward) on the calibration images is below VALUE are infeasible for selection, so the "
                   "population is spent where an entry would be served, e.g. psnr=29; the bank still keeps "
                   "every non-dominated schedule found; repeatable")
    s.add_argument("--racing", type=float, metavar="FRACTION",
                   help="noise-aware racing: render each offspring on this share of the prompts x seeds first, "
                   "and on the rest only if its optimistic bound could still be non-dominated (e.g. 0.25)")
    s.add_argument("--surrogate", type=int, metavar="POOL",
                   help="surrogate pre-screen: ask for POOL x population offspring, render the population a ridge "
                   "model of earlier results ranks best (e.g. 4)")
    r = p.add_argument_group("execution")
    r.add_argument("--ray", metavar="ADDRESS", help="evaluate on Ray: 'auto' (running cluster), 'local' (start one here) or ray://host:port")
    r.add_argument("--workers", type=int, help="Ray actors (default: one per GPU, else one per CPU)")
    r.add_argument("--threads", type=int, default=1, help="torch threads per evaluator (default %(default)s)")
    o = p.add_argument_group("output")
    o.add_argument("--run-dir", help="run folder (default runs/calibrate/<model>/<setting>-<scorer>-s<search seed>)")
    o.add_argument("--out", help="bank file (default schedules/<model>/<setting>.json)")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--no-plot", action="store_true", help="do not write pareto.png")
    o.add_argument("-v", "--verbose", action="store_true")
    return p


#: objectives the fidelity scorer computes (vs the uncached image); any other objective is a scorer name
FIDELITY_METRICS = ("psnr", "ssim", "psnr_norm")


def parse_objectives(text: str | None, model: str) -> tuple[str, ...]:
    """``--objectives psnr,reward`` → metric names; "reward" is the bundled model's scenes-reward."""
    from ecad.quality import available_scorers
    from ecad.quality.prompts import is_scenes_model

    objectives = []
    for name in filter(None, (part.strip() for part in (text or "").split(","))):
        if name == "reward":
            if not is_scenes_model(model):
                raise ValueError("--objectives: 'reward' means the bundled model's scenes-reward; for this model "
                                 "name the reward scorer (clip or image-reward)")
            name = "scenes-reward"
        if name not in FIDELITY_METRICS and name not in available_scorers():
            raise ValueError(f"--objectives: unknown objective {name!r}; use {', '.join(FIDELITY_METRICS)}, "
                             f"'reward' or a scorer name ({', '.join(available_scorers())})")
        if name not in objectives:
            objectives.append(name)
    return tuple(objectives)


def parse_floors(texts: list[str], objectives: tuple[str, ...]) -> tuple:
    """``--quality-floor psnr=29`` → QualityFloor tuple; a floor applies to a searched objective."""
    from ecad.search.optimizer.task import QualityFloor

    floors = []
    for text in texts:
        floor = QualityFloor.parse(text)
        if floor.metric == "reward":
            floor = QualityFloor("scenes-reward", floor.minimum)
        if floor.metric not in objectives:
            raise ValueError(f"--quality-floor {text}: {floor.metric!r} is not a searched objective; "
                             f"use one of --objectives ({', '.join(objectives) or 'none given'})")
        floors.append(floor)
    return tuple(floors)


def _model_scorer_kwargs(name: str, model: str, kwargs: dict) -> dict:
    """The bundled model's scorers read its reward network from the model folder."""
    from ecad.quality.prompts import is_scenes_model

    kwargs = dict(kwargs)
    if is_scenes_model(model) and name == "combined":
        kwargs.setdefault("component_kwargs", {"scenes-reward": {"model_dir": str(model)}})
    if is_scenes_model(model) and name == "scenes-reward":
        kwargs.setdefault("model_dir", str(model))
    return kwargs


def resolve_scorer(args, objectives: tuple[str, ...] = ()) -> tuple[str, dict, dict[str, dict]]:
    """(scorer name, its kwargs, extra scorers the objectives need: name -> kwargs).

    ``--scorer auto``: the first objective's scorer when objectives are chosen, else 'combined'
    on the bundled model and 'fidelity' elsewhere. ``--scorer-arg`` goes to the main scorer.
    """
    from ecad.quality.prompts import is_scenes_model

    needed = [("fidelity" if o in FIDELITY_METRICS else o) for o in objectives]
    name = args.scorer
    if name == "auto":
        name = needed[0] if needed else ("combined" if is_scenes_model(args.model) else "fidelity")
    extra = {other: _model_scorer_kwargs(other, args.model, {}) for other in needed if other != name}
    return name, _model_scorer_kwargs(name, args.model, dict(args.scorer_arg)), extra


def make_executor(recipe, args):
    """In-process by default; Ray actors with ``--ray ADDRESS`` ('auto', 'local', 'ray://...')."""
    if not args.ray:
        from ecad.search.executors import LocalExecutor

        return LocalExecutor(recipe)
    from ecad.search.executors.ray_actors import RayExecutor

    return RayExecutor(recipe, address=args.ray, num_workers=args.workers, num_threads=args.threads)


class RenderReuse:
    """``--renders-from``: another run's records into this run's memos (`ecad.search.reuse`), their
    cost recomputed by an evaluator of this run's recipe, built (the pipeline loaded) on first need."""

    def __init__(self, task, sources: list[Path], log):
        self.recipe, self.genome, self.sources, self.log = task.recipe, task.genome, sources, log
        self._evaluator = None

    def _cost_of(self, genes):
        if self._evaluator is None:
            self._evaluator = self.recipe.build()
        return self._evaluator.cost(genes)

    def search(self, memo, config) -> None:
        from ecad.search.reuse import import_renders

        copied = import_renders(memo, config, self.sources, self._cost_of, self.genome)
        self.log.info("reused %d rendered candidates of %s", copied, ", ".join(map(str, self.sources)))

    def validation(self, run_dir: Path, folder_name: str):
        """The prefill of the validation re-scoring: the sources' folders of the same name (a
        validation folder's config has no model fingerprint: the runs' own configs are compared)."""
        from ecad.search.reuse import check_same_renders, import_renders

        def prefill(memo, config) -> None:
            run_config = json.loads((run_dir / "config.json").read_text())
            for source in self.sources:
                check_same_renders(run_config, source)
            sources = [s / folder_name for s in self.sources if (s / folder_name / "config.json").is_file()]
            copied = import_renders(memo, config, sources, self._cost_of, self.genome)
            self.log.info("reused %d validation scores of %s", copied, ", ".join(map(str, sources)) or "no run")
        return prefill


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("ecad.calibrate")

    import torch

    torch.set_num_threads(args.threads)
    from ecad.paths import model_name
    from ecad.generate import native_resolution
    from ecad.quality.prompts import prompt_set, read_prompt_file
    from dataclasses import replace

    from ecad.quality.prompts import validation_prompts
    from ecad.search.optimizer.loop import rescore, run_search
    from ecad.search.optimizer.run_folder import RunFolderError
    from ecad.search.reuse import ReuseError
    from ecad.search.optimizer.noise import RacingSettings
    from ecad.search.optimizer.nsga import GeneticSettings
    from ecad.search.optimizer.surrogate import SurrogateSettings
    from ecad.bank import BankError, ScheduleBank, portable_paths
    from ecad.search.evaluator import RenderRecipe
    from ecad.search.genome import REUSE_ONLY, parse_actions
    from ecad.search.task import build_model_task
    from ecad.search.to_bank import bank_records, write_bank
    from ecad.cost import FittedCost
    from ecad.setting import Setting

    if not Path(args.model).exists() and (Path(args.model).is_absolute() or args.model.startswith(".")):
        hint = " (the bundled model is made by ecad-train-bundled)" if Path(args.model) == DEFAULT_MODEL else ""
        print(f"ecad-calibrate: model folder {args.model} not found{hint}; pass --model", file=sys.stderr)
        return 2
    native = (None, None)
    if args.height is None or args.width is None:
        if not Path(args.model).is_dir():
            print("ecad-calibrate: pass --height and --width for a hub model", file=sys.stderr)
            return 2
        native = native_resolution(args.model)
    setting = Setting(args.height or native[0], args.width or native[1], args.steps, args.guidance)
    prompts = read_prompt_file(args.prompts) if args.prompts else prompt_set(args.model, args.num_prompts)
    image_seeds = [int(s) for s in args.image_seeds.split(",") if s.strip()]
    try:
        objectives = parse_objectives(args.objectives, args.model)
        floors = parse_floors(args.quality_floor, objectives)
        if not 0 <= args.step_mutation <= 1:
            raise ValueError(f"--step-mutation is a probability in [0, 1], got {args.step_mutation}")
        actions = parse_actions(args.actions)
        if "guidance" in actions and args.guidance <= 1:
            raise ValueError(f"--actions guidance needs classifier-free guidance (--guidance > 1), "
                             f"got {args.guidance}")
        if (args.cost == "fitted") != bool(args.cost_model):
            raise ValueError("--cost fitted needs --cost-model FILE (and --cost-model needs --cost fitted)")
        cost_model = json.loads(Path(args.cost_model).read_text()) if args.cost_model else None
        if cost_model is not None:  # a FittedCost, or a report holding one under "model" (cost-fit.json)
            cost_model = FittedCost.from_report(cost_model).to_dict()
        if args.renders_from and args.cost == "latency":
            raise ValueError("--renders-from recomputes the cost of another run's candidates; a measured "
                             "latency cannot be (use --cost macs or fitted)")
        missing = [d for d in args.renders_from if not (Path(d) / "config.json").is_file()]
        if missing:
            raise ValueError(f"--renders-from: {', '.join(missing)} is not a calibration run folder (no config.json)")
        racing = None if args.racing is None else RacingSettings(first_fraction=args.racing)
        surrogate = None if args.surrogate is None else SurrogateSettings(pool_factor=args.surrogate)
        if racing and len(prompts) * len(image_seeds) < 2:
            raise ValueError("--racing needs at least 2 prompts x seeds to race on")
        # checked now (disjoint from calibration and held-out prompts), used after the search
        held_back = validation_prompts(args.model, args.validation_prompts, prompts) if args.validation_prompts else []
    except (ValueError, OSError) as err:
        print(f"ecad-calibrate: {err}", file=sys.stderr)
        return 2
    scorer, scorer_kwargs, extra_scorers = resolve_scorer(args, objectives)
    recipe = RenderRecipe(
        model=str(args.model), setting=setting, scorer=scorer, scorer_kwargs=scorer_kwargs,
        extra_scorers=extra_scorers, prompts=prompts, seeds=image_seeds, cost=args.cost, device=args.device,
        dtype=args.dtype, batch_size=args.batch_size, num_threads=args.threads, actions=actions,
        cost_model=cost_model,
    )
    try:
        seed_banks = [ScheduleBank.load(path) for path in args.seed_bank]
        task = build_model_task(recipe, objectives, floors=floors, seed_banks=seed_banks)
    except BankError as err:
        print(f"ecad-calibrate: --seed-bank: {err}", file=sys.stderr)
        return 2
    searched = "+".join(objectives) or scorer
    # reuse-only runs keep the v1 folder name, so they resume where they always were
    searched += "" if actions == REUSE_ONLY else "-" + "+".join(actions)
    run_dir = Path(args.run_dir or Path("runs") / "calibrate" / model_name(args.model)
                   / f"{setting.name}-{searched}-s{args.search_seed}")
    out = Path(args.out or SCHEDULES_DIR / model_name(args.model) / f"{setting.name}.json")
    settings = GeneticSettings(
        population=args.population, crossover_points=args.crossover_points, crossover_prob=args.crossover_prob,
        mutation_prob=args.mutation_prob, mutation_bit_prob=args.mutation_bit_prob,
        step_mutation_prob=args.step_mutation, step_planes=setting.num_inference_steps - 1,
    )
    log.info("calibrating %s at %s: %d genes (recompute, %s), %d seed schedules, scorer %s, %d prompts x %d image "
             "seeds, run folder %s", args.model, setting.name, task.space.n_var, ", ".join(actions),
             len(task.seed_schedules), scorer, len(prompts), len(image_seeds), run_dir)
    reuse = RenderReuse(task, [Path(d) for d in args.renders_from], log) if args.renders_from else None
    try:
        with make_executor(recipe, args) as executor:
            result = run_search(
                task, run_dir, executor, generations=args.generations, settings=settings, seed=args.search_seed,
                progress=not args.no_progress, plot=not args.no_plot,
                racing=racing, surrogate=surrogate,
                extra_config={"execution": {"ray": args.ray, "workers": args.workers},
                              # the initial population depends on them (kept only when set: older runs resume)
                              **({"seed_banks": [str(Path(b)) for b in args.seed_bank]} if args.seed_bank else {}),
                              **({"renders_from": [str(Path(d)) for d in args.renders_from]} if args.renders_from else {})},
                prefill=reuse.search if reuse else None,
            )
    except (RunFolderError, ReuseError) as err:  # a folder holding another run: say so, no traceback
        print(f"ecad-calibrate: {err}", file=sys.stderr)
        return 2
    validation = None
    if held_back:
        validation_recipe = replace(recipe, prompts=held_back)
        try:
            with make_executor(validation_recipe, args) as executor:
                validation = rescore(task, run_dir / f"validation-{len(held_back)}", executor, bank_records(task, result),
                                     validation_recipe, progress=not args.no_progress,
                                     prefill=reuse.validation(run_dir, f"validation-{len(held_back)}") if reuse else None)
        except ReuseError as err:
            print(f"ecad-calibrate: {err}", file=sys.stderr)
            return 2
    calibration = {
        "prompts": prompts, "seeds": image_seeds, "scorer_kwargs": portable_paths(scorer_kwargs, args.model, out.parent),
        "cost": args.cost,
        **({"cost_model": cost_model} if cost_model else {}),  # the fitted cost it searched under
        "actions": ["recompute", *actions],
        **({"objectives": list(objectives)} if objectives else {}),
        **({"quality_floors": [f.to_dict() for f in floors]} if floors else {}),
        "generations": result.state.generation, "population": args.population, "search_seed": args.search_seed,
        "evaluations": len(result.memo.evaluated()), "images": result.state.history[-1].get("images_total"),
        "hypervolume": result.state.history[-1]["hypervolume"],
        **({"validation_prompts": held_back} if held_back else {}),
        "run_dir": str(run_dir), "warnings": result.warnings,
    }
    write_bank(task, result, out, calibration=calibration, validation=validation)
    log.info("front of %d schedules written to %s (plot: %s)", len(result.front), out, run_dir / "pareto.png")
    for warning in result.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
