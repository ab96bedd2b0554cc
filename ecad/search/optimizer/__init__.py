"""The model-free optimizer: a resumable multi-objective genetic search over gene vectors.

It knows gene vectors, results and run folders, never a model: no torch, no diffusers (what a
gene vector means for a pipeline is ``ecad.search.genome``; how one is rendered and scored,
``ecad.search.evaluator``). Read ``loop.py`` first: it tells a run's story and names the rest —
``nsga.py`` (pymoo NSGA-II through ask/tell), ``run_folder.py`` (config, state, memo),
``space.py`` (bit and integer gene spaces), ``noise.py`` (racing), ``surrogate.py``
(pre-screening), ``hypervolume.py`` (fronts and hypervolume), ``task.py`` (what is searched),
``evaluation.py`` (results, evaluators, executors), ``plot.py``, ``synthetic.py`` (a problem with
a known front, for tests and benchmarks).
"""
