"""Analysis and output of a benchmark run: per bar the picks (chosen on validation) and how they
fare on held-out images, the paired verdict, latency predictability, hypervolume and dominance,
the MACs check; JSON, Markdown, PNGs.

Hypervolume and dominance come in two kinds, each labelled: **MACs-only** over every point (its
MACs speedup and its validation quality: immune to machine noise, blind to what MACs miss) and
**timed** over the picks (their median speedup in the verdict rounds and their held-out quality).
Curves live in (speedup, quality) with both maximised; hypervolume is the area above one shared
reference point (speedup 1.0 and `PSNR_REF` dB, or reward 0), and ECAD's is compared with the
best other family's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecad.bench import latency
from ecad.bench.competitors import KIND_ORDER
from ecad.bench.runner import HELD_OUT, VALIDATION, Experiment, Point
from ecad.bench.tuning import Bar
from ecad.bench.verdict import REFERENCE, speed
from ecad.search.optimizer.hypervolume import hypervolume
from ecad.timing import paired_verdict

PSNR_REF = 20.0
SPEEDUP_REF = 1.0
GOAL_PSNR = (35.0, 30.0)
PLOT_PSNR_CAP = 60.0  # plots only: identical images (100 dB) would squash the interesting range
#: runtime MACs may differ from `image_macs` only for schedules that reuse guidance and forecast:
#: the unconditional half forecasts from its own recomputes (see docs/bench.md)
MACS_TOLERANCE = 1e-9


def hypervolume_2d(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by `points` (both coordinates maximised) above `ref`, in the units of the axes.

    The search's hypervolume (moocore, minimised objectives) with no normalisation: the points are
    negated and shifted so that `ref` lands on its reference corner (1, 1).
    """
    pts = [(s, q) for s, q in points if s is not None and q is not None]
    if not pts:
        return 0.0
    corner = -np.asarray(ref, dtype=float)
    return hypervolume(-np.asarray(pts, dtype=float), corner - 1.0, corner, reference=1.0)


def families(exp: Experiment) -> list[str]:
    seen: dict[str, None] = {}
    for kind in KIND_ORDER:
        for p in exp.points:
            if p.method.kind == kind:
                seen.setdefault(p.method.family)
    return list(seen)


def _ok(points: Sequence[Point]) -> list[Point]:
    return [p for p in points if p.status == "ok"]


def _q(p: Point, split: str, key: str) -> float | None:
    return p.quality.get(split, {}).get(key)


def _has_reward(exp: Experiment) -> bool:
    return any("reward" in p.quality.get(VALIDATION, {}) for p in exp.points)


def _kind(exp: Experiment, family: str) -> str:
    return next(p.method.kind for p in exp.points if p.method.family == family)


# -- per bar: the picks ------------------------------------------------------------------------


def _quality_summary(p: Point, split: str) -> dict[str, Any] | None:
    q = p.quality.get(split)
    if q is None:
        return None
    return {k: q.get(k) for k in ("psnr", "ssim", "reward_rel", "reward_rel_interval", "images", "fid", "pruned")
            if k in q}


def pick_summary(exp: Experiment, p: Point, bar: Bar) -> dict[str, Any]:
    held = p.quality.get(HELD_OUT)
    return {"label": p.label, "family": p.method.family, "selected_on": VALIDATION,
            "source": getattr(p.method, "sources", {}).get(p.knob),
            "validation": _quality_summary(p, VALIDATION), "held_out": _quality_summary(p, HELD_OUT),
            "passes_validation": bar.meets(p.quality.get(VALIDATION, {})),
            "passes_held_out": bar.meets(held) if held is not None else None,
            "finalists": sum(1 for q in exp.points if bar.key in q.finalist and q.method is p.method),
            "macs_speedup": p.macs_speedup, "predicted_speedup": p.predicted_speedup,
            "speed": _without_ratios(speed(exp.verdict_timings, p.label)),
            "selection_speed": _without_ratios(speed(exp.selection_timings, p.label))}


def _without_ratios(s: dict | None) -> dict | None:
    return None if s is None else {k: v for k, v in s.items() if k != "ratios"}


def bar_summaries(exp: Experiment) -> list[dict[str, Any]]:
    verdicts = exp.verdicts()
    out = []
    for bar in exp.bars:
        picks = exp.picks.get(bar.key, {})
        rows = {f: pick_summary(exp, p, bar) for f, p in picks.items()}
        order = sorted(rows, key=lambda f: -((rows[f]["speed"] or {}).get("median") or rows[f]["macs_speedup"] or 0))
        out.append({"bar": bar.name, "key": bar.key, "short": bar.short, "psnr": bar.psnr, "reward": bar.reward,
                    "picks": {f: rows[f] for f in order},
                    "verdicts": [v.to_dict() for v in verdicts if v.bar == bar]})
    return out


