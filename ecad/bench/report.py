"""Analysis and output of a benchmark: the verdict per quality bar, hypervolume, dominance, JSON,
Markdown, PNGs.

Per bar (`ecad.bench.tuning.Bar`), each family's fastest point that clears it is compared by its
timed rounds: median speedup and the (min, max) spread of the per-round ratios. ECAD's fastest
point and the best other method's are called a **win** only when their spreads do not overlap;
otherwise the bar is a **tie within spread**. Curves live in (speedup, quality) with both
maximised. Hypervolume is the area a family's points dominate above one shared reference point
(speedup 1.0 and `PSNR_REF` dB, or reward 0), so a family scores only what it gains over no caching
at usable quality.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecad.bench.competitors import KIND_ORDER
from ecad.bench.runner import Experiment, Point, batch_split
from ecad.bench.tuning import Bar
from ecad.search.optimizer.hypervolume import hypervolume

PSNR_REF = 20.0
SPEEDUP_REF = 1.0
GOAL_PSNR = (35.0, 30.0)
HELD_OUT = "held-out"
PLOT_PSNR_CAP = 60.0  # plots only: identical images (100 dB) would squash the interesting range


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


def _ok(points: Sequence[Point]) -> list[Point]:
    return [p for p in points if p.status == "ok" and p.speedup is not None]


def _q(p: Point, split: str, key: str) -> float | None:
    return p.quality.get(split, {}).get(key)


def families(exp: Experiment) -> list[str]:
    seen: dict[str, None] = {}
    for kind in KIND_ORDER:
        for p in exp.points:
            if p.method.kind == kind:
                seen.setdefault(p.method.family)
    return list(seen)


def _best(points: Sequence[Point], bar: Bar, split: str, speed) -> Point | None:
    """The fastest point that clears `bar`: among the timed ones if any was timed (their speed is the
    median of interleaved rounds; a screening speed is one run and may flatter an untimed point)."""
    good = [p for p in points if bar.meets(p.quality.get(split, {}))]
    timed = [p for p in good if p.speedup_source == "rounds"]
    return max(timed or good, key=speed, default=None)


def point_summary(p: Point, split: str, sizes: Sequence[int], speed) -> dict[str, Any]:
    q = p.quality.get(split, {})
    return {"label": p.label, "speedup": speed(p), "speedup_source": p.speedup_source,
            "speed": {str(bs): p.speed(bs) for bs in sizes}, "macs_speedup": p.macs_speedup,
            "psnr": q.get("psnr"), "reward_rel": q.get("reward_rel"), "reward_rel_interval": q.get("reward_rel_interval")}


def verdict(mine: dict | None, other: dict | None, other_name: str | None, batch_size: int) -> dict[str, Any]:
    """ECAD's fastest point vs the best other method's at one batch size: winner only beyond the spread."""
    def spread(d):
        return (d or {}).get("speed", {}).get(str(batch_size))

    a, b = spread(mine), spread(other)
    out: dict[str, Any] = {"batch_size": batch_size, "ecad": a, "other": b, "other_method": other_name}
    if mine is None and other is None:
        out["verdict"] = "no method reaches the bar"
    elif other is None:
        out["verdict"], out["winner"] = "ECAD wins: no other method reaches the bar", "ecad"
    elif mine is None:
        out["verdict"], out["winner"] = f"{other_name} wins: ECAD reaches no point", other_name
    elif a is None or b is None:
        out["verdict"] = "not timed at this batch size"
    else:
        out["ratio"] = a["median"] / b["median"]
        # Both points ran in every round (interleaved), so each round also gives a paired ratio in which
        # the machine's drift of that round cancels; reported beside the verdict, which is unchanged.
        if a.get("ratios") and b.get("ratios") and len(a["ratios"]) == len(b["ratios"]):
            paired = [x / y for x, y in zip(a["ratios"], b["ratios"])]
            out["paired"] = {"median": statistics.median(paired), "min": min(paired), "max": max(paired),
                             "rounds": len(paired)}
        if min(a["rounds"], b["rounds"]) < 2:
            out["verdict"] = "one round: no spread to judge by"
        elif a["min"] > b["max"]:
            out["verdict"], out["winner"] = "ECAD wins beyond the spread", "ecad"
        elif b["min"] > a["max"]:
            out["verdict"], out["winner"] = f"{other_name} wins beyond the spread", other_name
        else:
            out["verdict"] = "tie within spread"
    return out


def _verdict_at(ok: Sequence[Point], bar: Bar, split: str, batch_size: int, sizes: Sequence[int]) -> dict[str, Any]:
    """The verdict at a smaller timing batch size, from the points timed there that clear the bar
    with the images they make at that size: a batch-dependent method's quality at batch 1 is its
    own (`batch_split`); a schedule's is the same at any batch size."""
    def quality(p: Point) -> dict[str, Any]:
        return p.quality.get(batch_split(split, batch_size), {}) if p.method.batch_dependent else p.quality.get(split, {})

    best: dict[str, Point] = {}
    for p in ok:
        if p.method.kind != "reference" and p.speed(batch_size) and bar.meets(quality(p)):
            fam = p.method.family
            if fam not in best or p.speed(batch_size)["median"] > best[fam].speed(batch_size)["median"]:
                best[fam] = p
    mine = best.pop("ecad", None)
    other = max(best, key=lambda f: best[f].speed(batch_size)["median"], default=None)

    def summary(p: Point | None) -> dict | None:
        if p is None:
            return None
        q = quality(p)
        return {"label": p.label, "speed": {str(bs): p.speed(bs) for bs in sizes}, "psnr": q.get("psnr"),
                "reward_rel": q.get("reward_rel"), "reward_rel_interval": q.get("reward_rel_interval")}

    out = verdict(summary(mine), summary(best.get(other)), other, batch_size)
    out["ecad_point"], out["other_point"] = summary(mine), summary(best.get(other))
    return out


