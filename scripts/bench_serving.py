"""Serving benchmark (not a test): latency budgets under bounded load, by policy.

Starts the real `bentoml serve` on 127.0.0.1 with a model and its bank, twice (`ECAD_PLANNER=planner`
and `greedy`, both up, cells interleaved; with ``--baseline DIR`` a third, the planner of another
checkout, e.g. of main before a change), and for every concurrency x budget cell sends N requests
from C clients in a closed loop (each client sends its next request when the previous answer
arrives). Policies: "planner" (deadline-aware across the queue), "greedy" (each request picks the
best entry that fits what is left of its own budget when it reaches the pipeline: the server
before the planner), "no-cache" (pinned `schedule_id: "no-cache"` on the planner's server: what a
server without ecad runs), "fastest" (always the bank's fastest entry, pinned: what a user who only
wants speed would run) and "fixed" (one entry for every request, pinned: ``--fixed-entry``, by
default the entry of median profiled latency: what a user who picked one schedule would run). Per cell: budget hit rate (the server's `budget_met`: queue + pipeline
time within the budget), mean bank quality of what was served, throughput, client-side p50/p95,
and the p95 wait (the server's `queue_ms`: time not computing) of the requests that missed their
budget: how long a request the plan gave up on waited. The machine's load average is recorded
at the start and end of every cell (timings on a shared machine mean little without it).

Feasibility: a cell is feasible when its budget is at least C x the fastest entry's latency: then
every client could be served on time if every request ran the fastest schedule. Two versions are
reported: with the fastest entry's latency *predicted* at start-up (profile x margin), and with
its *measured* median pipeline time during this run (the machine may be slower than its profile
when other work shares it). The headline hit rates are over feasible cells.

    python scripts/bench_serving.py --out docs/benchmarks/serving-budgets.json \
        --plot docs/benchmarks/serving-budgets.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the server launcher the tests use (a checkout's script, like them)

from serving_helpers import running_server  # noqa: E402

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
    missed = [r["queue_ms"] for r in ok if not r["budget_met"]]
    return {
        "policy": policy, "concurrency": concurrency, "budget_ms": budget, "requests": len(results),
        "feasible": budget >= concurrency * fastest_ms,
        "served": [(r["schedule_id"], r["actual_ms"]) for r in ok],
        "errors": sum(r["status"] != 200 for r in results),
        "hit_rate": sum(bool(r["budget_met"]) for r in ok) / max(1, len(results)),
        "mean_quality": statistics.mean(quality[r["schedule_id"]] for r in ok) if ok else None,
        "throughput_rps": len(ok) / wall_s,
        "p50_ms": percentile(client, 0.5) if ok else None,
        "p95_ms": percentile(client, 0.95) if ok else None,
        "missed": len(missed),
        "missed_wait_p95_ms": percentile(missed, 0.95) if missed else None,
        "batched": sum(r.get("batch_images", 1) > r["num_images"] for r in ok),
        "paused": sum(r.get("paused_ms", 0.0) > 0 for r in ok),
        "schedules": len({r["schedule_id"] for r in ok}),
    }


def load_average() -> float:
    return os.getloadavg()[0]


def run(args) -> list[dict]:
    """Both servers up at once (an idle one costs nothing), cells interleaved across policies, so
    that a machine whose speed drifts (shared cores) slows every policy alike. The first server
    profiles the bank on this machine and stores the profile; the second reads it."""
    from ecad.bank import ScheduleBank

    root = Path(tempfile.mkdtemp(prefix="ecad-bench-serving-"))
    bank = ScheduleBank.load(args.bank).save(root / "bank.json")  # a copy that may take a profile
    common = {"ECAD_MODEL": args.model, "ECAD_BANK": str(bank), "ECAD_NUM_THREADS": "1",
              "ECAD_MAX_QUEUE": str(max(args.concurrency) * 2), "ECAD_LATENCY_QUANTILE": str(args.quantile)}
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        urls = {}
        if {"planner", "no-cache", "fastest", "fixed"} & set(args.policies):
            urls["planner"] = stack.enter_context(running_server(
                {**common, "ECAD_PLANNER": "planner", "ECAD_PERSIST_PROFILE": "1"}, home=root / "planner",
                ready_timeout_s=args.ready_timeout))
        if "greedy" in args.policies:
            urls["greedy"] = stack.enter_context(running_server({**common, "ECAD_PLANNER": "greedy"},
                                                                home=root / "greedy", ready_timeout_s=args.ready_timeout))
        if args.baseline:
            urls["baseline"] = stack.enter_context(running_server(
                {**common, "ECAD_PLANNER": "planner"}, home=root / "baseline", ready_timeout_s=args.ready_timeout,
                checkout=args.baseline))
        view = requests.get(f"{next(iter(urls.values()))}/schedules", timeout=10).json()
        quality = {e["id"]: e["quality"][view["quality_metric"]] for e in view["entries"]}
        fastest = min(view["entries"], key=lambda e: e["predicted_ms"])
        by_ms = sorted(view["entries"], key=lambda e: e["predicted_ms"])
        fixed = args.fixed_entry or by_ms[len(by_ms) // 2]["id"]
        pins = {"no-cache": "no-cache", "fastest": fastest["id"], "fixed": fixed}  # on the planner's server
        policies = [(policy, urls["planner" if policy in pins else policy], pins.get(policy))
                    for policy in args.policies]
        if args.baseline:
            policies.append(("baseline", urls["baseline"], None))
        for concurrency in args.concurrency:
            for budget in args.budgets:
                for policy, url, pin in policies:
                    load_before = load_average()
                    results, wall = closed_loop(url, budget, args.requests, concurrency, pin)
                    row = summarise(results, wall, quality, budget, concurrency, policy, fastest["predicted_ms"])
                    rows.append({**row, "fastest_predicted_ms": fastest["predicted_ms"], "fastest_id": fastest["id"],
                                 "pinned": pin,
                                 "load_average": [load_before, load_average()]})
                    missed = row["missed_wait_p95_ms"]
                    print(f"C={concurrency} budget {budget:5.0f} ms {policy:<9} hit {row['hit_rate']:5.0%} "
                          f"quality {row['mean_quality']:.3f} {row['throughput_rps']:5.2f} req/s "
                          f"p50 {row['p50_ms']:6.0f} p95 {row['p95_ms']:6.0f} ms, missed {row['missed']:2d} "
                          f"waiting p95 {'-' if missed is None else f'{missed:.0f}'} ms, errors {row['errors']}, "
                          f"load {load_before:.1f}{'' if row['feasible'] else '  (infeasible)'}", flush=True)
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r["concurrency"] for r in rows})
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.2), sharey=True)
    for ax, c in zip(list(axes) if len(levels) > 1 else [axes], levels):
        for policy, style in (("planner", "o-"), ("greedy", "s--"), ("no-cache", "^:"), ("fastest", "v:"),
                              ("fixed", "d:"), ("baseline", "x-.")):
            if not any(r["policy"] == policy for r in rows):
                continue
            cell = sorted((r for r in rows if r["concurrency"] == c and r["policy"] == policy),
                          key=lambda r: r["budget_ms"])
            ax.plot([r["budget_ms"] for r in cell], [100 * r["hit_rate"] for r in cell], style, label=policy)
        feasible = [r["budget_ms"] for r in rows if r["concurrency"] == c and r["feasible_measured"]]
        if feasible:  # from halfway below the first feasible budget to the right edge
            below = [r["budget_ms"] for r in rows if r["budget_ms"] < min(feasible)]
            start = (min(feasible) + max(below)) / 2 if below else min(feasible)
            ax.axvspan(start, max(r["budget_ms"] for r in rows) + 50, color="0.93", zorder=0)
        ax.set_title(f"{c} concurrent")
        ax.set_xlabel("budget (ms)")
        ax.set_ylim(-3, 103)
    (axes[0] if len(levels) > 1 else axes).set_ylabel("budget met (%)")
    (axes[0] if len(levels) > 1 else axes).legend(fontsize=8)
    fig.suptitle("Latency budgets under load (shaded: feasible with the measured fastest entry)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "ecad-scenes"))
    p.add_argument("--bank", default=str(REPO / "schedules" / "ecad-scenes" / "32x32-20steps.json"))
    p.add_argument("--budgets", type=float, nargs="+", default=[200, 300, 400, 600, 1000])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--requests", type=int, default=12, help="requests per cell (concurrency x budget x policy)")
    p.add_argument("--quantile", type=float, default=0.9, help="latency quantile the servers promise")
    p.add_argument("--policies", nargs="+", default=["planner", "greedy", "no-cache", "fastest", "fixed"],
                   choices=["planner", "greedy", "no-cache", "fastest", "fixed"])
    p.add_argument("--fixed-entry", help="the entry policy 'fixed' pins (default: the entry of median profiled latency)")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds a server may take to start")
    p.add_argument("--baseline", help="another checkout (e.g. of main) whose planner server runs beside, cells "
                                      "interleaved: policy 'baseline'")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--plot", help="write the hit-rate plot (PNG) here")
    args = p.parse_args()

    rows = run(args)
    fastest_id = rows[0]["fastest_id"]
    measured = statistics.median([ms for r in rows for entry, ms in r.pop("served") if entry == fastest_id]
                                 or [float("nan")])
    for r in rows:
        r["feasible_measured"] = r["budget_ms"] >= r["concurrency"] * measured
    print(f"fastest entry {fastest_id}: predicted {rows[0]['fastest_predicted_ms']:.0f} ms at start-up, "
          f"measured median {measured:.0f} ms in this run")
    kinds = {"feasible": lambda r: r["feasible"], "feasible_measured": lambda r: r["feasible_measured"],
             "infeasible": lambda r: not r["feasible"]}
    for kind, keep in kinds.items():
        for policy in [*args.policies, *(["baseline"] if args.baseline else [])]:
            cells = [r for r in rows if r["policy"] == policy and keep(r)]
            n = sum(r["requests"] for r in cells)
            hits = sum(r["hit_rate"] * r["requests"] for r in cells) / max(1, n)
            quality = statistics.mean([r["mean_quality"] for r in cells if r["mean_quality"] is not None] or [0.0])
            waits = [r["missed_wait_p95_ms"] for r in cells if r["missed_wait_p95_ms"] is not None]
            print(f"{kind:<17} {policy:<9} {len(cells):2d} cells, {n:3d} requests: budget met {hits:.1%}, "
                  f"mean quality {quality:.3f}, missed requests waited p95 {max(waits, default=0):.0f} ms "
                  "(worst cell)")
    if args.out:
        Path(args.out).write_text(json.dumps({"requests_per_cell": args.requests, "quantile": args.quantile,
                                              "fastest_measured_ms": measured,
                                              "rows": rows}, indent=1) + "\n")
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