# -- hypervolume and dominance -----------------------------------------------------------------


def hypervolumes(exp: Experiment) -> dict[str, Any]:
    """Per family: MACs-only (every point, validation quality) and timed (its picks, held-out
    quality, median speedup in the verdict rounds); ECAD's against the best other family's."""
    has_reward = _has_reward(exp)
    out: dict[str, Any] = {"reference": {"speedup": SPEEDUP_REF, "psnr": PSNR_REF, "reward": 0.0}, "families": {}}
    picked = {id(p) for p in exp.picked_points()}
    for fam in families(exp):
        pts = [p for p in _ok(exp.points) if p.method.family == fam and VALIDATION in p.quality]
        if not pts or pts[0].method.kind == "reference":
            continue
        timed = [(p, s["median"]) for p in pts if id(p) in picked and (s := speed(exp.verdict_timings, p.label))]
        entry = {"kind": pts[0].method.kind,
                 "macs_psnr": hypervolume_2d([(p.macs_speedup, _q(p, VALIDATION, "psnr")) for p in pts],
                                             (SPEEDUP_REF, PSNR_REF)),
                 "timed_psnr": hypervolume_2d([(s, _q(p, HELD_OUT, "psnr")) for p, s in timed], (SPEEDUP_REF, PSNR_REF)),
                 "timed_points": len(timed)}
        if has_reward:
            entry["macs_reward"] = hypervolume_2d([(p.macs_speedup, _q(p, VALIDATION, "reward")) for p in pts],
                                                  (SPEEDUP_REF, 0.0))
            entry["timed_reward"] = hypervolume_2d([(s, _q(p, HELD_OUT, "reward")) for p, s in timed], (SPEEDUP_REF, 0.0))
        out["families"][fam] = entry
    others = {f: e for f, e in out["families"].items() if e["kind"] != "ecad"}
    out["best_other"] = {k: max(others, key=lambda f: others[f][k], default=None)
                         for k in ("macs_psnr", "timed_psnr") + (("macs_reward", "timed_reward") if has_reward else ())}
    return out


def _at_least_as_good(a: Point, b: Point, split: str, has_reward: bool) -> bool:
    qa, qb = a.quality.get(split, {}), b.quality.get(split, {})
    if qa.get("psnr") is None or qb.get("psnr") is None or qa["psnr"] < qb["psnr"]:
        return False
    return not has_reward or (qa.get("reward") or 0) >= (qb.get("reward") or 0)


def dominance(exp: Experiment) -> dict[str, Any]:
    """Which other points an ECAD point matches or beats (at least as fast and at least as good).

    MACs-only: every heuristic/baseline/competitor point against every ECAD point, by MACs speedup
    and validation quality. Timed: every other family's pick against ECAD's picks, by the paired
    per-round ratio (ECAD's median at least 1; "beyond noise" where its interval excludes 1) and
    held-out quality."""
    has_reward = _has_reward(exp)
    ecad_family = exp.ecad_families[0] if exp.ecad_families else None
    ecad = [p for p in _ok(exp.points) if p.method.family == ecad_family and VALIDATION in p.quality]
    others = [p for p in _ok(exp.points) if p.method.kind not in ("ecad", "reference") and VALIDATION in p.quality]
    macs = {}
    for p in others:
        better = [e for e in ecad if (e.macs_speedup or 0) >= (p.macs_speedup or 0)
                  and _at_least_as_good(e, p, VALIDATION, has_reward)]
        macs[p.label] = max(better, key=lambda e: e.macs_speedup or 0).label if better else None
    picks = exp.picked_points()
    mine = [p for p in picks if p.method.family == ecad_family and p.status == "ok"]
    timed = {}
    timings = exp.verdict_timings
    for p in [q for q in picks if q.method.kind not in ("ecad", "reference") and q.status == "ok"]:
        best = None
        for e in mine:
            if not (timings and timings.ratios.get(e.label) and timings.ratios.get(p.label)):
                continue
            v = paired_verdict(timings, e.label, p.label)
            if v.median >= 1.0 and _at_least_as_good(e, p, HELD_OUT, has_reward):
                if best is None or v.median > best["paired"]:
                    best = {"ecad": e.label, "paired": v.median, "interval": list(v.interval),
                            "beyond_noise": v.interval[0] > 1.0}
        timed[p.label] = best
    return {"ecad_family": ecad_family,
            "macs_only": {"points": macs, "matched_or_beaten": sum(v is not None for v in macs.values()),
                          "of": len(macs)},
            "timed": {"points": timed, "matched_or_beaten": sum(v is not None for v in timed.values()),
                      "beyond_noise": sum(bool(v and v["beyond_noise"]) for v in timed.values()), "of": len(timed)}}