def summarize(exp: Experiment, split: str = HELD_OUT, speed_key: str = "speedup") -> dict[str, Any]:
    """Per bar: each family's fastest point and the verdict; per family: hypervolumes; per point: ECAD dominance.

    Only points scored on `split` count (on the calibration split: the deciding points)."""
    ok = [p for p in _ok(exp.points) if split in p.quality]
    has_reward = any("reward" in p.quality.get(split, {}) for p in ok)
    bars = [b for b in exp.bars if has_reward or not b.reward]
    sizes = exp.timing_batch_sizes or [exp.batch_size]
    ecad = [p for p in ok if p.method.kind == "ecad"]
    speed = (lambda p: getattr(p, speed_key) or 0.0)
    out: dict[str, Any] = {"split": split, "speed": speed_key, "hypervolume_reference": {
        "speedup": SPEEDUP_REF, "psnr": PSNR_REF, "reward": 0.0}, "families": {}, "bars": [], "dominance": {}}
    for fam in families(exp):
        pts = [p for p in ok if p.method.family == fam]
        all_pts = [p for p in exp.points if p.method.family == fam]
        entry: dict[str, Any] = {
            "kind": all_pts[0].method.kind, "api": all_pts[0].method.api, "uses_shim": all_pts[0].method.uses_shim,
            "knob": all_pts[0].method.knob_name, "points": len(all_pts), "ok": len(pts),
            "errors": sorted({p.error for p in all_pts if p.error}),
            "hv_psnr": hypervolume_2d([(speed(p), _q(p, split, "psnr")) for p in pts], (SPEEDUP_REF, PSNR_REF)),
            "best": {},
        }
        if has_reward:
            entry["hv_reward"] = hypervolume_2d([(speed(p), _q(p, split, "reward")) for p in pts], (SPEEDUP_REF, 0.0))
        for b in bars:
            best = _best(pts, b, split, speed)
            entry["best"][b.key] = None if best is None else point_summary(best, split, sizes, speed)
        out["families"][fam] = entry
    for b in bars:
        rows = {f: e["best"][b.key] for f, e in out["families"].items() if e["kind"] != "reference" and e["best"][b.key]}
        others = [(f, r) for f, r in rows.items() if out["families"][f]["kind"] != "ecad"]
        best_other = max(others, key=lambda fr: fr[1]["speedup"], default=(None, None))
        mine = rows.get("ecad")
        verdicts = [verdict(mine, best_other[1], best_other[0], sizes[0])]
        verdicts += [_verdict_at(ok, b, split, bs, sizes) for bs in sizes[1:]]
        out["bars"].append({
            "bar": b.name, "key": b.key, "psnr": b.psnr, "reward": b.reward,
            "fastest": dict(sorted(rows.items(), key=lambda fr: -fr[1]["speedup"])),
            "ecad": mine, "best_other": best_other[0], "verdicts": verdicts,
        })
    for p in ok:
        if p.method.kind in ("ecad", "reference"):
            continue
        better = [e for e in ecad if speed(e) >= speed(p) and _q(e, split, "psnr") >= _q(p, split, "psnr")
                  and (not has_reward or _q(e, split, "reward") >= _q(p, split, "reward"))]
        faster = [e for e in ecad if speed(e) >= speed(p)]
        out["dominance"][p.label] = {
            "ecad_at_least_as_fast_and_good": max(better, key=speed).label if better else None,
            "best_ecad_psnr_at_least_as_fast": max((_q(e, split, "psnr") for e in faster), default=None),
        }
    return out


