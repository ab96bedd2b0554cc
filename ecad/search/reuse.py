"""Another run's renders, reused: search the same candidates under a new cost without rendering again.

What a render yields (every metric, per prompt x seed image) depends on the model, the prompts,
seeds and setting, the scorers and the actions; the cost objective does not enter it. So a run
whose evaluator differs from this one's only in its cost ("macs" vs "fitted", or another fitted
model) has already paid for the quality of every schedule it tried. Its memo records are copied
into this run's memo with the cost recomputed by this run's rule (a deterministic one: MACs or a
fitted model; a measured latency cannot be recomputed). A copied record counts 0 images rendered
(this run rendered nothing for it), so images-rendered comparisons stay honest.

The searched actions may differ too, if the other run's are a subset of this run's (a run that
adds an action, e.g. guidance reuse, starts from everything the runs without it rendered): a
schedule renders the same whichever space it was found in, and its memo key is its schedule's
hash; its genes are decoded in the source's genome and encoded in this run's.

`ecad-calibrate --renders-from RUN_DIR` uses it for the search's memo and, with the same rule, for
the validation re-scoring's (`validation-N/` of both runs).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ecad.search.genome import REUSE_ONLY, Genome
from ecad.search.optimizer.run_folder import Memo, MemoRecord, read_memo, scoring_differences

#: config entries that may differ between runs whose renders are interchangeable: the cost (its
#: label and model with it), the objectives the search maximises, and the searched actions with
#: their gene space (checked apart: the source's actions must be among this run's)
IGNORED = ("cost", "cost_model", "cost_label", "objectives", "actions", "space")


def _actions(config: dict[str, Any]) -> tuple[str, ...]:
    return tuple(config.get("evaluator", {}).get("actions", REUSE_ONLY))  # absent: a v1 run


class ReuseError(ValueError):
    pass


def check_same_renders(config: dict[str, Any], source: Path) -> None:
    """Raise `ReuseError` unless the run folder ``source`` renders as a run with ``config`` does."""
    path = Path(source) / "config.json"
    if not path.is_file():
        raise ReuseError(f"{source} is not a calibration run folder (no config.json)")
    source_config = json.loads(path.read_text())
    differ = scoring_differences(config, source_config, ignore=IGNORED)
    if differ:
        raise ReuseError(f"{source} renders differently: its config differs in {', '.join(differ)} "
                         "(only the cost, the objectives and the searched actions may differ)")
    extra = sorted(set(_actions(source_config)) - set(_actions(config)))
    if extra:
        raise ReuseError(f"{source} searched actions this run does not ({', '.join(extra)}): its candidates "
                         "are not in this run's gene space")


def gene_translation(genome: Genome, source_config: dict[str, Any]):
    """(the source run's genome, source genes -> genes of ``genome``, this run's)."""
    source = genome.with_actions(_actions(source_config))
    if source == genome:
        return source, lambda genes: genes
    return source, lambda genes: genome.encode(source.decode(genes))


def import_renders(memo: Memo, config: dict[str, Any], sources: list[Path],
                   cost_of: Callable[[np.ndarray], tuple[float, int]], genome: Genome) -> int:
    """Copy into ``memo`` (a run bound to ``config``, searching ``genome``) every record of the
    ``sources`` run folders that it lacks, with ``cost_of(genes) -> (cost, MACs)`` as their cost.
    Returns how many were copied.

    Records keep their label and racing stage; they count as generation 0 with 0 images rendered,
    and a searched one keeps the bank id it has in its source run (`MemoRecord.origin`).
    Sources are read in order; the first record of a key wins (a later one is the same render).
    """
    for source in sources:
        check_same_renders(config, source)
    copied = 0
    for source in sources:
        memo_path = Path(source) / "memo.jsonl"
        source_config = json.loads((Path(source) / "config.json").read_text())
        source_genome, translate = gene_translation(genome, source_config)
        for record in read_memo(memo_path, source_genome.space)[0] if memo_path.exists() else []:
            if record.key in memo:
                continue
            genes = translate(record.bits)
            cost, macs = cost_of(genes)
            memo.add(MemoRecord(key=record.key, bits=genes, generation=0, label=record.label,
                                stage=record.stage, images=0, origin=None if record.label else record.searched_id(),
                                result=replace(record.result, cost=float(cost), macs=int(macs))))
            copied += 1
    return copied