def macs_check(exp: Experiment) -> dict[str, Any]:
    """Runtime MACs (`MacsCounter`) against `ecad.cost.image_macs` for every point whose work is fixed."""
    rows = []
    for p in _ok(exp.points):
        if p.analytic_macs_per_image and p.macs_per_image:
            rows.append((p.label, p.macs_per_image / p.analytic_macs_per_image - 1.0))
    off = [(label, d) for label, d in rows if abs(d) > MACS_TOLERANCE]
    return {"static_points": len(rows), "differ": len(off), "max_relative_difference": max((abs(d) for _, d in rows), default=0.0),
            "differing": dict(off)}


def latency_table(exp: Experiment) -> dict[str, Any]:
    labels = [REFERENCE] + [p.label for p in exp.picked_points() if p.status == "ok"]
    table = latency.summarize(exp.latency, labels)
    for label, row in table.items():
        p = exp.point(label)
        shorts = {b.key: b.short for b in exp.bars}
        row.update(family=p.method.family, kind=p.method.kind, picked=[shorts[k] for k in p.picked],
                   static=p.analytic_macs_per_image is not None or p.method.kind == "reference")
    return table


def settings_rows(exp: Experiment) -> list[dict[str, Any]]:
    """Per bar, the MACs speedup of each ECAD variant's pick and of the best other family's pick
    (all chosen on validation): the rows of ``docs/benchmarks/settings/results.json``."""
    names = {"ecad": "ecad", "ecad-transfer": "transfer", "ecad-resampled": "resampled"}
    rows = []
    for bar in exp.bars:
        picks = exp.picks.get(bar.key, {})
        others = {f: p for f, p in picks.items() if p.method.kind not in ("ecad", "reference")}
        best = max(others, key=lambda f: others[f].macs_speedup or 0, default=None)
        row: dict[str, Any] = {"steps": exp.setting.num_inference_steps, "bar": bar.short}
        for family, key in names.items():
            row[key] = picks[family].macs_speedup if family in picks else None
        row["best_other"] = others[best].macs_speedup if best else None
        row["best_other_name"] = others[best].label if best else None
        row["speedup"] = "MACs, picks chosen on validation prompts and seeds"
        row["passes_held_out"] = {key: bar.meets(picks[f].quality.get(HELD_OUT, {})) if f in picks else None
                                  for f, key in list(names.items()) + ([(best, "best_other")] if best else [])}
        row["wall"] = {key: (speed(exp.verdict_timings, picks[f].label) or {}).get("median") if f in picks else None
                       for f, key in list(names.items()) + ([(best, "best_other")] if best else [])}
        rows.append(row)
    return rows


# -- JSON -------------------------------------------------------------------------------------


def _timings_dict(timings) -> dict | None:
    if timings is None:
        return None
    return {"rounds": timings.rounds, "ratios": timings.ratios, "wall_s": timings.wall_s,
            "reference_wall_s": timings.reference_wall_s, "failed": timings.failed}


def experiment_dict(exp: Experiment) -> dict[str, Any]:
    picked = {id(p) for p in exp.picked_points()} | {id(exp.reference())}
    return {
        "setting": {"name": exp.name, **exp.setting.to_dict()},
        "splits": [{"name": s.name, "prompts": s.prompts, "seeds": s.seeds, "images": len(s.items())}
                   for s in exp.splits],
        "config": exp.config.to_dict(), "bars": [b.name for b in exp.bars], "seconds": exp.seconds,
        "stage_seconds": exp.stage_seconds, "reference_reproducible": exp.reference_reproducible,
        "ecad_families": exp.ecad_families,
        "bars_summary": bar_summaries(exp),
        "hypervolume": hypervolumes(exp), "dominance": dominance(exp), "macs_check": macs_check(exp),
        "latency": {"summary": latency_table(exp), "records": exp.latency},
        "settings_rows": settings_rows(exp),
        "timings": {"selection": _timings_dict(exp.selection_timings), "verdict": _timings_dict(exp.verdict_timings)},
        "points": [p.to_dict(per_image=id(p) in picked) for p in exp.points],
    }


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def write_json(path: Path, meta: dict, exp: Experiment) -> dict:
    from ecad.atomic import atomic_write_text

    data = _clean({"meta": meta, "experiment": experiment_dict(exp)})
    atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")
    return data


# -- Markdown -------------------------------------------------------------------------------------


