"""ecad-bench: ECAD schedules side by side with heuristics and the caching methods people use today.

- `competitors`: one small adapter per method behind one interface (`enable(pipe, knob)` /
  `disable(pipe)`), including the cache-context shim that lets diffusers' built-in caches run on
  PixArt pipelines.
- `tuning`: quality bars, bisection of threshold knobs, the deciding points of each bar.
- `runner`: tuning pass (quality, MACs, cache bytes), then interleaved timed rounds of the deciding
  points at several batch sizes (same prompts, seeds, process).
- `report`: verdict per bar (winner only beyond the timing spread), JSON, Markdown, plots, image grid.
"""
