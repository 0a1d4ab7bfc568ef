"""Many adapters from one server vs one server per model: resident memory and throughput, on loopback.

    python bench/serve_adapters.py /work/runs-bench17/study          # a study folder: all its LoRA runs
    python bench/serve_adapters.py RUN1 RUN2 ... --clients 16 --requests 2000
    python bench/serve_adapters.py RUN1 RUN2 --quick                  # smoke mode (used by a slow test)

Starts ``loralab serve`` in subprocesses on 127.0.0.1, one at a time:

* ``single``: each run alone (merged, the single-model server); every one gets a short load for
  its memory figure, the first also the full load for the throughput reference;
* ``mixed``: one server with every run as an adapter (requests for different adapters share a
  forward pass);
* ``per-adapter``: the same server with ``--adapter-batching per-adapter`` (one forward pass per
  adapter in each batch).

The load: ``--clients`` threads with keep-alive connections share ``--requests`` one-text requests;
request ``i`` asks for adapter ``i mod N`` (spread evenly over the N adapters). Memory: each server's
VmRSS and VmHWM from /proc after its load. Prints both tables and whether the issue's targets are
met (multi-adapter RSS <= 1.5x a single server's; mixed throughput >= 0.7x the single server's).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import re
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_load as SL  # noqa: E402  (the load-test helpers: phases, percentiles, tables)

from loralab.inference.adapters import expand_runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="LoRA run directories over one backbone, or a study folder")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--requests", type=int, default=2000, help="requests per throughput phase (default 2000)")
    p.add_argument(
        "--memory-requests",
        type=int,
        default=200,
        help="requests sent to each single server before its memory is read (default 200)",
    )
    p.add_argument("--warmup", type=int, default=20, help="untimed requests before timing")
    p.add_argument("--threads", type=int, default=None, help="server --threads (torch CPU threads)")
    p.add_argument("--startup-timeout", type=float, default=300)
    p.add_argument("--request-timeout", type=float, default=60)
    p.add_argument(
        "--check-texts",
        type=int,
        default=0,
        help="also score the first N validation sentences in-process with every adapter in mixed batches "
        "and compare with each run's predictions_validation.csv (default 0: skip)",
    )
    p.add_argument(
        "--forward-rounds",
        type=int,
        default=0,
        help="also time the model alone in this process, without HTTP: N rounds, each scoring one batch "
        "of --clients texts (text k for adapter k mod N) merged, mixed and per-adapter (default 0: skip)",
    )
    p.add_argument(
        "--no-servers", action="store_true", help="skip the servers: only --forward-rounds and --check-texts"
    )
    p.add_argument("--quick", action="store_true", help="smoke mode: 4 clients, 60 requests, 20 for memory")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.memory_requests, args.warmup = 4, 60, 20, 3
    return args


class Server(SL.Server):
    """``loralab serve ARGS --host 127.0.0.1 --port 0`` in a subprocess (serve_load's, with many runs)."""

    def __init__(self, serve_args: list[str], args: argparse.Namespace) -> None:
        cmd = [sys.executable, "-m", "loralab", "-q", "serve", *serve_args, "--host", "127.0.0.1", "--port", "0"]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        self._start(cmd, args.startup_timeout)

    def memory_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = {k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) for k in ("VmRSS", "VmHWM")}
        return kib["VmRSS"] / 1024, kib["VmHWM"] / 1024


def post(conn_box: list, url: str, text: str, adapter: str | None, timeout: float) -> tuple[float, str]:
    """One request on a keep-alive connection (``conn_box[0]``); ``(seconds, error or "")``."""
    host, port = url.removeprefix("http://").split(":")
    body = {"texts": [text]} | ({"adapter": adapter} if adapter else {})
    t0 = time.perf_counter()
    try:
        if conn_box[0] is None:
            conn_box[0] = http.client.HTTPConnection(host, int(port), timeout=timeout)
        conn_box[0].request("POST", "/predict", json.dumps(body).encode(), {"Content-Type": "application/json"})
        resp = conn_box[0].getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            return elapsed, f"HTTP {resp.status}: {data[:200].decode('utf-8', 'replace')}"
        got = json.loads(data)
        if len(got["predictions"]) != 1 or (adapter and got["adapter"] != adapter):
            return elapsed, "wrong answer shape"
        return elapsed, ""
    except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
        if conn_box[0] is not None:
            conn_box[0].close()
        conn_box[0] = None
        return time.perf_counter() - t0, f"{type(e).__name__}: {e}"