def _f(x, fmt="{:.2f}", none="–"):
    return none if x is None else fmt.format(x)


def _rel(q: dict | None) -> str:
    if not q:
        return "–"
    rel, ci = q.get("reward_rel"), q.get("reward_rel_interval")
    return _f(rel, "{:.1%}") + (f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "")


def _speed_text(s: dict | None) -> str:
    if not s:
        return "–"
    lo, hi = s["interval"]
    return f"{s['median']:.2f}x [{lo:.2f}, {hi:.2f}]"


def _spread_text(s: dict | None) -> str:
    return "–" if not s else f"{s['min']:.2f}–{s['max']:.2f}"


def _md(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")[:300]


def _pass(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def markdown(meta: dict, exp: Experiment, data: dict) -> str:
    e = data["experiment"]
    has_reward = _has_reward(exp)
    val, held = exp.splits
    s = exp.setting
    lines = [f"# ecad-bench: {meta['model']}", "", f"Command: `{meta['command']}`", "",
             f"{meta['when']} · {meta['machine']} · torch {meta['versions'].get('torch')}, diffusers "
             f"{meta['versions'].get('diffusers')}, cache-dit {meta['versions'].get('cache_dit')} · "
             f"{meta['threads']} thread(s) · {s.num_inference_steps} steps, {s.height}x{s.width}, guidance "
             f"{s.guidance_scale} · batch {exp.config.batch_size} · run time {exp.seconds / 3600:.1f} h "
             f"({_stages(exp)})", ""]
    g = meta.get("git") or {}
    if meta.get("model_path"):
        lines += [f"Model `{meta['model_path']}` (commit {g.get('model_commit') or '–'}, transformer fingerprint "
                  f"{(meta.get('model_fingerprint') or '–')[:12]}), checkout {g.get('head') or '–'}; "
                  + "; ".join(f"{k} `{v}`" for k, v in (meta.get("banks") or {}).items()) + " (paths relative to this folder).", ""]
    calib = meta.get("calibration_split") or {}
    lines += ["**Splits** (prompts and seeds disjoint, asserted in code): "
              f"selection on **validation** {len(val.prompts)} prompts x {len(val.seeds)} seeds "
              f"({len(val.items())} images, seeds {_seed_text(val.seeds)}); verdict on **held-out** "
              f"{len(held.prompts)} prompts x {len(held.seeds)} seeds ({len(held.items())} images, seeds "
              f"{_seed_text(held.seeds)})"
              + (f"; the bank was calibrated on {len(calib.get('prompts', []))} prompts x seeds "
                 f"{_seed_text(calib.get('seeds', []))} and validated on {len(calib.get('validation_prompts', []))} "
                 "of the validation prompts with the calibration seeds" if calib else "") + ".", ""]
    lines += [_how(exp, meta, has_reward), ""]
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    lines.append("")
    lines += _verdict_section(exp, e, has_reward)
    lines += _fewer_steps_section(exp, has_reward)
    lines += _latency_section(exp, e)
    lines += _hv_section(e, has_reward)
    lines += _macs_section(e)
    lines += _points_section(exp, has_reward)
    failed = [p for p in exp.points if p.status != "ok"]
    lines += ["## Methods that could not run", ""]
    if failed:
        lines += ["| method | point | API | error |", "|---|---|---|---|"]
        lines += [f"| {p.method.family} | {p.label} | {p.method.api} | `{_md(p.error)}` |" for p in failed]
    else:
        lines.append("None: every point ran.")
    lines.append("")
    tried = {p.method.family: p.as_shipped for p in exp.points if p.as_shipped is not None}
    if tried:
        lines += ["## diffusers caches as shipped (without the cache-context shim)", "",
                  "Each is tried once on one image at its first knob value, without the shim.", "",
                  "| method | result without the shim |", "|---|---|"]
        lines += [f"| {fam} | {_md(result)} |" for fam, result in tried.items()]
        lines.append("")
    if exp.reference_reproducible is not None:
        lines += ["No-cache output after all methods ran: " + ("bit-identical to the first run." if exp.reference_reproducible
                  else "**changed** (a method left state behind)."), ""]
    lines += ["## Files", "", "- `results.json`: every measurement (per-image scores of the picks, every timed round, "
              "latency per prompt, errors); `settings_rows` holds the per-bar rows of docs/benchmarks/settings/",
              "- `pareto.png`: the picks, median speedup in the verdict rounds (95% interval) vs held-out quality",
              "- `pareto_macs.png`: every point, MACs speedup vs validation quality",
              "- `grid.png`: the same held-out prompt and seed across the picks"]
    return "\n".join(lines) + "\n"


def _stages(exp: Experiment) -> str:
    return ", ".join(f"{k} {v / 60:.0f} min" for k, v in exp.stage_seconds.items())


def _seed_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds)) or "–"


