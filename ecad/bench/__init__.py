"""ecad-bench: ECAD schedules side by side with heuristics, fewer steps and the caching methods people use.

- `competitors`: one small adapter per method behind one interface (`enable(pipe, knob)` /
  `disable(pipe)`), the bank families (as made, moved by noise level, resampled), the cache-context
  shim that lets diffusers' built-in caches run on PixArt pipelines, and the runtime MACs counter.
- `tuning`: quality bars, bisection of threshold knobs, finalists, the bank prefilter.
- `runner`: tuning and picks on the validation split, the picks on held-out prompts and seeds,
  timed rounds, latency predictability; one experiment, resumable through `store`.
- `verdict`: per bar, ECAD's pick against the best other pick, paired round by round.
- `latency`: per-image MACs and seconds over many prompts (what a latency budget must cover).
- `store`: finished work on disk, so a rerun resumes.
- `report`: JSON, Markdown, plots; hypervolume and dominance (MACs-only and timed), the MACs check.
"""