def load(name: str, url: str, adapters: list[str | None], texts: list[str], args, total: int) -> SL.Phase:
    """``args.clients`` clients share ``total`` requests; request i goes to ``adapters[i % len]``."""
    phase = SL.Phase(name, args.clients)
    counter = itertools.count()
    lock = threading.Lock()

    def work() -> None:
        box: list = [None]
        while (i := next(counter)) < total:
            elapsed, err = post(box, url, texts[i % len(texts)], adapters[i % len(adapters)], args.request_timeout)
            with lock:
                if err:
                    phase.errors += 1
                    phase.first_error = phase.first_error or err
                else:
                    phase.latencies.append(elapsed)
        if box[0] is not None:
            box[0].close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(args.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - t0
    return phase


def measure(server: Server, name: str, adapters: list[str | None], texts: list[str], args, total: int):
    """Warm up, load, then read memory and the batching counters: ``(phase, rss, hwm, health)``."""
    probe = SL.Client(server.url, args.request_timeout)
    SL.wait_ready(probe, args.startup_timeout)
    box: list = [None]
    for i in range(args.warmup):
        post(box, server.url, texts[i % len(texts)], adapters[i % len(adapters)], args.request_timeout)
    before = probe.get_json("/health")["batching"]
    phase = load(name, server.url, adapters, texts, args, total)
    health = probe.get_json("/health")
    rss, hwm = server.memory_mib()
    after = health["batching"]
    calls = after["batches"] - before["batches"]
    health["mean_batch"] = (after["texts"] - before["texts"]) / calls if calls else float("nan")
    health["calls"] = calls
    return phase, rss, hwm, health


def time_forwards(runs: list[str], rounds: int, batch: int, threads: int | None) -> None:
    """Milliseconds per batch of the model alone: one merged run, all runs mixed, all per adapter.
    The three are timed in turn within each round, so a busy machine slows them alike."""
    import statistics

    import torch

    from loralab.inference.adapters import MultiAdapterPredictor
    from loralab.inference.predictor import Predictor

    if threads:
        torch.set_num_threads(threads)
    texts, _ = SL.load_texts()
    single = Predictor.from_run(runs[0], device="cpu", batch_size=batch)
    mixed = MultiAdapterPredictor.from_runs(runs, device="cpu", batch_size=batch)
    per = MultiAdapterPredictor.from_runs(runs, device="cpu", batch_size=batch, mixed=False)
    names = mixed.names
    times: dict[str, list[float]] = {"merged (1 run)": [], "mixed": [], "per-adapter": []}
    for r in range(-1, rounds):  # round -1 warms up
        chunk = [texts[(r * batch + k) % len(texts)] for k in range(batch)]
        items = [(names[k % len(names)], t) for k, t in enumerate(chunk)]
        for key, model, arg in (
            ("merged (1 run)", single, chunk),
            ("mixed", mixed, items),
            ("per-adapter", per, items),
        ):
            t0 = time.perf_counter()
            model.logits(arg)
            if r >= 0:
                times[key].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model alone, batches of {batch} texts over {len(names)} adapters, median of {rounds} rounds: "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items())
        + f"; mixed / merged {med['mixed'] / med['merged (1 run)']:.2f}x, "
        f"per-adapter / mixed {med['per-adapter'] / med['mixed']:.2f}x"
    )


