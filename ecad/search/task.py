"""The search over one model's cache schedules, built in the driver without loading its weights.

:func:`build_model_task` reads the block layout and fingerprint from the transformer on the meta
device, builds the :class:`~ecad.search.genome.Genome` of the searched actions, and seeds it
(``seeding``). The result is the optimizer's ``SearchTask`` plus what the model side needs again
later (:class:`ModelTask`: the genome, a typed :class:`ModelDescription`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ecad.paths import model_name
from ecad.schedule import BlockLayout
from ecad.search.evaluator import COST_LABELS, RenderRecipe
from ecad.search.genome import Genome
from ecad.search.optimizer.task import QualityFloor, SearchTask
from ecad.search.seeding import bank_seeds, heuristic_seeds


@dataclass(frozen=True)
class ModelDescription:
    """What a model search is over: recorded under "task" in its run folder's config (which a
    resumed run must match), and named on its plot."""

    name: str  # "<model> <setting>"
    model: str
    model_fingerprint: str  # of the transformer's config (``ecad.bank.fingerprint``)
    layout: BlockLayout
    scorer: str
    cost: str
    cost_label: str
    quality_label: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layout": self.layout.to_dict()}


@dataclass(kw_only=True)
class ModelTask(SearchTask):
    """A ``SearchTask`` over a model's schedules: its ``genome`` decodes a gene vector into the
    ``CacheSchedule`` it stands for, whose hash is the candidate's key. The optimizer's space, the
    setting, the samples and the quality metric are the genome's and the recipe's."""

    recipe: RenderRecipe
    genome: Genome
    description: ModelDescription
    space: Any = field(init=False)
    key_fn: Any = field(init=False, repr=False)
    setting: Any = field(init=False)
    num_samples: int = field(init=False)
    quality_metric: str = field(init=False)

    def __post_init__(self) -> None:
        self.space, self.key_fn = self.genome.space, self.genome.key
        self.setting, self.quality_metric = self.recipe.setting, self.recipe.scorer
        self.num_samples = len(self.recipe.prompts) * len(self.recipe.seeds)


def build_model_task(recipe: RenderRecipe, objectives: tuple[str, ...] = (), *,
                     floors: tuple[QualityFloor, ...] = (), seed_banks=()) -> ModelTask:
    """The search over ``recipe``'s model: genome, seed schedules (every heuristic it can express,
    then the entries of ``seed_banks``), description.

    ``objectives``: metric names maximised beside cost (empty: the scorer's score); ``floors``:
    constraints of selection (``QualityFloor``). Raises ``BankError`` for a seed bank of
    another layout or step count.
    """
    from ecad.adapters import get_adapter
    from ecad.bank import fingerprint
    from ecad.generate import transformer_skeleton

    transformer, config = transformer_skeleton(recipe.model)
    layout = get_adapter(transformer).layout(transformer)
    genome = Genome(layout, recipe.setting.num_inference_steps, recipe.actions)
    seed_schedules = heuristic_seeds(genome)
    for bank in seed_banks:
        seed_schedules += bank_seeds(genome, bank)
    return ModelTask(
        recipe=recipe,
        genome=genome,
        seed_schedules=seed_schedules,
        objectives=tuple(objectives),
        floors=tuple(floors),
        description=ModelDescription(name=f"{model_name(recipe.model)} {recipe.setting.name}", model=recipe.model,
                                     model_fingerprint=fingerprint(config), layout=layout, scorer=recipe.scorer,
                                     cost=recipe.cost, cost_label=COST_LABELS[recipe.cost],
                                     quality_label=recipe.scorer),
    )
