"""The in-process executor: one evaluator, built lazily from the recipe, used for every job."""

from __future__ import annotations

from ecad.search.optimizer.evaluation import CandidateEvaluator, Executor, Recipe


class LocalExecutor(Executor):
    def __init__(self, recipe: Recipe, evaluator: CandidateEvaluator | None = None):
        self.recipe = recipe
        self._evaluator = evaluator

    @property
    def evaluator(self) -> CandidateEvaluator:
        if self._evaluator is None:
            self._evaluator = self.recipe.build()
        return self._evaluator

    def compute_references(self):
        return self.evaluator.compute_references()

    def set_references(self, references):
        self.evaluator.set_references(references)

    def evaluate(self, jobs, on_result):
        for job in jobs:
            on_result(job.key, self.evaluator.evaluate(job.genes, job.samples))