# -- JSON -------------------------------------------------------------------------------------


def experiment_dict(exp: Experiment) -> dict[str, Any]:
    return {
        "setting": {"name": exp.name, **exp.setting.to_dict()},
        "splits": [{"name": s.name, "prompts": s.prompts, "seeds": s.seeds} for s in exp.splits],
        "batch_size": exp.batch_size, "timed_rounds": exp.rounds, "timing_batch_sizes": exp.timing_batch_sizes,
        "bars": [b.name for b in exp.bars], "seconds": exp.seconds,
        "reference_reproducible": exp.reference_reproducible,
        "points": [p.to_dict() for p in exp.points],
        "summary": {split.name: summarize(exp, split.name) for split in exp.splits},
        "summary_macs": summarize(exp, exp.splits[0].name, "macs_speedup"),
    }


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def write_json(path: Path, meta: dict, experiments: Sequence[Experiment]) -> dict:
    data = _clean({"meta": meta, "experiments": [experiment_dict(e) for e in experiments]})
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    return data


# -- Markdown -------------------------------------------------------------------------------------


def _f(x, fmt="{:.2f}", none="–"):
    return none if x is None else fmt.format(x)


def markdown(meta: dict, experiments: Sequence[Experiment]) -> str:
    main = experiments[0]
    splits = [s.name for s in main.splits]
    has_reward = any("reward" in q for p in main.points for q in p.quality.values())
    has_fid = any("fid" in q for p in main.points for q in p.quality.values())
    lines = [f"# ecad-bench: {meta['model']}", ""]
    lines += [f"Command: `{meta['command']}`", "",
              f"{meta['when']} · {meta['machine']} · torch {meta['versions'].get('torch')}, diffusers "
              f"{meta['versions'].get('diffusers')}, cache-dit {meta['versions'].get('cache_dit')} · "
              f"{meta['threads']} thread(s) · {main.setting.num_inference_steps} steps, "
              f"{main.setting.height}x{main.setting.width}, guidance {main.setting.guidance_scale}", ""]
    if meta.get("git") or meta.get("bank"):
        g = meta.get("git") or {}
        lines += [f"Model `{meta.get('model_path', meta['model'])}` (commit {g.get('model_commit') or '–'}"
                  f"{', uncommitted changes' if g.get('dirty_model') else ''}, transformer fingerprint "
                  f"{(meta.get('model_fingerprint') or '–')[:12]}), checkout {g.get('head') or '–'}; bank "
                  f"`{meta.get('bank') or 'none'}`"
                  + (f" ({len(meta.get('bank_entries', []))} entries, scorer {meta.get('bank_scorer')})" if meta.get("bank") else "")
                  + " (paths relative to this folder).", ""]
    lines += [_describe_splits(main), ""]
    sizes = main.timing_batch_sizes or [main.batch_size]
    lines += ["How it was measured: every point rendered the held-out images once (tuning: quality, MACs "
              "that actually ran, a one-run *screening* speed); thresholds were bisected at each bar; then the "
              f"points that may decide a bar (per family, the fastest by {meta.get('finalists_ranked_by', 'MACs')}) were timed in {main.rounds} interleaved rounds at batch "
              f"{' and '.join(str(b) for b in sizes)}, no-cache re-timed around every few points. Speedup = "
              "median over rounds of (no-cache seconds around the point / the point's seconds); the spread "
              "is the min–max of those per-round ratios. A winner is called only where the two spreads do "
              "not overlap. PSNR/SSIM: against the no-cache image of the same prompt and seed (100 dB = identical)."
              + (" Reward: the bundled scenes reward relative to no-cache, with its 95% bootstrap interval over "
                 "images; a bar's 'reward within 2%' is judged on the mean." if has_reward else "")
              + (" FID: Fréchet distance on the reward network's features vs real renders." if has_fid else ""), ""]
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    lines.append("")

    summ = summarize(main, splits[0])
    lines += _bar_sections(summ, sizes, has_reward)
    lines += ["## Hypervolume per method", "",
              "Area dominated above (speedup 1, 20 dB)" + (" and above (speedup 1, reward 0)" if has_reward else "")
              + "; timed points use their rounds' median, the others their screening speed.", "",
              "| method | kind | knob | points (ok) | HV (speedup×dB) |" + (" HV (speedup×reward) |" if has_reward else ""),
              "|---|---|---|---|---|" + ("---|" if has_reward else "")]
    for fam, e in summ["families"].items():
        if e["kind"] == "reference":
            continue
        lines.append(f"| {fam} | {e['kind']} | {e['knob']} | {e['points']} ({e['ok']}) | {_f(e['hv_psnr'], '{:.1f}')} |"
                     + (f" {_f(e.get('hv_reward'), '{:.3f}')} |" if has_reward else ""))
    lines.append("")

    summ_macs = summarize(main, splits[0], "macs_speedup")
    lines += _coverage(summ, summ_macs, has_reward) + [""]
    ref = main.reference()
    base = "; ".join(f"{s}: " + ", ".join(f"{k} {v:.3f}" for k, v in ref.quality.get(s, {}).items()
                                         if k in ("reward", "accuracy", "fid")) for s in splits)
    if has_reward or has_fid:
        lines += [f"No-cache reference: {base}.", ""]
    if main.reference_reproducible is not None:
        lines += ["No-cache output after all methods ran: " + ("bit-identical to the first run." if main.reference_reproducible
                  else "**changed** (a method left state behind)."), ""]

    # all points
    lines += [f"## Every point ({main.name} setting)", "",
              "speedup: median of the timed rounds with its min–max spread (deciding points), else the one-run "
              "screening speed marked *s*; MACs speedup: work that actually ran, immune to machine noise.", "",
              "Last two columns: the fastest ECAD point at least as fast (wall-clock / MACs) and at least as good "
              f"in PSNR{' and reward' if has_reward else ''} on {splits[0]} prompts; **none** if there is none.", ""]
    head = ["method", "knob", "speedup", "spread", "MACs speedup"]
    for s in splits:
        head += [f"PSNR {s}", f"SSIM {s}"] + ([f"reward {s}"] if has_reward else []) + ([f"FID {s}"] if has_fid and s == splits[0] else [])
    head += ["cache KB/img", "ECAD point ≥ (wall-clock)", "ECAD point ≥ (MACs)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in main.points:
        if p.status != "ok":
            continue
        spread = p.speed(sizes[0])
        row = [p.method.family, p.label, _f(p.speedup, "{:.2f}x") + (" *s*" if p.speedup_source == "screen" and p.method.kind != "reference" else ""),
               f"{spread['min']:.2f}–{spread['max']:.2f}" if spread else "–", _f(p.macs_speedup, "{:.2f}x")]
        for s in splits:
            q = p.quality.get(s, {})
            row += [_f(q.get("psnr"), "{:.1f}"), _f(q.get("ssim"), "{:.3f}")]
            if has_reward:
                row.append(f"{_f(q.get('reward'), '{:.3f}')} ({_rel(q)})")
            if has_fid and s == splits[0]:
                row.append(_f(q.get("fid"), "{:.2f}"))
        row.append(_f(p.cache_bytes_per_image and p.cache_bytes_per_image / 1024, "{:.1f}"))
        for table in (summ, summ_macs):
            dom = table["dominance"].get(p.label)
            row.append("–" if dom is None else (dom["ecad_at_least_as_fast_and_good"] or "**none**"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    failed = [p for p in main.points if p.status != "ok"]
    lines += ["## Methods that could not run", ""]
    if failed:
        lines += ["| method | knob | API | error |", "|---|---|---|---|"]
        for p in failed:
            lines.append(f"| {p.method.family} | {p.label} | {p.method.api} | `{_md(p.error)}` |")
    else:
        lines.append("None: every point ran.")
    lines.append("")
    tried = {p.method.family: p.as_shipped for p in main.points if p.as_shipped is not None}
    if tried:
        lines += ["## diffusers caches as shipped (without the cache-context shim)", "",
                  "Each is tried once on one image at its first knob value, without the shim.", "",
                  "| method | result without the shim |", "|---|---|"]
        for fam, result in tried.items():
            lines.append(f"| {fam} | {_md(result)} |")
        lines.append("")

    for exp in experiments[1:]:
        lines += [f"## Transfer: {exp.name} ({exp.setting.num_inference_steps} steps, "
                  f"{exp.setting.height}x{exp.setting.width})", "",
                  "Bank schedules calibrated at the main setting, resampled in time (`CacheSchedule.resample`) "
                  "or applied as is at another resolution; FORA recomputed for this setting.", ""]
        s0 = exp.splits[0].name
        tsum = summarize(exp, s0)
        tbars = [b["key"] for b in tsum["bars"]]
        lines += ["| method | " + " | ".join(f"speedup @ {b['bar']}" for b in tsum["bars"]) + " | HV (speedup×dB) |",
                  "|---|" + "---|" * (len(tbars) + 1)]
        for fam, e in tsum["families"].items():
            if e["kind"] == "reference":
                continue
            lines.append(f"| {fam} | " + " | ".join(_f(e["best"][k] and e["best"][k]["speedup"], "{:.2f}x") for k in tbars)
                         + f" | {_f(e['hv_psnr'], '{:.1f}')} |")
        lines += ["", "| point | speedup | MACs speedup | PSNR | SSIM |" + (" reward |" if has_reward else ""),
                  "|---|---|---|---|---|" + ("---|" if has_reward else "")]
        for p in _ok(exp.points):
            q = p.quality.get(s0, {})
            lines.append(f"| {p.label} | {_f(p.speedup, '{:.2f}x')} | {_f(p.macs_speedup, '{:.2f}x')} | "
                         f"{_f(q.get('psnr'), '{:.1f}')} | {_f(q.get('ssim'), '{:.3f}')} |"
                         + (f" {_f(q.get('reward'), '{:.3f}')} ({_rel(q)}) |" if has_reward else ""))
        lines.append("")
    lines += ["## Files", "", "- `results.json`: every measurement (per-image scores, all timings, errors)",
              "- `pareto.png`: speedup vs quality, every method", "- `pareto_macs.png`: the same against MACs speedup",
              "- `grid.png`: the same prompt and seed across methods and speeds"]
    if len(experiments) > 1:
        lines.append("- `transfer.png`: ECAD vs FORA at other step counts / resolution")
    return "\n".join(lines) + "\n"


def _bar_sections(summ: dict, sizes: Sequence[int], has_reward: bool) -> list[str]:
    """The headline: per bar, ECAD's fastest point vs the best other method, then every method's fastest."""
    main_size = sizes[0]
    out = ["## Verdict per quality bar (held-out prompts)", ""]
    if "ecad" not in summ["families"] or not summ["families"]["ecad"]["ok"]:
        out += ["**No ECAD front in this run** (no bank): only the heuristics and competitors are compared.", ""]
    head = "| bar | ECAD fastest | best other method | " + " | ".join(f"batch {bs}: ECAD / other (spread) | verdict" for bs in sizes) + " |"
    out += [head, "|---|---|---|" + "---|---|" * len(sizes)]
    for b in summ["bars"]:
        mine, other = b["ecad"], b["fastest"].get(b["best_other"]) if b["best_other"] else None
        row = f"| {b['bar']} | {mine['label'] if mine else '–'} | {other['label'] if other else '–'} |"
        for v in b["verdicts"]:
            # at a smaller batch size the points may differ (batch-dependent methods are re-judged there)
            labels = [(v.get(k) or {}).get("label", "–") for k in ("ecad_point", "other_point")]
            moved = "ecad_point" in v and labels != [mine["label"] if mine else "–", other["label"] if other else "–"]
            row += f" {_speed(v['ecad'])} / {_speed(v['other'])}" + (f" ({labels[0]} / {labels[1]})" if moved else "")
            paired = v.get("paired")
            row += f" | {v['verdict']}" + (f"; paired {_speed(paired)}" if paired else "") + " |"
        out.append(row)
    out += ["", f"Speeds are the median per-round ratio (min–max in brackets); batch {main_size} decides "
            "which point is a method's fastest. At a smaller batch size the fastest timed point that clears the "
            "bar *at that batch size* is compared (named in brackets when it is not the batch-"
            f"{main_size} one). *Paired*: ECAD's ratio over the other's within each round (both ran in every "
            "round, so a round's drift cancels), median (min–max) over rounds; shown for information, the verdict "
            "compares the two spreads. FirstBlockCache, MagCache and cache-dit threshold a change averaged over the "
            "batch, so their images (and quality) at batch 1 are not those at batch 8; they are scored and "
            "bisected again at batch 1.", ""]
    for b in summ["bars"]:
        out += [f"### {b['bar']}", "",
                "| method | fastest point | " + " | ".join(f"speedup b{bs} (spread)" for bs in sizes)
                + " | MACs speedup | PSNR |" + (" reward vs no-cache (95% interval) |" if has_reward else ""),
                "|---|---|" + "---|" * len(sizes) + "---|---|" + ("---|" if has_reward else "")]
        for fam, r in b["fastest"].items():
            speeds = " | ".join(_speed(r["speed"].get(str(bs))) if r["speed"].get(str(bs)) else
                                f"{_f(r['speedup'], '{:.2f}x')} *s*" for bs in sizes)
            out.append(f"| {fam} | {r['label']} | {speeds} | {_f(r['macs_speedup'], '{:.2f}x')} | {_f(r['psnr'], '{:.1f}')} |"
                       + (f" {_rel(r)} |" if has_reward else ""))
        fams = summ["families"]
        missing = [f for f, e in fams.items() if e["kind"] != "reference" and e["ok"] and f not in b["fastest"]]
        failed = [f for f, e in fams.items() if e["kind"] != "reference" and not e["ok"]]
        if missing:
            out += ["", "No point clears this bar: " + ", ".join(missing) + "."]
        if failed:
            out += ["", "Could not run (see below): " + ", ".join(failed) + "."]
        out.append("")
    return out


def _coverage(summ: dict, summ_macs: dict, has_reward: bool) -> list[str]:
    """How many heuristic/competitor points an ECAD point matches or beats."""
    out = []
    for name, table in (("wall-clock", summ), ("MACs", summ_macs)):
        dom = table["dominance"]
        covered = sum(1 for d in dom.values() if d["ecad_at_least_as_fast_and_good"])
        out.append(f"- {covered} of {len(dom)} heuristic/competitor points have an ECAD point at least as fast "
                   f"({name}) and at least as good (PSNR{' and reward' if has_reward else ''}).")
    return out


def _speed(s: dict | None) -> str:
    return "–" if not s else f"{s['median']:.2f}x ({s['min']:.2f}–{s['max']:.2f})"


def _rel(q: dict) -> str:
    rel, ci = q.get("reward_rel"), q.get("reward_rel_interval")
    return _f(rel, "{:.1%}") + (f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "")


def _md(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")[:300]


def _describe_splits(exp: Experiment) -> str:
    parts = [f"**{s.name}**: {len(s.prompts)} prompts x {len(s.seeds)} seeds ({len(s.items())} images)" for s in exp.splits]
    return "Prompts: " + "; ".join(parts) + "."


# -- plots ----------------------------------------------------------------------------------------


def _style(kind: str, fam: str):
    if kind == "ecad":
        return dict(color="black", lw=2.5, marker="*", ms=11, zorder=5)
    if kind == "reference":
        return dict(color="grey", marker="s", ms=8, lw=0)
    return dict(lw=1.2, marker="o" if kind == "heuristic" else "^", ms=5,
                ls="-" if kind == "heuristic" else "--")


def _plot_family(ax, xs, ys, style, label, lower_better=False):
    """Every point as a marker; the line joins the family's own non-dominated points."""
    better = (lambda a, b: a < b) if lower_better else (lambda a, b: a > b)
    n = len(xs)
    front = [j for j in range(n) if not any(
        xs[k] >= xs[j] and (better(ys[k], ys[j]) or ys[k] == ys[j]) and (xs[k] > xs[j] or better(ys[k], ys[j]))
        for k in range(n))]
    front.sort(key=lambda j: xs[j])
    ax.plot([xs[j] for j in front], [ys[j] for j in front], label=label, **style)
    color = ax.lines[-1].get_color()
    rest = [j for j in range(n) if j not in front]
    if rest:
        ax.plot([xs[j] for j in rest], [ys[j] for j in rest], ls="none", marker=style.get("marker", "o"),
                ms=max(3, style.get("ms", 5) - 2), color=color, alpha=0.45)


def plot_pareto(exp: Experiment, path: Path, speed_key: str = "speedup") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = exp.splits[0].name
    ok = _ok(exp.points)
    metrics = [("psnr", f"PSNR vs no-cache (dB, ≥{PLOT_PSNR_CAP:.0f} drawn at {PLOT_PSNR_CAP:.0f})")]
    if any("reward" in p.quality.get(split, {}) for p in ok):
        metrics.append(("reward", "scenes reward"))
    if any("fid" in p.quality.get(split, {}) for p in ok):
        metrics.append(("fid", "FID (reward features, lower is better)"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 5.5), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, (key, name) in zip(axes[0], metrics):
        for i, fam in enumerate(families(exp)):
            pts = sorted((p for p in ok if p.method.family == fam), key=lambda p: getattr(p, speed_key) or 0)
            xs = [getattr(p, speed_key) for p in pts]
            ys = [_q(p, split, key) for p in pts]
            if key == "psnr":
                ys = [min(y, PLOT_PSNR_CAP) if y is not None else None for y in ys]
            if not pts or any(v is None for v in xs + ys):
                continue
            style = _style(pts[0].method.kind, fam)
            style.setdefault("color", cmap(i % 20))
            _plot_family(ax, xs, ys, style, fam, lower_better=key == "fid")
        if key == "psnr":
            for g in GOAL_PSNR:
                ax.axhline(g, color="red", lw=0.7, ls=":")
        ax.set_xlabel("wall-clock speedup vs no-cache" if speed_key == "speedup" else "MACs speedup vs no-cache")
        ax.set_ylabel(f"{name}, {split} prompts")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"ecad-bench: {exp.setting.num_inference_steps} steps, {exp.setting.height}x{exp.setting.width}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_transfer(experiments: Sequence[Experiment], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(experiments), figsize=(5.5 * len(experiments), 4.5), squeeze=False)
    for ax, exp in zip(axes[0], experiments):
        split = exp.splits[0].name
        ok = _ok(exp.points)
        for fam in families(exp):
            pts = sorted((p for p in ok if p.method.family == fam), key=lambda p: p.speedup)
            if pts:
                _plot_family(ax, [p.speedup for p in pts], [min(_q(p, split, "psnr"), PLOT_PSNR_CAP) for p in pts],
                             _style(pts[0].method.kind, fam), fam)
        for g in GOAL_PSNR:
            ax.axhline(g, color="red", lw=0.7, ls=":")
        ax.set_title(f"{exp.name}: {exp.setting.num_inference_steps} steps, {exp.setting.height}x{exp.setting.width}")
        ax.set_xlabel("wall-clock speedup")
        ax.set_ylabel(f"PSNR vs no-cache (dB, ≥{PLOT_PSNR_CAP:.0f} drawn at {PLOT_PSNR_CAP:.0f})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(exp: Experiment, path: Path, index: int = 0, max_cols: int = 7, scale: int = 3) -> None:
    """Rows: families (no-cache first); columns: that family's points by speedup; one prompt and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = exp.splits[0].name
    ok = _ok(exp.points)
    rows = []
    for fam in families(exp):
        pts = sorted((p for p in ok if p.method.family == fam and split in p.images),
                     key=lambda p: (p.macs_speedup or 0.0, p.speedup))
        if len(pts) > max_cols:
            pick = np.unique(np.linspace(0, len(pts) - 1, max_cols).round().astype(int))
            pts = [pts[i] for i in pick]
        if pts:
            rows.append((fam, pts))
    cols = max(len(pts) for _, pts in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols + 1.2, 1.75 * len(rows)), squeeze=False)
    prompt = exp.splits[0].items()[index]
    for r, (fam, pts) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(c < len(pts))
            if c >= len(pts):
                ax.axis("off")
                continue
            p = pts[c]
            img = p.images[split][index].clamp(0, 1).permute(1, 2, 0).numpy()
            ax.imshow(np.kron(img, np.ones((scale, scale, 1))) if scale > 1 else img, interpolation="nearest")
            q = p.quality.get(split, {})
            ax.set_title(f"{p.label}\n{p.speedup:.2f}x {_f(q.get('psnr'), '{:.1f}')} dB", fontsize=6)
            if c == 0:
                ax.set_ylabel(fam, fontsize=7)
    fig.suptitle(f"\"{prompt[0]}\" (seed {prompt[1]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, meta: dict, experiments: Sequence[Experiment]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    data = write_json(out / "results.json", meta, experiments)
    (out / "README.md").write_text(markdown(meta, experiments))
    plot_pareto(experiments[0], out / "pareto.png")
    plot_pareto(experiments[0], out / "pareto_macs.png", speed_key="macs_speedup")
    image_grid(experiments[0], out / "grid.png")
    if len(experiments) > 1:
        plot_transfer(experiments[1:], out / "transfer.png")
    return data
