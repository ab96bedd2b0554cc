"""Latency you can promise: how much one request's work varies from prompt to prompt.

A static schedule (ECAD's entries, the heuristics, fewer steps) does the same work for every
prompt; a threshold cache (FirstBlockCache, MagCache, cache-dit's DBCache) decides per input how
much to skip, so the same setting costs one prompt more than another. A server that promises a
latency budget must budget for the tail, not the median.

`measure` renders every prompt alone (batch 1, as a server without batching serves it) under each
point, prompt by prompt with the points in a fresh shuffled order for each prompt (so the
machine's drift falls on every point alike), and records the MACs that ran (`MacsCounter`) and the
seconds. `summarize` gives p5 / p50 / p95 of each and the margin over the median a budget needs
for 95% of requests to meet it (p95 / p50 - 1). No-cache does the same work for every prompt, so
its seconds' spread is this machine's own noise: a floor under every time margin.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Sequence

import numpy as np

QUANTILES = (5, 50, 95)


def measure(pipe: Any, points: Sequence[Any], prompts: Sequence[tuple[str, int]], *, run: Callable[[Any, list], Any],
            counter: Callable[[], Any], seed: int = 0, done: Sequence[dict] = (),
            on_prompt: Callable[[dict], None] = lambda record: None, progress: Callable[[int], None] = lambda n: None,
            ) -> list[dict]:
    """Per prompt: {"index", "prompt", "seed", "macs": {label: MACs}, "seconds": {label: s}}.

    ``run(point, items)`` renders with the point's method already enabled; ``counter()`` makes a
    `MacsCounter` for one image. ``done``: records of an earlier, interrupted pass (resumed after
    the last one). A point that raises is left out of that prompt's record."""
    records = list(done)
    rng = random.Random(seed)
    order = list(points)
    for index, item in enumerate(prompts):
        rng.shuffle(order)  # drawn for every prompt, resumed or not: the same orders as one pass
        if index < len(records):
            continue
        record = {"index": index, "prompt": item[0], "seed": item[1], "macs": {}, "seconds": {}}
        for p in order:
            try:
                p.method.enable(pipe, p.knob)
                count = counter()
                try:
                    t0 = time.perf_counter()
                    run(p, [item])
                    record["seconds"][p.label] = time.perf_counter() - t0
                finally:
                    count.remove()
                record["macs"][p.label] = count.total
            except Exception:  # noqa: BLE001 - a point that fails here is reported by its missing values
                pass
            finally:
                try:
                    p.method.disable(pipe)
                except Exception:  # noqa: BLE001
                    pass
            progress(1)
        records.append(record)
        on_prompt(record)
    return records


def summarize(records: Sequence[dict], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per label: p5/p50/p95 of per-image MACs and seconds, and the 95% margins over the median."""
    out = {}
    for label in labels:
        macs = np.array([r["macs"][label] for r in records if label in r["macs"]], dtype=float)
        seconds = np.array([r["seconds"][label] for r in records if label in r["seconds"]], dtype=float)
        if not len(macs):
            continue
        m5, m50, m95 = np.percentile(macs, QUANTILES)
        s5, s50, s95 = np.percentile(seconds, QUANTILES)
        out[label] = {"prompts": int(len(macs)), "macs": {"p5": m5, "p50": m50, "p95": m95},
                      "seconds": {"p5": s5, "p50": s50, "p95": s95},
                      "macs_margin_95": m95 / m50 - 1.0, "seconds_margin_95": s95 / s50 - 1.0,
                      "macs_distinct": int(len(np.unique(macs.round())))}
    return out
