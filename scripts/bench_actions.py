#!/usr/bin/env python
"""Does searching richer actions pay? Fronts of reuse-only vs +forecast vs +forecast+skip-block.

Same search budget for each variant and search seed (issue #12 "Must show"): ecad-calibrate on
the bundled model with ``--objectives psnr --cost macs`` (PSNR to the uncached image), then every
front entry of every run timed by wall clock, interleaved with no-cache in rotated rounds
(``ecad.profile.time_schedules``, batch 1, one thread), and the fronts compared in PSNR vs
wall-clock speedup.

    python scripts/bench_actions.py                 # search (resumable), time, report
    python scripts/bench_actions.py --stage report  # redo the numbers and plot from saved runs
    python scripts/bench_actions.py --stage fit     # the fitted cost (issue #11 item 4)
    python scripts/bench_actions.py --stage check --bank BANK  # the stored fit vs BANK's entries
    python scripts/bench_actions.py --stage crossfit --bank BANK  # fit and test on BANK's own entries

The cost model of a bank's own entries is a package command: ``ecad-fit-cost BANK --out FILE``
(what ``ecad-calibrate --cost fitted --cost-model FILE`` reads); this script keeps the experiments.

Writes <out>/<variant>-s<seed>/ (run folder + bank), <out>/timing.json, and
<docs>/actions.json + <docs>/actions.png.

``--stage fit`` fits ``ecad.cost.FittedCost`` on the timed front schedules (relative seconds =
1 / wall speedup, so machine drift between sessions cancels), then times the committed bank's
entries (not used in the fit) interleaved with no-cache and reports realized / predicted speedup
for each, beside realized / MACs speedup; writes <docs>/cost-fit.json (the FittedCost under
"model": what ``ecad-calibrate --cost fitted --cost-model`` reads) and <out>/bank-timing.json.

``--stage crossfit`` times every entry of ``--bank`` (no-cache between every 4 entries of a
shuffled round, each entry against the no-cache runs around it: `ecad.profile.time_schedules`), then
fits the cost on half of them and predicts the other half, both ways (2-fold, seed 0): every
entry's realized / predicted is out of sample. Beside it, each entry's timing spread (max−min
over median of its per-round speedups): the noise floor a 5% agreement has to clear. Writes
<docs>/cost-crossfit-<bank>.json, with the fit on all entries under "model".
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {"reuse": "reuse", "forecast": "reuse,forecast", "forecast+skip": "reuse,forecast,skip"}
#: wall-clock speedups at which the fronts' PSNR is compared (the issue's 2-4x range)
SPEEDUPS = (2.0, 2.5, 3.0, 3.5, 4.0)
PSNR_BAR = 35.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "ecad-scenes"))
    p.add_argument("--search-seeds", default="0,1,2")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--num-prompts", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default %(default)s)")
    p.add_argument("--stage", choices=["all", "search", "time", "report", "fit", "check", "crossfit"], default="all")
    p.add_argument("--bank", default=str(REPO / "schedules" / "ecad-scenes" / "32x32-20steps.json"),
                   help="the committed bank whose entries test the fitted cost (--stage fit, check, crossfit)")
    p.add_argument("--out", default=str(REPO / "runs" / "bench-actions"))
    p.add_argument("--docs", default=str(REPO / "docs" / "benchmarks" / "actions"))
    return p.parse_args(argv)


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-s{seed}"


def calibrate_args(args, variant: str, seed: int) -> list[str]:
    run = Path(args.out) / run_name(variant, seed)
    return ["--model", args.model, "--actions", VARIANTS[variant], "--search-seed", str(seed),
            "--population", str(args.population), "--generations", str(args.generations),
            "--num-prompts", str(args.num_prompts), "--seeds", "0", "--objectives", "psnr", "--cost", "macs",
            "--run-dir", str(run), "--out", str(run / "bank.json"), "--no-progress", "--no-plot"]


def search(args, seeds: list[int]) -> None:
    from ecad.cli.calibrate import main as calibrate

    for variant in VARIANTS:
        for seed in seeds:
            logging.info("search %s", " ".join(calibrate_args(args, variant, seed)))
            if calibrate(calibrate_args(args, variant, seed)) != 0:
                raise SystemExit(f"ecad-calibrate failed for {variant} seed {seed}")


def load_fronts(args, seeds: list[int]) -> dict[str, list[dict]]:
    """run name -> its bank's entries: id, schedule hash, PSNR, MACs speedup, the schedule."""
    from ecad.bank import ScheduleBank
    from ecad.schedule import FORECAST

    fronts = {}
    for variant in VARIANTS:
        for seed in seeds:
            bank = ScheduleBank.load(Path(args.out) / run_name(variant, seed) / "bank.json")
            full = bank.no_cache_entry().macs
            fronts[run_name(variant, seed)] = [
                {"id": e.id, "hash": e.cache_schedule().hash, "psnr": float(e.quality["psnr"]),
                 "macs_speedup": full / e.macs, "skips_blocks": bool(e.cache_schedule().skip.any()),
                 "forecasts": bool((e.cache_schedule().actions == FORECAST).any()), "schedule": e.cache_schedule()}
                for e in bank.entries]
    return fronts