def _how(exp: Experiment, meta: dict, has_reward: bool) -> str:
    c = exp.config
    return ("How it was measured: every point rendered the validation images (quality, MACs that ran; a point "
            f"more than {c.prune_margin_db:g} dB below the lowest bar on the first {c.prune_after:.0%} of them "
            "stopped there); thresholds were bisected at each bar on validation. Per bar and family, the points that "
            f"clear the bar on validation and are the fastest by {meta.get('finalists_ranked_by', 'MACs')} are its "
            f"finalists; several were timed in {c.selection_rounds} interleaved rounds on validation images and the "
            "fastest became the family's **pick**. ECAD's candidates are the bank's entries whose stored validation "
            "scores come near a bar (the fastest few per bar); its pick is made on the same validation images as "
            "every other family's. The picks then rendered the held-out images (does each still clear its bar?) "
            f"and were timed together with no-cache in interleaved, shuffled rounds at batch {c.batch_size} "
            f"(no-cache re-timed around every {c.reference_every}; at least {c.min_rounds} rounds, more until every "
            f"verdict interval was narrower than {c.interval_width:.0%} of its median, at most {c.max_rounds}). "
            "Speedup = median over rounds of (no-cache seconds around the point / the point's seconds), with a 95% "
            "bootstrap interval of the median; **paired** = ECAD's pick's ratio over the other pick's in the same "
            "round, median and 95% interval over rounds: a winner only where it excludes 1. Min–max spreads are a "
            "display. PSNR/SSIM: against the no-cache image of the same prompt and seed (100 dB = identical)."
            + (" Reward: the bundled scenes reward relative to no-cache, 95% bootstrap interval over images; a bar's "
               "'reward within 2%' is judged on the mean." if has_reward else ""))


def _verdict_section(exp: Experiment, e: dict, has_reward: bool) -> list[str]:
    out = ["## Verdict per quality bar", ""]
    if not exp.ecad_families:
        out += ["**No ECAD front in this run** (no bank): only the other methods are compared.", ""]
    out += ["| bar | ECAD pick (held-out PSNR" + (", reward" if has_reward else "") + "; clears?) | best other pick "
            "(held-out; clears?) | paired ECAD / other, 95% interval | winner | speedups (spread) | MACs speedups | "
            "fitted cost |", "|---|---|---|---|---|---|---|---|"]
    for b in e["bars_summary"]:
        for v in b["verdicts"]:
            picks = b["picks"]
            mine, other = picks.get(v["ecad_family"]), picks.get(v["other_family"]) if v["other_family"] else None

            def desc(r):
                if r is None:
                    return "none clears it on validation"
                h = r["held_out"] or {}
                seeded = " (a seeded heuristic)" if r.get("source") == "heuristic" else ""
                return (f"{r['label']}{seeded} ({_f(h.get('psnr'), '{:.1f}')} dB" + (f", {_rel(h)}" if has_reward else "")
                        + f"; {_pass(r['passes_held_out'])})")

            paired = v["paired"]
            pv = f"{paired['median']:.2f}x [{paired['interval'][0]:.2f}, {paired['interval'][1]:.2f}] ({paired['rounds']} rounds)" \
                if paired else "–"
            sp = " / ".join(f"{_f((r or {}).get('speed') and r['speed']['median'], '{:.2f}x')} ({_spread_text((r or {}).get('speed'))})"
                            for r in (mine, other))
            macs = " / ".join(_f((r or {}).get("macs_speedup"), "{:.2f}x") for r in (mine, other))
            fitted = " / ".join(_f((r or {}).get("predicted_speedup"), "{:.2f}x") for r in (mine, other))
            name = b["bar"] + (f" ({v['ecad_family']})" if len(exp.ecad_families) > 1 else "")
            out.append(f"| {name} | {desc(mine)} | {desc(other)} | {pv} | {v['winner'] or 'none'} | {sp} | {macs} | {fitted} |")
    out += ["", "Every pick was chosen on the validation split (`\"selected_on\": \"validation\"` in results.json); "
            "*clears?* says whether it still clears the bar on the held-out images. The best other method is the "
            "non-ECAD family whose pick was fastest in the same rounds. *fitted cost*: the speedup a cost model "
            "fitted on this machine predicts for a schedule (– where the method has no static schedule).", ""]
    for b in e["bars_summary"]:
        out += [f"### {b['bar']}", "",
                "| family | pick (finalists) | validation PSNR | " + ("validation reward | " if has_reward else "")
                + "held-out PSNR | " + ("held-out reward | " if has_reward else "") + "clears on held-out | "
                "speedup [95%] (spread) | MACs speedup | fitted cost |",
                "|---|---|---|" + ("---|" if has_reward else "") + "---|" + ("---|" if has_reward else "") + "---|---|---|---|"]
        for fam, r in b["picks"].items():
            v, h = r["validation"] or {}, r["held_out"] or {}
            src = " (seeded heuristic)" if r.get("source") == "heuristic" else ""
            out.append(f"| {fam} | {r['label']}{src} ({r['finalists']}) | {_f(v.get('psnr'), '{:.1f}')} | "
                       + (f"{_rel(v)} | " if has_reward else "") + f"{_f(h.get('psnr'), '{:.1f}')} | "
                       + (f"{_rel(h)} | " if has_reward else "") + f"{_pass(r['passes_held_out'])} | "
                       f"{_speed_text(r['speed'])} ({_spread_text(r['speed'])}) | {_f(r['macs_speedup'], '{:.2f}x')} | "
                       f"{_f(r['predicted_speedup'], '{:.2f}x')} |")
        ran = {p.method.family for p in _ok(exp.points)}
        missing = [f for f in families(exp) if f not in b["picks"] and _kind(exp, f) != "reference" and f in ran]
        if missing:
            out += ["", "No point clears this bar on validation: " + ", ".join(missing) + "."]
        out.append("")
    return out


