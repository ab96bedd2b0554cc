"""Serving benchmark (not a test): latency budgets under bounded load, by policy.

Starts the real `bentoml serve` on 127.0.0.1 with a model and its bank, once per planner
(`ECAD_PLANNER=planner`, then `greedy`), and for every concurrency x budget cell sends N requests
from C clients in a closed loop (each client sends its next request when the previous answer
arrives). Policies: "planner" (deadline-aware across the queue), "greedy" (each request picks the
best entry that fits what is left of its own budget when it reaches the pipeline: the server
before the planner), "no-cache" (pinned `schedule_id: "no-cache"` on the planner's server: what a
server without ecad runs). Per cell: budget hit rate (the server's `budget_met`: queue + pipeline
time within the budget), mean bank quality of what was served, throughput, client-side p50/p95.

Feasibility: a cell is feasible when its budget is at least C x the fastest entry's predicted
latency (what the server promises at start-up): then every client could be served on time if
every request ran the fastest schedule. The headline hit rate is over feasible cells.

    python scripts/bench_serving.py --out docs/benchmarks/serving-budgets.json \
        --plot docs/benchmarks/serving-budgets.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from ecad.testing import running_server

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red circle at the top left and a green square at the bottom right"


def closed_loop(url: str, budget: float, n: int, concurrency: int, pin: str | None) -> tuple[list[dict], float]:
    """``n`` requests from ``concurrency`` clients, each sending its next when answered."""
    counter = iter(range(n))
    lock = threading.Lock()
    results: list[dict] = []

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            body = {"prompt": PROMPT, "seed": i, "latency_ms": budget, **({"schedule_id": pin} if pin else {})}
            sent = time.perf_counter()
            r = session.post(f"{url}/generate", json=body, timeout=300)
            row = {"status": r.status_code, "client_ms": (time.perf_counter() - sent) * 1000.0}
            if r.status_code == 200:
                row.update({k: v for k, v in r.json().items() if k != "images"})
            with lock:
                results.append(row)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarise(results, wall_s, quality, budget, concurrency, policy, fastest_ms) -> dict:
    ok = [r for r in results if r["status"] == 200]
    client = [r["client_ms"] for r in ok]
    return {
        "policy": policy, "concurrency": concurrency, "budget_ms": budget, "requests": len(results),
        "feasible": budget >= concurrency * fastest_ms,
        "errors": sum(r["status"] != 200 for r in results),
        "hit_rate": sum(bool(r["budget_met"]) for r in ok) / max(1, len(results)),
        "mean_quality": statistics.mean(quality[r["schedule_id"]] for r in ok) if ok else None,
        "throughput_rps": len(ok) / wall_s,
        "p50_ms": percentile(client, 0.5) if ok else None,
        "p95_ms": percentile(client, 0.95) if ok else None,
        "schedules": len({r["schedule_id"] for r in ok}),
    }


def run_server(args, planner: str, policies: list[tuple[str, str | None]], rows: list[dict]) -> None:
    env = {"ECAD_MODEL": args.model, "ECAD_BANK": args.bank, "ECAD_NUM_THREADS": "1", "ECAD_PLANNER": planner,
           "ECAD_MAX_QUEUE": str(max(args.concurrency) * 2)}
    with running_server(env, home=tempfile.mkdtemp(prefix=f"ecad-bench-serving-{planner}-")) as url:
        bank = requests.get(f"{url}/schedules", timeout=10).json()
        quality = {e["id"]: e["quality"][bank["quality_metric"]] for e in bank["entries"]}
        fastest_ms = min(e["predicted_ms"] for e in bank["entries"])
        for concurrency in args.concurrency:
            for budget in args.budgets:
                for policy, pin in policies:
                    results, wall = closed_loop(url, budget, args.requests, concurrency, pin)
                    row = summarise(results, wall, quality, budget, concurrency, policy, fastest_ms)
                    rows.append({**row, "fastest_predicted_ms": fastest_ms})
                    print(f"C={concurrency} budget {budget:5.0f} ms {policy:<9} hit {row['hit_rate']:5.0%} "
                          f"quality {row['mean_quality']:.3f} {row['throughput_rps']:5.2f} req/s "
                          f"p50 {row['p50_ms']:6.0f} p95 {row['p95_ms']:6.0f} ms errors {row['errors']}"
                          f"{'' if row['feasible'] else '  (infeasible)'}", flush=True)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r["concurrency"] for r in rows})
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.2), sharey=True)
    for ax, c in zip(list(axes) if len(levels) > 1 else [axes], levels):
        for policy, style in (("planner", "o-"), ("greedy", "s--"), ("no-cache", "^:")):
            cell = sorted((r for r in rows if r["concurrency"] == c and r["policy"] == policy),
                          key=lambda r: r["budget_ms"])
            ax.plot([r["budget_ms"] for r in cell], [100 * r["hit_rate"] for r in cell], style, label=policy)
        feasible = [r["budget_ms"] for r in rows if r["concurrency"] == c and r["feasible"]]
        if feasible:
            ax.axvspan(min(feasible), max(r["budget_ms"] for r in rows), color="0.93", zorder=0)
        ax.set_title(f"{c} concurrent")
        ax.set_xlabel("budget (ms)")
        ax.set_ylim(-3, 103)
    (axes[0] if len(levels) > 1 else axes).set_ylabel("budget met (%)")
    (axes[0] if len(levels) > 1 else axes).legend(fontsize=8)
    fig.suptitle("Latency budgets under load (shaded: feasible budgets)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "ecad-scenes"))
    p.add_argument("--bank", default=str(REPO / "schedules" / "ecad-scenes" / "32x32-20steps.json"))
    p.add_argument("--budgets", type=float, nargs="+", default=[200, 300, 400, 600, 1000])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--requests", type=int, default=12, help="requests per cell (concurrency x budget x policy)")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--plot", help="write the hit-rate plot (PNG) here")
    args = p.parse_args()

    rows: list[dict] = []
    run_server(args, "planner", [("planner", None), ("no-cache", "no-cache")], rows)
    run_server(args, "greedy", [("greedy", None)], rows)
    for policy in ("planner", "greedy", "no-cache"):
        feasible = [r for r in rows if r["policy"] == policy and r["feasible"]]
        hits = sum(r["hit_rate"] * r["requests"] for r in feasible) / max(1, sum(r["requests"] for r in feasible))
        quality = statistics.mean(r["mean_quality"] for r in feasible if r["mean_quality"] is not None)
        print(f"{policy:<9} feasible cells {len(feasible)}: budget met {hits:.1%}, mean quality {quality:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"requests_per_cell": args.requests, "rows": rows}, indent=1) + "\n")
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