def load_pipe_and_setting(args):
    import torch

    from ecad.generate import load_pipeline
    from ecad.setting import Setting

    torch.set_num_threads(1)
    source = Path(args.bank) if args.stage in ("check", "crossfit") else Path(args.out) / run_name("reuse", 0) / "bank.json"
    bank = json.loads(source.read_text())
    return load_pipeline(args.model), Setting(bank["height"], bank["width"], bank["num_inference_steps"],
                                              bank["guidance_scale"])


def time_fronts(args, fronts: dict[str, list[dict]]) -> dict:
    """Wall-clock speedup of every distinct schedule: batch 1, interleaved with no-cache."""
    return time_schedules(args, {e["hash"]: e["schedule"] for entries in fronts.values() for e in entries})


def time_schedules(args, schedules: dict) -> dict:
    """Every schedule's wall-clock speedup over no-cache (`ecad.profile.time_schedules`: shuffled
    rounds, no-cache between every 4 schedules, 2 images per timing, batch 1)."""
    from ecad.profile import time_schedules as time_against_no_cache
    from ecad.quality.prompts import prompt_set

    pipe, setting = load_pipe_and_setting(args)
    prompt = prompt_set(args.model, 1)[0]
    logging.info("timing %d schedules x %d rounds", len(schedules), args.repeats)
    timings = time_against_no_cache(pipe, setting, schedules, rounds=args.repeats, prompt=prompt)
    return {"prompt": prompt, "repeats": args.repeats,
            "protocol": "ecad.timing: shuffled rounds, no-cache between every 4, 2 images per timing",
            "no_cache_seconds": timings.reference_wall_s,
            "speedup": {k: {"median": timings.speedup(k), "min": timings.spread(k)[0], "max": timings.spread(k)[1],
                            "ratios": timings.ratios[k]} for k in schedules}}


def attainable_psnr(points: list[tuple[float, float]], speedup: float) -> float | None:
    """Best PSNR among (speedup, psnr) points at least ``speedup`` fast (None: none is)."""
    reached = [p for s, p in points if s >= speedup]
    return max(reached) if reached else None


def fastest_at(points: list[tuple[float, float]], psnr: float) -> float:
    return max([s for s, p in points if p >= psnr], default=1.0)