def _fewer_steps_section(exp: Experiment, has_reward: bool) -> list[str]:
    pts = [p for p in _ok(exp.points) if p.method.family == "fewer-steps"]
    if not pts:
        return []
    out = ["## Fewer denoising steps, no caching", "",
           f"Each n against the no-cache image at {exp.setting.num_inference_steps} steps of the same prompt and seed "
           "(validation split; *partial*: stopped after the first share of the images, far below every bar).", "",
           "| steps | MACs speedup | PSNR | SSIM |" + (" reward vs no-cache |" if has_reward else ""),
           "|---|---|---|---|" + ("---|" if has_reward else "")]
    for p in sorted(pts, key=lambda p: p.knob):
        q = p.quality.get(VALIDATION, {})
        out.append(f"| {p.knob}{' (partial)' if q.get('pruned') else ''} | {_f(p.macs_speedup, '{:.2f}x')} | "
                   f"{_f(q.get('psnr'), '{:.1f}')} | {_f(q.get('ssim'), '{:.3f}')} |" + (f" {_rel(q)} |" if has_reward else ""))
    return out + [""]


def _latency_section(exp: Experiment, e: dict) -> list[str]:
    table = e["latency"]["summary"]
    if not table:
        return []
    n = max(r["prompts"] for r in table.values())
    out = ["## Latency you can promise", "",
           f"Each pick rendered {n} held-out prompts one at a time (batch 1, as a server without batching serves "
           "them), prompt by prompt in a shuffled order. Per image: MACs that ran and seconds, p5 / p50 / p95 over the "
           "prompts, and the margin over the median a budget needs for 95% of requests to meet it (p95 / p50 - 1). "
           "No-cache does the same work for every prompt: its seconds' margin is this machine's own noise.", "",
           "| family | point (bars) | static | GMACs p5 / p50 / p95 | MACs margin for 95% | ms p5 / p50 / p95 | time margin for 95% |",
           "|---|---|---|---|---|---|---|"]
    rows = sorted(table.items(), key=lambda kv: (kv[1]["family"] != "no-cache", -kv[1]["macs_margin_95"], kv[0]))
    for label, r in rows:
        m, sec = r["macs"], r["seconds"]
        out.append(f"| {r['family']} | {label} ({', '.join(r['picked']) or '–'}) | {'yes' if r['static'] else 'no'} | "
                   f"{m['p5'] / 1e9:.3f} / {m['p50'] / 1e9:.3f} / {m['p95'] / 1e9:.3f} | {r['macs_margin_95']:.1%} | "
                   f"{sec['p5'] * 1e3:.0f} / {sec['p50'] * 1e3:.0f} / {sec['p95'] * 1e3:.0f} | {r['seconds_margin_95']:.1%} |")
    out += ["", "Threshold caches decide per input, so at batch 1 they also make other images than at the batch "
            "they were tuned at; their quality here is not re-judged.", ""]
    return out


