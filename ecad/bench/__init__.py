"""ecad-bench: ECAD schedules side by side with heuristics and the caching methods people use today.

- `competitors`: one small adapter per method behind one interface (`enable(pipe, knob)` /
  `disable(pipe)`), including the cache-context shim that lets diffusers' built-in caches run on
  PixArt pipelines.
- `runner`: interleaved runs (same prompts, seeds, process), timing, quality, MACs, cache bytes.
- `report`: JSON, Markdown table, Pareto plots, image grid.
"""
