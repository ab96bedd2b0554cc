"""Ray backend: one long-lived actor per GPU (or per CPU worker) holding pipeline and scorer.

Each actor rebuilds its evaluator from the same recipe as the in-process executor (sent as JSON
with its kind, see ``ecad.search.recipes``), so both produce the same numbers. Each actor has at most one candidate in flight; when an actor
dies (OOM, node lost, segfault) it is replaced by a fresh one and its candidate is retried.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from ecad.search.optimizer.evaluation import CandidateResult, Executor, Recipe

log = logging.getLogger(__name__)


class _EvaluatorActor:
    """Body of the Ray actor (wrapped with ray.remote at runtime, so ray stays optional)."""

    def __init__(self, recipe: dict, num_threads: int | None, device: str | None):
        from ecad.search.recipes import recipe_from_json

        recipe = dict(recipe)
        if device and "device" in recipe:
            # Ray sets CUDA_VISIBLE_DEVICES per actor: the actor's GPU is always "cuda".
            recipe["device"] = device
        self.evaluator = recipe_from_json(recipe).build()
        # only if the evaluator uses torch: importing it just to set threads costs seconds
        if num_threads and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(num_threads)

    def pid(self) -> int:
        return os.getpid()

    def compute_references(self):
        return self.evaluator.compute_references()

    def set_references(self, references) -> bool:
        self.evaluator.set_references(references)
        return True

    def evaluate(self, genes, samples) -> dict:
        return self.evaluator.evaluate(genes, samples).to_dict()


class RayExecutor(Executor):
    def __init__(
        self,
        recipe: Recipe,
        *,
        address: str = "auto",
        num_workers: int | None = None,
        gpus_per_worker: float | None = None,
        cpus_per_worker: float = 1.0,
        num_threads: int | None = 1,
        max_retries: int = 3,
        init_kwargs: dict[str, Any] | None = None,
    ):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            if address == "local":
                # a private cluster on this machine: let its workers import this ecad checkout
                # even when it is not pip-installed
                import ecad

                source = str(Path(ecad.__file__).resolve().parents[1])
                path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
                options = {"include_dashboard": False, "runtime_env": {"env_vars": {"PYTHONPATH": path}}}
                ray.init(**{**options, **(init_kwargs or {})})
            else:
                ray.init(address=address, **(init_kwargs or {}))
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if gpus else 0.0
        if num_workers is None:
            num_workers = gpus if gpus_per_worker else max(1, int(resources.get("CPU", 1) // cpus_per_worker))
        self.num_workers = num_workers
        self.recipe = recipe
        self.max_retries = max_retries
        self._actor_class = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0)(
            _EvaluatorActor
        )
        from ecad.search.recipes import recipe_to_json

        self._actor_args = (recipe_to_json(recipe), num_threads, "cuda" if gpus_per_worker else None)
        self._references_ref = None
        self.actors = [self._new_actor() for _ in range(num_workers)]
        self.replaced_actors = 0
        # wait until every actor has loaded its evaluator: a broken recipe fails here, clearly
        ray.get([actor.pid.remote() for actor in self.actors])

    def _new_actor(self):
        actor = self._actor_class.remote(*self._actor_args)
        if self._references_ref is not None:
            actor.set_references.remote(self._references_ref)
        return actor

    def compute_references(self):
        return self.ray.get(self.actors[0].compute_references.remote())

    def set_references(self, references):
        self._references_ref = self.ray.put(references)
        self.ray.get([actor.set_references.remote(self._references_ref) for actor in self.actors])

    def evaluate(self, jobs, on_result):
        ray = self.ray
        pending = list(jobs)[::-1]  # pop() from the end keeps submission order
        attempts: dict[str, int] = {}
        in_flight: dict[Any, tuple[int, Any]] = {}  # object ref -> (actor index, job)
        idle = list(range(len(self.actors)))[::-1]
        while pending or in_flight:
            while pending and idle:
                index = idle.pop()
                job = pending.pop()
                ref = self.actors[index].evaluate.remote(job.genes, job.samples)
                in_flight[ref] = (index, job)
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                index, job = in_flight.pop(ref)
                key = job.key
                try:
                    result = CandidateResult.from_dict(ray.get(ref))
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                    attempts[key] = attempts.get(key, 0) + 1
                    if attempts[key] > self.max_retries:
                        raise RuntimeError(f"candidate {key[:12]} killed {attempts[key]} actors; giving up") from err
                    log.warning("Ray actor %d died (%s); replacing it and retrying %s", index, type(err).__name__, key[:12])
                    try:
                        ray.kill(self.actors[index])
                    except Exception:  # already gone
                        pass
                    self.actors[index] = self._new_actor()
                    self.replaced_actors += 1
                    pending.append(job)
                else:
                    on_result(key, result)
                idle.append(index)

    def close(self):
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors = []
