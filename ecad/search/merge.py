"""One bank from several calibration runs of the same task (e.g. two search seeds, or two operator
settings run side by side on two machines).

Runs of one task share what an evaluation means — model, setting, calibration prompts and seeds,
scorers, cost, actions, objectives — so their memos are records of one population: the merged
bank is the front over every candidate any of them fully evaluated, plus what
``to_bank.bank_records`` keeps beside it (heuristics within noise, no-cache). Every record of
that bank must have been re-scored on the validation prompts in one of the runs (each run
validates its own bank, and the merged front is a subset of the union of theirs); nothing is
rendered here. The runs are read, never written: merge finished runs only (a memo being
appended to may end in a torn line).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from ecad.bank import portable_paths
from ecad.search.optimizer.loop import SearchResult, archive_front
from ecad.search.optimizer.run_folder import Memo, RunFolder, read_memo, renamed, scoring_differences
from ecad.search.recipes import recipe_from_json
from ecad.search.task import ModelTask, build_model_task
from ecad.search.to_bank import bank_records, write_bank

class MergeError(ValueError):
    pass


def _config(run: Path) -> dict[str, Any]:
    path = run / "config.json"
    if not path.is_file():
        raise MergeError(f"{run} is not a calibration run folder (no config.json)")
    return json.loads(path.read_text())


def _same_task(first: dict, other: dict, name: str) -> None:
    # the model path may differ between machines; its fingerprint, in "task", may not
    differ = scoring_differences(first, other)
    if differ:
        raise MergeError(f"{name} is another task: its config differs in {', '.join(differ)}")


def merge_runs(runs: list[str | Path], bank_folder: Path, model: str | None = None, validation: str | None = None
               ) -> tuple[ModelTask, SearchResult, dict[str, Any], dict[str, Any]]:
    """(task, merged SearchResult, validation results by key, calibration metadata) of ``runs``.

    ``bank_folder``: where the bank will lie (its metadata names the model relative to it);
    ``model``: the model folder the bank names (default the first run's); ``validation``: the
    validation folder name inside each run (default: the one folder named ``validation-*``).
    """
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise MergeError("merging needs at least two run folders")
    configs = [_config(r) for r in runs]
    for run, config in zip(runs[1:], configs[1:]):
        _same_task(configs[0], config, str(run))
    recipe = recipe_from_json(configs[0]["evaluator"])
    if model is not None:
        recipe = replace(recipe, model=str(model))
    task = build_model_task(recipe, tuple(configs[0].get("objectives", ())))
    if task.description.model_fingerprint != configs[0]["task"]["model_fingerprint"]:
        raise MergeError(f"{recipe.model} is not the model the runs searched (fingerprint differs)")

    memo = Memo(Path("/nonexistent/merged.jsonl"), task.space)  # in memory: never added to
    validated: dict[str, Any] = {}
    validation_prompts: list[str] | None = None
    generations = {}
    for run in runs:
        own = read_memo(RunFolder(run).memo_path, task.space)[0]  # only reads: a run may still be writing
        for record in own:
            memo.records.setdefault(record.key, record)
        generations[str(run)] = max((r.generation for r in own), default=0)
        folders = [run / validation] if validation else sorted(run.glob("validation-*"))
        if len(folders) != 1 or not (folders[0] / "memo.jsonl").is_file():
            raise MergeError(f"{run}: expected one validation folder with a memo, found {[f.name for f in folders]}")
        for record in read_memo(folders[0] / "memo.jsonl", task.space)[0]:
            validated.setdefault(record.key, record.result)
        held_back = _config(folders[0])["evaluator"]["prompts"]
        if validation_prompts is not None and held_back != validation_prompts:
            raise MergeError(f"{run} was validated on other prompts than {runs[0]}")
        validation_prompts = held_back

    # each candidate once: runs may share records (a generation 0 started from one copy)
    images = sum(task.num_samples if r.images is None else r.images for r in memo.records.values())
    seed_records = [r for r in memo.records.values() if r.label and r.stage is None]
    result = SearchResult(state=None, front=archive_front(memo, objectives=task.objectives), seed_records=seed_records,
                          memo=memo)
    first = configs[0]["evaluator"]
    calibration = {
        "prompts": first["prompts"], "seeds": first["seeds"],
        "scorer_kwargs": portable_paths(renamed(first.get("scorer_kwargs", {}), first["model"], recipe.model),
                                        recipe.model, bank_folder),
        "cost": first["cost"],
        **({"cost_model": first["cost_model"]} if first.get("cost_model") else {}),
        "actions": ["recompute", *first["actions"]],
        **({"objectives": configs[0]["objectives"]} if configs[0].get("objectives") else {}),
        "merged_runs": [{"run_dir": str(run), "generations": generations[str(run)], "genetic": c["genetic"],
                         **({"quality_floors": c["quality_floors"]} if c.get("quality_floors") else {}),
                         **({"seed_banks": c["seed_banks"]} if c.get("seed_banks") else {})}
                        for run, c in zip(runs, configs)],
        "evaluations": len(memo.evaluated()), "images": images, "validation_prompts": validation_prompts,
    }
    return task, result, validated, calibration


def write_merged_bank(runs: list[str | Path], out: str | Path, model: str | None = None,
                      plot: str | Path | None = None) -> Path:
    """Merge ``runs`` (see `merge_runs`) and write the bank to ``out`` (and its Pareto plot to ``plot``)."""
    task, result, validated, calibration = merge_runs(runs, Path(out).parent, model)
    missing = [r.key[:12] for r in bank_records(task, result) if r.key not in validated]
    if missing:
        raise MergeError(f"{len(missing)} records of the merged bank were never validated in any run "
                         f"(e.g. {missing[:3]}): finish every run's last pass (it validates its bank), then merge")
    path = write_bank(task, result, out, calibration=calibration, validation=validated)
    if plot:
        from ecad.search.optimizer.plot import plot_search_front

        plot_search_front(Path(plot), front=result.front, seed_records=result.seed_records,
                          evaluated=result.memo.evaluated(), title=f"{task.description.name} — {len(runs)} runs merged",
                          cost_label=task.description.cost_label, quality_label=task.description.quality_label,
                          objectives=task.objectives)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m ecad.search.merge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="finished run folders of one task (ecad-calibrate --run-dir)")
    p.add_argument("--out", required=True, help="bank file to write, e.g. schedules/<model>/<setting>.json")
    p.add_argument("--model", help="model folder the bank names (default: the first run's)")
    p.add_argument("--plot", help="also draw the merged front, every evaluated candidate and the heuristics here (PNG)")
    args = p.parse_args(argv)
    try:
        path = write_merged_bank(args.runs, args.out, args.model, args.plot)
    except (MergeError, OSError) as err:
        print(f"merge: {err}", file=sys.stderr)
        return 2
    print(f"merged bank of {len(args.runs)} runs written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
