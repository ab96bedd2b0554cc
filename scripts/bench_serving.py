"""Serving benchmark (not a test): budget hit rate and quality of the chosen schedules.

Starts the real `bentoml serve` on 127.0.0.1 with a model and its bank, then for each latency
budget sends a bounded load (N requests, C concurrent) twice: once letting the server select, once
pinned to no-cache (`schedule_id: "no-cache"`, what a server without ecad would run). Reports per
budget: share of requests that met their budget, mean bank quality of the schedules served, and
mean latency. Stops the server by its process group.

    python scripts/bench_serving.py                           # bundled model and bank
    python scripts/bench_serving.py --budgets 120 200 300 --requests 40 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from ecad.testing import running_server

REPO = Path(__file__).resolve().parent.parent


def run_load(url: str, budget: float, n: int, concurrency: int, pin: str | None) -> list[dict]:
    def one(i: int) -> dict:
        body = {"prompt": "a red circle at the top left and a green square at the bottom right", "seed": i,
                "latency_ms": budget}
        if pin:
            body["schedule_id"] = pin
        r = requests.post(f"{url}/generate", json=body, timeout=120)
        return {"status": r.status_code, **(r.json() if r.status_code == 200 else {})}

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(n)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "ecad-scenes"))
    p.add_argument("--bank", default=str(REPO / "schedules" / "ecad-scenes" / "32x32-20steps.json"))
    p.add_argument("--budgets", type=float, nargs="+", default=[150, 250, 400, 600, 1500])
    p.add_argument("--requests", type=int, default=20, help="requests per budget and policy")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()

    env = {"ECAD_MODEL": args.model, "ECAD_BANK": args.bank, "ECAD_NUM_THREADS": "1"}
    with running_server(env, home=tempfile.mkdtemp(prefix="ecad-bench-serving-")) as url:
        bank = requests.get(f"{url}/schedules", timeout=10).json()
        quality = {e["id"]: e["quality"] for e in bank["entries"]}
        metric = bank["quality_metric"]
        rows = []
        for budget in args.budgets:
            for policy, pin in (("ecad", None), ("always no-cache", "no-cache")):
                results = run_load(url, budget, args.requests, args.concurrency, pin)
                ok = [r for r in results if r["status"] == 200]
                rows.append({
                    "budget_ms": budget, "policy": policy, "requests": len(results),
                    "errors_5xx": sum(r["status"] >= 500 for r in results),
                    "rejected": sum(400 <= r["status"] < 500 for r in results),
                    "hit_rate": sum(bool(r["budget_met"]) for r in ok) / max(1, len(ok)),
                    "mean_quality": statistics.mean(quality[r["schedule_id"]][metric] for r in ok) if ok else None,
                    "mean_reward": statistics.mean(quality[r["schedule_id"]].get("scenes-reward", float("nan"))
                                                   for r in ok) if ok else None,
                    "mean_total_ms": statistics.mean(r["queue_ms"] + r["actual_ms"] for r in ok) if ok else None,
                    "schedules": sorted({r["schedule_id"] for r in ok}),
                })
                row = rows[-1]
                print(f"budget {budget:7.0f} ms  {policy:<16} hit {row['hit_rate']:5.0%}  {metric} "
                      f"{row['mean_quality']:.3f}  reward {row['mean_reward']:.3f}  mean {row['mean_total_ms']:6.0f} ms"
                      f"  5xx {row['errors_5xx']}  schedules {len(row['schedules'])}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"metric": metric, "rows": rows, "requests": args.requests,
                                                  "concurrency": args.concurrency}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
