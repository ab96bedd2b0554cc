"""Measuring a bank's entries on a machine with the weights: quality on a prompt grid.

* `rescore_bank` — the bank's `quality` measured with a scorer (an imported bank's quality is a
  stated proxy until then), MACs recounted, the weights' hash recorded.
* `validate_bank` — every entry scored on validation prompts x seeds the search never saw:
  `validation` (means), `interval` (95% bootstrap interval of each mean) and `spread` (5th-95th
  percentile of single images: what one served image gets), with the prompts and seeds recorded
  in the bank. The server ranks and labels entries by these.

Both render and score through `ecad.evaluate` (the one render-and-score path).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ecad.bank import ScheduleBank
from ecad.cost import image_macs
from ecad.evaluate import Evaluation, ImageGrid, Scoring
from ecad.stats import bootstrap_interval

SPREAD_QUANTILES = (0.05, 0.95)


def rescore_bank(pipe: Any, bank: ScheduleBank, scorer: Any, prompts: Sequence[str], seeds: Sequence[int], *,
                 batch_size: int = 4, hash_weights: bool = True, progress: bool = False) -> ScheduleBank:
    """A copy of `bank` whose entries carry quality measured with `scorer` on `pipe`.

    Every entry renders the same prompts x seeds at the bank's setting; a scorer that needs
    references gets the no-cache images. `quality` becomes ``{scorer.name: mean score}`` (plus each
    of the scorer's `metrics()` where it has them), `quality_measured` True, MACs are recounted on
    the loaded pipeline, and the weights' sha256 is recorded so that a fine-tune is told apart later.
    Provenance is kept. Raises `BankError` for a pipeline of another architecture.
    """
    from tqdm.auto import tqdm

    from ecad.bank import weights_fingerprint

    bank.check_transformer(dict(pipe.transformer.config), source=f"bank for {bank.model}")
    if not prompts or not seeds:
        raise ValueError("rescoring needs at least one prompt and one seed")
    evaluation = Evaluation(pipe, bank.setting, ImageGrid(tuple(prompts), tuple(seeds)), Scoring({scorer.name: scorer}),
                            batch_size=batch_size)
    entries = []
    for entry in tqdm(bank.entries, desc="rescoring", disable=not progress):
        schedule = entry.cache_schedule()
        _, per_image = evaluation.evaluate(schedule)
        quality = {name: float(values.mean()) for name, values in per_image.items()}
        entries.append(entry.model_copy(update={
            "quality": quality, "quality_measured": True, "macs": image_macs(pipe, bank.setting, schedule)}))
    calibration = {**bank.calibration, "rescored": {"prompts": list(prompts), "seeds": [int(s) for s in seeds],
                                                     "scorer": scorer.name}}
    calibration.pop("quality_rule", None)
    return bank.model_copy(update={
        "entries": entries, "scorer": scorer.name, "quality_metric": scorer.name, "calibration": calibration,
        "weights_sha256": weights_fingerprint(pipe.transformer) if hash_weights else bank.weights_sha256,
    })


def validate_bank(pipe: Any, bank: ScheduleBank, scoring: Scoring, prompts: Sequence[str], seeds: Sequence[int], *,
                  batch_size: int | None = None, progress: bool = False) -> ScheduleBank:
    """A copy of `bank` whose entries carry their `validation` means, `interval` and `spread` on
    ``prompts`` x ``seeds`` (see the module docstring); calibration `quality` is kept."""
    from tqdm.auto import tqdm

    bank.check_transformer(dict(pipe.transformer.config), source=f"bank for {bank.model}")
    evaluation = Evaluation(pipe, bank.setting, ImageGrid(tuple(prompts), tuple(seeds)), scoring, batch_size=batch_size)
    entries = []
    for entry in tqdm(bank.entries, desc="validating", disable=not progress):
        _, per_image = evaluation.evaluate(entry.cache_schedule())
        values = {name: v.numpy().astype(float) for name, v in sorted(per_image.items())}
        entries.append(entry.model_copy(update={
            "validation": {name: float(v.mean()) for name, v in values.items()},
            "interval": {name: bootstrap_interval(v) for name, v in values.items()},
            "spread": {name: tuple(float(q) for q in np.quantile(v, SPREAD_QUANTILES)) for name, v in values.items()},
        }))
    calibration = {**bank.calibration, "validation_prompts": list(prompts), "validation_seeds": [int(s) for s in seeds]}
    return bank.model_copy(update={"entries": entries, "calibration": calibration})


def scoring_for(bank: ScheduleBank, device: str = "cpu") -> Scoring:
    """The scorers that give every metric a bank's entries carry: its own scorer (with the
    arguments its calibration used), plus fidelity where it ranks or searched on PSNR/SSIM."""
    from ecad.quality import available_scorers, build_scorer
    from ecad.quality.fidelity import METRICS

    scorers = {}
    if bank.scorer in available_scorers():
        scorers[bank.scorer] = build_scorer(bank.scorer, device=device, **dict(bank.calibration.get("scorer_kwargs") or {}))
    wanted = {bank.quality_metric, *(bank.objectives or [])}
    if "fidelity" not in scorers and wanted & set(METRICS) | ({"fidelity"} & wanted):
        scorers["fidelity"] = build_scorer("fidelity", device=device)
    if not scorers:
        raise ValueError(f"no scorer gives the metrics of this bank ({bank.scorer}, {sorted(wanted)}); "
                         "rescore it first (ecad-rescore without --validation)")
    return Scoring(scorers)