def report(args, seeds: list[int], fronts: dict[str, list[dict]], timing: dict) -> dict:
    speed = timing["speedup"]
    runs = {}
    for name, entries in fronts.items():
        runs[name] = [{k: v for k, v in e.items() if k != "schedule"} | {"wall_speedup": speed[e["hash"]]["median"],
                      "wall_speedup_range": [speed[e["hash"]]["min"], speed[e["hash"]]["max"]]} for e in entries]
    summary = {}
    for variant in VARIANTS:
        per_seed = []
        for seed in seeds:
            points = [(e["wall_speedup"], e["psnr"]) for e in runs[run_name(variant, seed)]]
            reuse = [(e["wall_speedup"], e["psnr"]) for e in runs[run_name("reuse", seed)]]
            gains = {}
            for x in SPEEDUPS:
                mine, base = attainable_psnr(points, x), attainable_psnr(reuse, x)
                gains[str(x)] = None if mine is None or base is None else mine - base
            per_seed.append({
                "seed": seed,
                "psnr_at_speedup": {str(x): attainable_psnr(points, x) for x in SPEEDUPS},
                "psnr_gain_over_reuse": gains,
                "speedup_at_35dB": fastest_at(points, PSNR_BAR),
                "speedup_at_35dB_over_reuse": fastest_at(points, PSNR_BAR) / fastest_at(reuse, PSNR_BAR),
            })
        skipping = sorted((e for seed in seeds for e in runs[run_name(variant, seed)] if e["skips_blocks"]),
                          key=lambda e: -e["macs_speedup"])[:5]
        summary[variant] = {
            "per_seed": per_seed,
            "fastest_skip_block_entries": [
                {"id": e["id"], "macs_speedup": e["macs_speedup"], "wall_speedup": e["wall_speedup"],
                 "realized_over_macs": e["wall_speedup"] / e["macs_speedup"], "psnr": e["psnr"]} for e in skipping],
        }
    result = {"setup": {k: getattr(args, k) for k in ("model", "population", "generations", "num_prompts", "repeats")}
              | {"search_seeds": seeds, "variants": VARIANTS, "objectives": "psnr", "cost": "macs",
                 "timing": "batch 1, 1 thread, interleaved rotated rounds; speedup = median over rounds of "
                           "no-cache seconds / schedule seconds", "prompt": timing["prompt"],
                 "no_cache_seconds": timing["no_cache_seconds"]},
              "summary": summary, "runs": runs}
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    from ecad.atomic import atomic_write_bytes

    atomic_write_bytes(docs / "actions.json", (json.dumps(result, indent=1) + "\n").encode())
    plot(result, docs / "actions.png")
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"reuse": "tab:blue", "forecast": "tab:orange", "forecast+skip": "tab:green"}
    markers = ["o", "s", "^", "D", "v"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seeds = result["setup"]["search_seeds"]
    for variant in VARIANTS:
        for i, seed in enumerate(seeds):
            entries = sorted(result["runs"][run_name(variant, seed)], key=lambda e: e["wall_speedup"])
            xs = [e["wall_speedup"] for e in entries]
            # the attainable front: best PSNR at this speed or faster
            ys = [max(f["psnr"] for f in entries if f["wall_speedup"] >= e["wall_speedup"]) for e in entries]
            ax.step(xs, ys, where="post", color=colors[variant], alpha=0.6,
                    label=f"{variant}" if i == 0 else None)
            ax.scatter(xs, [e["psnr"] for e in entries], color=colors[variant], marker=markers[i % len(markers)],
                       s=14, alpha=0.8)
    ax.axhline(PSNR_BAR, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("wall-clock speedup vs no-cache (batch 1, CPU)")
    ax.set_ylabel("PSNR to the uncached image (dB)")
    ax.set_ylim(top=min(ax.get_ylim()[1], 70))
    ax.set_title(f"searched actions, {len(seeds)} search seeds (markers), same budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fit(args, seeds: list[int], fronts: dict[str, list[dict]], timing: dict) -> dict:
    """Fit the cost on the timed fronts; realized / predicted on the committed bank's entries."""
    import platform

    from ecad.atomic import atomic_write_bytes
    from ecad.cost import fit_cost, schedule_cost_features

    pipe, setting = load_pipe_and_setting(args)
    schedules = {e["hash"]: e["schedule"] for entries in fronts.values() for e in entries}
    features = {key: schedule_cost_features(pipe, setting, s) for key, s in schedules.items()}
    no_cache = schedule_cost_features(pipe, setting)
    keys = sorted(schedules)
    relative_seconds = [1.0 / timing["speedup"][k]["median"] for k in keys]
    model = fit_cost([features[k] for k in keys], relative_seconds,
                     hardware=f"{platform.machine()} {platform.processor() or 'cpu'}, 1 torch thread, batch 1")
    in_sample = [timing["speedup"][k]["median"] / model.speedup(features[k], no_cache) for k in keys]

    result = {"model": model.to_dict(), "fitted_on": len(keys),
              "in_sample_realized_over_predicted": {"min": min(in_sample), "max": max(in_sample),
                                                    "median": statistics.median(in_sample)},
              **bank_check(args, model, pipe, setting, Path(args.out) / "bank-timing.json")}
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(docs / "cost-fit.json", (json.dumps(result, indent=1) + "\n").encode())
    return result


def bank_check(args, model, pipe, setting, timing_path: Path) -> dict:
    """Time every entry of ``--bank`` (once; cached in ``timing_path``) and compare with ``model``."""
    from ecad.atomic import atomic_write_bytes
    from ecad.bank import ScheduleBank
    from ecad.cost import schedule_cost_features

    bank = ScheduleBank.load(args.bank)
    if not timing_path.exists():
        atomic_write_bytes(timing_path, (json.dumps(time_schedules(
            args, {e.id: e.cache_schedule() for e in bank.entries}), indent=1) + "\n").encode())
    bank_timing = json.loads(timing_path.read_text())
    no_cache = schedule_cost_features(pipe, setting)
    full = bank.no_cache_entry().macs
    entries = []
    for e in bank.entries:
        realized = bank_timing["speedup"][e.id]["median"]
        predicted = model.speedup(schedule_cost_features(pipe, setting, e.cache_schedule()), no_cache)
        entries.append({"id": e.id, "realized": realized, "realized_range": [bank_timing["speedup"][e.id]["min"],
                        bank_timing["speedup"][e.id]["max"]], "predicted": predicted, "macs_speedup": full / e.macs,
                        "realized_over_predicted": realized / predicted, "realized_over_macs": realized * e.macs / full})
    ratios = np.array([e["realized_over_predicted"] for e in entries])
    return {"bank": _repo_relative(args.bank),
            "bank_realized_over_predicted": {"min": float(ratios.min()), "max": float(ratios.max()),
                                             "median": float(np.median(ratios)),
                                             "within_5pct": int((np.abs(ratios - 1) <= 0.05).sum()),
                                             "entries": len(ratios)},
            "bank_entries": entries}


def _repo_relative(path: str) -> str:
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else path


def check(args) -> dict:
    """The stored fitted cost (<docs>/cost-fit.json, not refitted) against every entry of --bank."""
    from ecad.atomic import atomic_write_bytes
    from ecad.cost import FittedCost

    stored = json.loads((Path(args.docs) / "cost-fit.json").read_text())
    model = FittedCost.from_dict(stored["model"])
    pipe, setting = load_pipe_and_setting(args)
    name = Path(args.bank).stem
    result = {"model": stored["model"], **bank_check(args, model, pipe, setting,
                                                     Path(args.out) / f"bank-timing-{name}.json")}
    atomic_write_bytes(Path(args.docs) / f"cost-check-{name}.json", (json.dumps(result, indent=1) + "\n").encode())
    return result


def crossfit(args) -> dict:
    """Out-of-sample realized / predicted for every entry of --bank: 2-fold fits on its own timings."""
    import platform

    from ecad.atomic import atomic_write_bytes
    from ecad.bank import ScheduleBank
    from ecad.cost import fit_cost, out_of_fold_speedups, schedule_cost_features

    bank = ScheduleBank.load(args.bank)
    name = Path(args.bank).stem
    pipe, setting = load_pipe_and_setting(args)
    timing_path = Path(args.out) / f"bank-timing-{name}-local-r{args.repeats}.json"
    if not timing_path.exists():
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(timing_path, (json.dumps(time_schedules(
            args, {e.id: e.cache_schedule() for e in bank.entries}), indent=1) + "\n").encode())
    timing = json.loads(timing_path.read_text())["speedup"]
    entries = [e for e in bank.entries if e.id in timing]
    features = [schedule_cost_features(pipe, setting, e.cache_schedule()) for e in entries]
    no_cache = schedule_cost_features(pipe, setting)
    realized = np.array([timing[e.id]["median"] for e in entries])
    predicted = out_of_fold_speedups(features, realized, no_cache, folds=2, seed=0)
    full_macs = bank.no_cache_entry().macs
    macs = np.array([full_macs / e.macs for e in entries])
    spread = np.array([(timing[e.id]["max"] - timing[e.id]["min"]) / timing[e.id]["median"] for e in entries])
    ratio = realized / predicted

    def summary(values: np.ndarray) -> dict:
        values = values[np.isfinite(values)]  # out-of-fold: NaN where a fold's fit could not price a schedule
        return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max()),
                "within_5pct": int((np.abs(values - 1) <= 0.05).sum()),
                "mean_abs_error": float(np.mean(np.abs(values - 1)))}

    model = fit_cost(features, [1.0 / r for r in realized],
                     hardware=f"{platform.machine()} {platform.processor() or 'cpu'}, 1 torch thread, batch 1")
    result = {
        "bank": _repo_relative(args.bank), "entries": len(entries), "repeats": args.repeats,
        "timing_protocol": json.loads(timing_path.read_text()).get("protocol"),
        "realized_over_predicted_out_of_fold": summary(ratio),
        "realized_over_macs": summary(realized / macs),
        "timing_spread": {"median": float(np.median(spread)), "max": float(spread.max())},
        "model": model.to_dict(),
        "bank_entries": [{"id": e.id, "realized": float(r), "realized_range": [timing[e.id]["min"], timing[e.id]["max"]],
                          "predicted_out_of_fold": float(p), "macs_speedup": float(m), "realized_over_predicted": float(r / p)}
                         for e, r, p, m in zip(entries, realized, predicted, macs)],
    }
    atomic_write_bytes(Path(args.docs) / f"cost-crossfit-{name}.json", (json.dumps(result, indent=1) + "\n").encode())
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    seeds = [int(s) for s in args.search_seeds.split(",")]
    if args.stage in ("all", "search"):
        search(args, seeds)
    timing_path = Path(args.out) / "timing.json"
    if args.stage in ("check", "crossfit"):
        result = check(args) if args.stage == "check" else crossfit(args)
        print(json.dumps({k: v for k, v in result.items() if k != "bank_entries"}, indent=1))
        return 0
    if args.stage == "fit":
        result = fit(args, seeds, load_fronts(args, seeds), json.loads(timing_path.read_text()))
        print(json.dumps({k: v for k, v in result.items() if k != "bank_entries"}, indent=1))
        return 0
    if args.stage in ("all", "time", "report"):
        fronts = load_fronts(args, seeds)
        if args.stage != "report" or not timing_path.exists():
            from ecad.atomic import atomic_write_bytes

            atomic_write_bytes(timing_path, (json.dumps(time_fronts(args, fronts), indent=1) + "\n").encode())
        result = report(args, seeds, fronts, json.loads(timing_path.read_text()))
        print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