def check_against_runs(runs: list[str], n: int) -> None:
    """Mixed batches vs each run's own prediction file (written by the trainer's evaluation)."""
    from loralab.inference.adapters import MultiAdapterPredictor
    from loralab.runs.layout import read_predictions

    model = MultiAdapterPredictor.from_runs(runs, device="cpu")
    rows = {
        name: read_predictions(Path(run) / "predictions_validation.csv")[:n]
        for name, run in zip(model.names, runs, strict=True)
    }
    n = min(len(r) for r in rows.values())
    names = model.names
    # text k, each adapter in a rotated order (mixed batches): (name, index of the text in its run's file)
    order = [(name, k) for k in range(n) for name in names[k % len(names) :] + names[: k % len(names)]]
    t0 = time.perf_counter()
    preds = model.predict([(name, rows[name][k]["text"]) for name, k in order])
    seconds = time.perf_counter() - t0
    same, worst = 0, 0.0
    for (name, k), p in zip(order, preds, strict=True):
        same += p["label"] == rows[name][k]["prediction"]
        worst = max(worst, abs(p["confidence"] - rows[name][k]["confidence"]))
    print(
        f"check: {n} validation sentences x {len(runs)} adapters in mixed batches ({seconds:.1f} s): "
        f"labels equal to the runs' own prediction files {same}/{len(order)}, largest confidence difference "
        f"{worst:.1e}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [str(d) for _, d in expand_runs(args.runs)]
    names = [Path(r).name for r in runs]
    texts, source = SL.load_texts()
    print(
        f"adapters: {len(runs)} ({', '.join(names)})\ntexts:    {source}; one text per request\n"
        f"load:     {args.clients} clients, {args.requests} requests per throughput phase, request i -> "
        f"adapter i mod {len(runs)}\n",
        flush=True,
    )
    if args.no_servers:
        if args.forward_rounds:
            time_forwards(runs, args.forward_rounds, args.clients, args.threads)
        if args.check_texts:
            check_against_runs(runs, args.check_texts)
        return 0
    rows, memory, errors = [], [], 0

    for k, run in enumerate(runs):  # one single-model server per run, one at a time
        server = Server([run], args)
        try:
            total = args.requests if k == 0 else args.memory_requests
            phase, rss, hwm, health = measure(server, "single" if k == 0 else f"single {k}", [None], texts, args, total)
        finally:
            server.stop()
        memory.append((names[k], rss, hwm))
        errors += phase.errors if k else 0
        if k == 0:
            rows.append((phase, rss, hwm, health, f"single model ({names[0]}, merged)"))
        print(
            f"single server {k + 1}/{len(runs)} {names[k]}: RSS {rss:.0f} MiB, peak {hwm:.0f} MiB, "
            f"{phase.errors} errors",
            flush=True,
        )

    for mode in ("mixed", "per-adapter"):
        server = Server([*runs, "--adapter-batching", mode], args)
        try:
            phase, rss, hwm, health = measure(server, mode, names, texts, args, args.requests)
        finally:
            server.stop()
        rows.append((phase, rss, hwm, health, f"{len(runs)} adapters, {mode} batches"))
        print(f"{mode} server: RSS {rss:.0f} MiB, peak {hwm:.0f} MiB", flush=True)

    print()
    print(SL.format_table([r[0] for r in rows]))
    print("\n| server | req/s | p50 ms | p95 ms | errors | model calls | texts per call | RSS MiB | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for phase, rss, hwm, health, what in rows:
        ms = [x * 1000 for x in phase.latencies]
        print(
            f"| {what} | {phase.requests / phase.wall:.1f} | {SL.percentile(ms, 50):.1f} | "
            f"{SL.percentile(ms, 95):.1f} | {phase.errors} | {health['calls']} | {health['mean_batch']:.1f} | "
            f"{rss:.0f} | {hwm:.0f} |"
        )
    single_rss = [m[1] for m in memory]
    mean_single = sum(single_rss) / len(single_rss)
    multi_rss = rows[1][1]
    print(
        f"\nmemory: single-model servers {min(single_rss):.0f}-{max(single_rss):.0f} MiB each (mean {mean_single:.0f}), "
        f"{sum(single_rss):.0f} MiB for all {len(runs)}; one server with {len(runs)} adapters {multi_rss:.0f} MiB = "
        f"{multi_rss / mean_single:.2f}x one single server (target <= 1.5x), "
        f"{multi_rss / sum(single_rss):.2f}x all of them"
    )
    single_rate = rows[0][0].requests / rows[0][0].wall
    mixed_rate, per_rate = rows[1][0].requests / rows[1][0].wall, rows[2][0].requests / rows[2][0].wall
    print(
        f"throughput: mixed {mixed_rate / single_rate:.2f}x the single server (target >= 0.7x), per-adapter "
        f"{per_rate / single_rate:.2f}x; mixed / per-adapter {mixed_rate / per_rate:.2f}x"
    )
    if args.forward_rounds:
        time_forwards(runs, args.forward_rounds, args.clients, args.threads)
    if args.check_texts:
        check_against_runs(runs, args.check_texts)
    errors += sum(r[0].errors for r in rows)
    first = next((r[0].first_error for r in rows if r[0].errors), "")
    print(f"errors: {errors}" + (f" (first: {first})" if first else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
