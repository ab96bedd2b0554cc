"""Probes of the serving queue on the real `bentoml serve` (not a test): prediction error at other
settings, and the long/short probe.

Prediction error: for each request shape (the bank's own, 2x and 4x its side, 5x its steps) and
each entry asked for (the planner's choice without a budget, and pinned ones), two requests in a
row: the first is predicted by the latency model alone (the server has never run that shape), the
second after the first corrected it. Reported: actual/predicted of each.

Long/short: a long request without a budget, then ``--short-after`` seconds later a short one with
a ``--short-budget`` ms budget: the short one's wait (queue_ms), its budget, and the long one's
outcome (status, time, pauses). With ``--long-alone`` the long request is run alone first and the
bytes of both runs compared (the same schedule is pinned so both run the same one).

    python scripts/probe_serving.py --fastest --long-alone --out docs/benchmarks/serving-probe.json

``--checkout DIR`` serves another checkout's code (e.g. main before a change) for a comparison.
"""

from __future__ import annotations

import argparse
import json
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


def post(url: str, body: dict, timeout: float = 900) -> tuple[int, dict, float]:
    sent = time.perf_counter()
    r = requests.post(f"{url}/generate", json=body, timeout=timeout)
    took_ms = (time.perf_counter() - sent) * 1000.0
    return r.status_code, r.json(), took_ms


def prediction_error(url: str, base: dict, pins: list[str | None]) -> list[dict]:
    w, h, steps = base["width"], base["height"], base["num_inference_steps"]
    shapes = {"1x": {}, "2x size": {"width": 2 * w, "height": 2 * h}, "4x size": {"width": 4 * w, "height": 4 * h},
              "5x steps": {"num_inference_steps": 5 * steps}}
    rows = []
    for name, shape in shapes.items():
        for pin in pins:
            for attempt in ("first", "second"):
                body = {"prompt": PROMPT, "seed": 1, **shape, **({"schedule_id": pin} if pin else {})}
                status, answer, _ = post(url, body)
                row = {"shape": name, "pinned": pin, "attempt": attempt, "status": status}
                if status == 200:
                    row |= {"schedule_id": answer["schedule_id"], "predicted_ms": answer["predicted_ms"],
                            "actual_ms": answer["actual_ms"], "ratio": answer["actual_ms"] / answer["predicted_ms"]}
                else:
                    row["error"] = answer.get("error")
                rows.append(row)
                print(f"{name:<9} {pin or 'planner':<20} {attempt:<6} " + (
                    f"{row['schedule_id']:<20} predicted {row['predicted_ms']:9.0f} actual {row['actual_ms']:9.0f} "
                    f"ratio {row['ratio']:.2f}" if status == 200 else f"{status} {row['error']}"), flush=True)
    return rows


def long_short(url: str, long: dict, short_budget: float, after_s: float, alone: bool) -> dict:
    out: dict = {"long": long, "short_budget_ms": short_budget, "short_after_s": after_s}
    alone_images = None
    if alone:
        status, answer, took = post(url, long)
        alone_images = answer.get("images")
        out["long_alone"] = {"status": status, "client_ms": took,
                             **{k: v for k, v in answer.items() if k != "images"}}
        print(f"long alone: {status} in {took / 1000:.1f} s", flush=True)
    box: dict = {}

    def send_long() -> None:
        box["long"] = post(url, long)

    runner = threading.Thread(target=send_long)
    runner.start()
    time.sleep(after_s)
    status, answer, took = post(url, {"prompt": "a blue square", "seed": 2, "latency_ms": short_budget})
    out["short"] = {"status": status, "client_ms": took, **{k: v for k, v in answer.items() if k != "images"}}
    runner.join()
    status, answer, took = box["long"]
    out["long_with_short"] = {"status": status, "client_ms": took,
                              **{k: v for k, v in answer.items() if k != "images"}}
    if alone_images is not None and status == 200:
        out["long_bytes_identical"] = answer["images"] == alone_images
        print(f"long: the same PNG bytes as alone: {out['long_bytes_identical']}", flush=True)
    short = out["short"]
    print(f"short: {short['status']} waited {short.get('queue_ms', float('nan')):.0f} ms, ran "
          f"{short.get('actual_ms', float('nan')):.0f} ms, client {short['client_ms']:.0f} ms, "
          f"budget met {short.get('budget_met')}", flush=True)
    lw = out["long_with_short"]
    print(f"long: {lw['status']} in {lw['client_ms'] / 1000:.1f} s, paused {lw.get('paused_ms', 0):.0f} ms, "
          f"{lw.get('error', '')}", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "ecad-scenes"))
    p.add_argument("--bank", default=str(REPO / "schedules" / "ecad-scenes" / "32x32-20steps.json"))
    p.add_argument("--env", nargs="*", default=[], help="more ECAD_*=value for the server")
    p.add_argument("--pins", nargs="*", default=["", "no-cache"], help="entries to pin ('' = the planner's choice)")
    p.add_argument("--fastest", action="store_true", help="also pin the bank's fastest entry")
    p.add_argument("--skip-predictions", action="store_true")
    p.add_argument("--long", default='{"width": 128, "height": 128, "num_inference_steps": 100, "num_images": 8}',
                   help="the long request's fields (JSON)")
    p.add_argument("--long-alone", action="store_true", help="run the long request alone first, compare bytes")
    p.add_argument("--short-budget", type=float, default=300.0)
    p.add_argument("--short-after", type=float, default=2.0)
    p.add_argument("--checkout", help="serve this checkout's code instead of this one's")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()

    from ecad.bank import ScheduleBank

    root = Path(tempfile.mkdtemp(prefix="ecad-probe-serving-"))
    bank = ScheduleBank.load(args.bank)
    env = {"ECAD_MODEL": args.model, "ECAD_BANK": str(bank.save(root / "bank.json")), "ECAD_NUM_THREADS": "1",
           **dict(item.split("=", 1) for item in args.env)}
    results: dict = {"env": env}
    with running_server(env, home=root / "server", ready_timeout_s=900, checkout=args.checkout) as url:
        view = requests.get(f"{url}/schedules", timeout=30).json()
        results["latency_model"] = view.get("latency_model")
        print("latency model:", json.dumps(results["latency_model"]), flush=True)
        pins = [pin or None for pin in args.pins]
        if args.fastest:
            pins.append(min(view["entries"], key=lambda e: e["profiled_ms"])["id"])
        if not args.skip_predictions:
            base = {k: view[k] for k in ("width", "height", "num_inference_steps")}
            results["prediction_error"] = prediction_error(url, base, pins)
        long = {"prompt": PROMPT, "seed": 1, **json.loads(args.long)}
        if args.long_alone and "schedule_id" not in long:
            long["schedule_id"] = min(view["entries"], key=lambda e: e["profiled_ms"])["id"]
        results["long_short"] = long_short(url, long, args.short_budget, args.short_after, args.long_alone)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