def _hv_section(e: dict, has_reward: bool) -> list[str]:
    hv, dom = e["hypervolume"], e["dominance"]
    out = ["## Hypervolume and dominance", "",
           "**MACs-only**: every point, MACs speedup × validation quality. **Timed**: the picks only, median "
           "speedup in the verdict rounds × held-out quality. Reference point: speedup 1 and 20 dB (reward 0).", "",
           "| family | kind | HV MACs-only (speedup×dB) | HV timed (speedup×dB) |"
           + (" HV MACs-only (speedup×reward) | HV timed (speedup×reward) |" if has_reward else ""),
           "|---|---|---|---|" + ("---|---|" if has_reward else "")]
    for fam, r in hv["families"].items():
        out.append(f"| {fam} | {r['kind']} | {r['macs_psnr']:.1f} | {r['timed_psnr']:.1f} ({r['timed_points']} picks) |"
                   + (f" {r['macs_reward']:.3f} | {r['timed_reward']:.3f} |" if has_reward else ""))
    best = hv["best_other"]
    ecad = hv["families"].get(dom["ecad_family"] or "", {})
    if ecad:
        out += ["", "ECAD against the best other family: " + "; ".join(
            f"{k.replace('_', ' ')} {ecad[k]:.2f} vs {best[k]} {hv['families'][best[k]][k]:.2f}"
            for k in best if best[k]) + "."]
    m, t = dom["macs_only"], dom["timed"]
    out += ["", f"MACs-only: {m['matched_or_beaten']} of {m['of']} heuristic, baseline and competitor points have an "
            "ECAD point at least as fast (MACs) and at least as good (validation PSNR" + (" and reward" if has_reward else "")
            + f"). Timed: {t['matched_or_beaten']} of {t['of']} other picks have an ECAD pick at least as fast (paired "
            f"median) and as good on held-out, {t['beyond_noise']} of them beyond noise (paired interval above 1).", ""]
    return out


def _macs_section(e: dict) -> list[str]:
    c = e["macs_check"]
    out = ["## MACs: runtime counter vs `ecad.cost.image_macs`", "",
           f"{c['static_points']} points do fixed work (schedules, fewer steps); the MACs counted while they ran differ "
           f"from `image_macs` for {c['differ']} of them (largest relative difference {c['max_relative_difference']:.2e})."]
    if c["differing"]:
        out.append(" Differing (guidance reuse with forecasts: the unconditional half forecasts from its own "
                   "recomputes): " + ", ".join(f"{k} {v:+.2e}" for k, v in list(c["differing"].items())[:10]) + ".")
    return out + [""]


def _points_section(exp: Experiment, has_reward: bool) -> list[str]:
    out = ["## Every point (validation split)", "",
           "MACs speedup: work that actually ran. *pruned*: stopped early, far below every bar.", "",
           "| family | point | MACs speedup | fitted cost | PSNR | SSIM |" + (" reward vs no-cache |" if has_reward else "")
           + " images | cache KiB/img | finalist at | pick at |",
           "|---|---|---|---|---|---|" + ("---|" if has_reward else "") + "---|---|---|---|"]
    for p in _ok(exp.points):
        q = p.quality.get(VALIDATION, {})
        out.append(f"| {p.method.family} | {p.label} | {_f(p.macs_speedup, '{:.2f}x')} | {_f(p.predicted_speedup, '{:.2f}x')} | "
                   f"{_f(q.get('psnr'), '{:.1f}')} | {_f(q.get('ssim'), '{:.3f}')} |" + (f" {_rel(q)} |" if has_reward else "")
                   + f" {q.get('images', '–')}{' pruned' if q.get('pruned') else ''} | "
                   f"{_f(p.cache_bytes_per_image and p.cache_bytes_per_image / 1024, '{:.1f}')} | "
                   f"{', '.join(p.finalist) or '–'} | {', '.join(p.picked) or '–'} |")
    return out + [""]


# -- plots ----------------------------------------------------------------------------------------


def _style(kind: str):
    if kind == "ecad":
        return dict(lw=2.2, marker="*", ms=11, zorder=5)
    if kind == "reference":
        return dict(color="grey", marker="s", ms=8, lw=0)
    return dict(lw=1.1, marker={"baseline": "D", "heuristic": "o"}.get(kind, "^"), ms=5,
                ls="-" if kind in ("heuristic", "baseline") else "--")


def _front(xs, ys):
    n = len(xs)
    keep = [j for j in range(n) if not any(xs[k] >= xs[j] and ys[k] >= ys[j] and (xs[k] > xs[j] or ys[k] > ys[j])
                                           for k in range(n))]
    return sorted(keep, key=lambda j: xs[j])


