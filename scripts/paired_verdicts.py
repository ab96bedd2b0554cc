#!/usr/bin/env python
"""The paired per-round ratio of each verdict in an ``ecad-bench`` results.json (reports written
before ecad-bench printed it): per bar and timing batch size, ECAD's fastest point's per-round
speedup over the best other method's in the same round. Both ran in every round, so a round's
drift cancels; the verdict itself (spreads compared) is not changed.

    python scripts/paired_verdicts.py docs/benchmarks/ecad-scenes/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def paired_rows(results: dict) -> list[dict]:
    from ecad.bench.report import verdict

    main = results["experiments"][0]
    points = {p["label"]: p for p in main["points"]}
    rows = []
    for bar in main["summary"]["held-out"]["bars"]:
        for v in bar["verdicts"]:
            size = str(v["batch_size"])
            labels = [(v.get(k) or {}).get("label") for k in ("ecad_point", "other_point")]
            if not all(labels):  # reports from before per-batch points: the batch-8 fastest points
                labels = [(bar["ecad"] or {}).get("label"), (bar["fastest"].get(bar["best_other"]) or {}).get("label")]
            if not all(labels):
                continue

            def timed(label):
                return {"speed": {size: points[label]["timing"][size]["speed"]
                                  | {"ratios": points[label]["timing"][size]["ratios"]}}}

            again = verdict(timed(labels[0]), timed(labels[1]), v.get("other_method"), int(size))
            rows.append({"bar": bar["bar"], "batch_size": int(size), "ecad": labels[0], "other": labels[1],
                         "verdict": again["verdict"], "ratio": again["ratio"], "paired": again.get("paired")})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="an ecad-bench results.json")
    args = p.parse_args(argv)
    print("| bar | batch | ECAD / other | verdict | median ratio | paired per round: median (min–max) |")
    print("|---|---|---|---|---|---|")
    for r in paired_rows(json.loads(Path(args.results).read_text())):
        pr = r["paired"]
        print(f"| {r['bar']} | {r['batch_size']} | {r['ecad']} / {r['other']} | {r['verdict']} | {r['ratio']:.2f}x | "
              + (f"{pr['median']:.2f}x ({pr['min']:.2f}–{pr['max']:.2f}) |" if pr else "– |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