def plot_pareto_macs(exp: Experiment, path: Path) -> None:
    """Every point: MACs speedup vs validation PSNR (and reward); each family's front as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("psnr", f"PSNR vs no-cache (dB, ≥{PLOT_PSNR_CAP:.0f} drawn at {PLOT_PSNR_CAP:.0f})")]
    if _has_reward(exp):
        metrics.append(("reward", "scenes reward"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 5.5), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, (key, name) in zip(axes[0], metrics):
        for i, fam in enumerate(families(exp)):
            pts = [p for p in _ok(exp.points) if p.method.family == fam and p.macs_speedup
                   and _q(p, VALIDATION, key) is not None]
            if not pts:
                continue
            xs = [p.macs_speedup for p in pts]
            ys = [min(_q(p, VALIDATION, key), PLOT_PSNR_CAP) if key == "psnr" else _q(p, VALIDATION, key) for p in pts]
            style = {"color": "black" if fam == "ecad" else cmap(i % 20), **_style(pts[0].method.kind)}
            front = _front(xs, ys)
            ax.plot([xs[j] for j in front], [ys[j] for j in front], label=fam, **style)
            rest = [j for j in range(len(xs)) if j not in front]
            ax.plot([xs[j] for j in rest], [ys[j] for j in rest], ls="none", marker=style.get("marker", "o"),
                    ms=3, color=ax.lines[-1].get_color(), alpha=0.4)
        if key == "psnr":
            for g in GOAL_PSNR:
                ax.axhline(g, color="red", lw=0.7, ls=":")
        ax.set_xlabel("MACs speedup vs no-cache (MACs-only)")
        ax.set_ylabel(f"{name}, validation")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"ecad-bench: every point, {exp.setting.num_inference_steps} steps, {exp.setting.height}x{exp.setting.width}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto_timed(exp: Experiment, path: Path) -> None:
    """The picks: median speedup in the verdict rounds (95% interval) vs held-out PSNR (and reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("psnr", "PSNR vs no-cache (dB)")] + ([("reward_rel", "reward vs no-cache")] if _has_reward(exp) else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 5.5), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, (key, name) in zip(axes[0], metrics):
        for i, fam in enumerate(families(exp)):
            pts = [(p, s) for p in exp.picked_points() if p.method.family == fam and p.status == "ok"
                   and (s := speed(exp.verdict_timings, p.label)) and _q(p, HELD_OUT, key) is not None]
            if not pts:
                continue
            xs = [s["median"] for _, s in pts]
            err = [[s["median"] - s["interval"][0] for _, s in pts], [s["interval"][1] - s["median"] for _, s in pts]]
            ys = [_q(p, HELD_OUT, key) for p, _ in pts]
            style = _style(pts[0][0].method.kind)
            ax.errorbar(xs, ys, xerr=err, ls="none", marker=style.get("marker", "o"), ms=style.get("ms", 5),
                        color="black" if fam == "ecad" else cmap(i % 20), label=fam, capsize=2)
        if key == "psnr":
            for g in GOAL_PSNR:
                ax.axhline(g, color="red", lw=0.7, ls=":")
        else:
            ax.axhline(0.98, color="red", lw=0.7, ls=":")
        ax.set_xlabel("wall-clock speedup vs no-cache (median of the verdict rounds, 95% interval)")
        ax.set_ylabel(f"{name}, held-out")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle("ecad-bench: the picks (chosen on validation), timed, judged on held-out")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(exp: Experiment, path: Path, scale: int = 3) -> None:
    """No-cache and every pick on the first held-out prompt and seed, ordered by family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [exp.reference()] + sorted((p for p in exp.picked_points() if HELD_OUT in p.first_image),
                                       key=lambda p: (KIND_ORDER.index(p.method.kind), p.method.family, p.label))
    shown = [p for p in shown if HELD_OUT in p.first_image]
    if not shown:
        return
    cols = min(8, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, shown):
        img = p.first_image[HELD_OUT].clamp(0, 1).permute(1, 2, 0).numpy()
        ax.imshow(np.kron(img, np.ones((scale, scale, 1))) if scale > 1 else img, interpolation="nearest")
        q = p.quality.get(HELD_OUT, {})
        ax.set_title(f"{p.label}\n{_f(q.get('psnr'), '{:.1f}')} dB", fontsize=6)
    prompt, seed = exp.splits[1].items()[0]
    fig.suptitle(f"\"{prompt}\" (seed {seed})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, meta: dict, exp: Experiment) -> dict:
    from ecad.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    data = write_json(out / "results.json", meta, exp)
    atomic_write_text(out / "README.md", markdown(meta, exp, data))
    plot_pareto_timed(exp, out / "pareto.png")
    plot_pareto_macs(exp, out / "pareto_macs.png")
    image_grid(exp, out / "grid.png")
    return data
