"""Load test of ``loralab serve``: throughput and latency under concurrent clients, on loopback.

    python bench/serve_load.py /tmp/serve-minilm               # start a server for a run or export
    python bench/serve_load.py --url http://127.0.0.1:8000     # target a running server (loopback only)
    python bench/serve_load.py RUN --quick                      # smoke mode (used by the tests)

Two phases, each bounded by a request count: ``sequential`` (one client, one text per request:
the latency a single user sees) and ``concurrent`` (``--clients`` threads with keep-alive
connections sharing ``--requests`` requests: what micro-batching buys). Prints one table with
requests/s, p50/p95/p99 latency and errors, plus the server's batching counters. The server the
benchmark starts listens on 127.0.0.1 only and is stopped at the end; the exit code is 1 if any
request failed.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from loralab.serving.server import is_loopback

FALLBACK_TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate clichés from start to finish.",
    "an utterly charming and hilarious film that reminded me of why i love movies.",
    "it's a tedious, joyless slog.",
    "the acting is superb and the story is moving.",
    "clumsy, dull and far too long.",
    "one of the smartest comedies of the year.",
    "i walked out after forty minutes.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target", nargs="?", help="run directory or merged export to serve (omit with --url)")
    p.add_argument("--url", help="benchmark a server that is already running (loopback addresses only)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--requests", type=int, default=2000, help="requests in the concurrent phase (default 2000)")
    p.add_argument("--sequential", type=int, default=200, help="single-text requests in the sequential phase")
    p.add_argument("--texts-per-request", type=int, default=1, help="texts per request in the concurrent phase")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests before timing")
    p.add_argument("--max-batch", type=int, default=None, help="server --max-batch (server default if omitted)")
    p.add_argument("--max-wait-ms", type=float, default=None, help="server --max-wait-ms")
    p.add_argument("--threads", type=int, default=None, help="server --threads (torch CPU threads)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="server --precision")
    p.add_argument("--compile", action="store_true", help="server --compile (compiles at start-up)")
    p.add_argument("--startup-timeout", type=float, default=300, help="seconds to wait for the server to start")
    p.add_argument("--request-timeout", type=float, default=60, help="seconds before one request counts as failed")
    p.add_argument("--quick", action="store_true", help="smoke mode: 4 clients, 100 requests, 20 sequential")
    args = p.parse_args(argv)
    if (args.target is None) == (args.url is None):
        p.error("give a RUN_OR_EXPORT to serve, or --url of a running server (not both)")
    if args.url and not is_loopback(urlsplit(args.url).hostname or ""):
        p.error(f"--url {args.url}: only loopback servers (127.0.0.1, localhost, ::1) are benchmarked")
    if args.quick:
        args.clients, args.requests, args.sequential, args.warmup = 4, 100, 20, 3
    for name in ("clients", "requests", "sequential", "texts_per_request"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def load_texts() -> tuple[list[str], str]:
    """SST-2 validation sentences (``$LORALAB_DATA_DIR``, else ``../shared/data/sst2`` beside the
    checkout) when they are there, else a few built-in reviews."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
    path = Path(os.environ.get("LORALAB_DATA_DIR") or default) / "validation.tsv"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
        texts = [line.split("\t")[0] for line in lines if line.split("\t")[0].strip()]
        if texts:
            return texts, f"{len(texts)} sentences from {path}"
    return FALLBACK_TEXTS, f"{len(FALLBACK_TEXTS)} built-in reviews"


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class Server:
    """``loralab serve TARGET --host 127.0.0.1 --port 0`` in a subprocess; the port is read from
    the line it prints once it is listening."""

    def __init__(self, target: str, args: argparse.Namespace) -> None:
        cmd = [sys.executable, "-m", "loralab", "-q", "serve", target, "--host", "127.0.0.1", "--port", "0"]
        for flag in ("max_batch", "max_wait_ms", "threads", "precision"):
            if getattr(args, flag) is not None:
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        if args.compile:
            cmd.append("--compile")
        self._start(cmd, args.startup_timeout)

    def _start(self, cmd: list[str], timeout: float) -> None:
        self.stderr = tempfile.TemporaryFile()
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        self.url = self._wait_for_url(timeout)

    def _wait_for_url(self, timeout: float) -> str:
        found: list[str] = []

        def read() -> None:
            for line in self.proc.stdout:  # keeps draining after the URL so the pipe never fills
                m = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
                if m and not found:
                    found.append(m.group(1))

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                self.stderr.seek(0)
                tail = self.stderr.read().decode("utf-8", "replace").strip().splitlines()[-5:]
                raise SystemExit("the server did not start:\n  " + "\n  ".join(tail))
            time.sleep(0.05)
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    wall: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors


class Client:
    """One keep-alive connection; ``post`` returns (seconds, error or "")."""

    def __init__(self, url: str, timeout: float) -> None:
        u = urlsplit(url)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, texts: list[str]) -> tuple[float, str]:
        body = json.dumps({"texts": texts}).encode("utf-8")
        t0 = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            data = resp.read()
            elapsed = time.perf_counter() - t0
            if resp.status != 200:
                return elapsed, f"HTTP {resp.status}: {data[:200].decode('utf-8', 'replace')}"
            if len(json.loads(data)["predictions"]) != len(texts):
                return elapsed, "wrong number of predictions"
            return elapsed, ""
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            self.close()
            return time.perf_counter() - t0, f"{type(e).__name__}: {e}"

    def get_json(self, path: str) -> dict:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def wait_ready(client: Client, timeout: float) -> dict:
    """``/health`` once the server answers it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.get_json("/health")
        except (OSError, http.client.HTTPException, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_phase(
    name: str, url: str, *, clients: int, total: int, per_request: int, texts: list[str], timeout: float
) -> Phase:
    phase = Phase(name, clients)
    counter = itertools.count()  # next() on a count is atomic under the GIL
    lock = threading.Lock()

    def work() -> None:
        client = Client(url, timeout)
        try:
            while (i := next(counter)) < total:
                batch = [texts[(i * per_request + k) % len(texts)] for k in range(per_request)]
                elapsed, err = client.post(batch)
                with lock:
                    if err:
                        phase.errors += 1
                        phase.first_error = phase.first_error or err
                    else:
                        phase.latencies.append(elapsed)
        finally:
            client.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - t0
    return phase


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1] if q < 100 else max(values)


def format_table(phases: list[Phase]) -> str:
    header = ("phase", "clients", "requests", "errors", "wall s", "req/s", "p50 ms", "p95 ms", "p99 ms")
    rows = [header]
    for p in phases:
        ms = [x * 1000 for x in p.latencies]
        rows.append(
            (
                p.name,
                str(p.clients),
                str(p.requests),
                str(p.errors),
                f"{p.wall:.2f}",
                f"{p.requests / p.wall:.1f}" if p.wall else "—",
                f"{percentile(ms, 50):.1f}",
                f"{percentile(ms, 95):.1f}",
                f"{percentile(ms, 99):.1f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    texts, source = load_texts()
    server = Server(args.target, args) if args.target else None
    url = server.url if server else args.url.rstrip("/")
    try:
        probe = Client(url, args.request_timeout)
        health = wait_ready(probe, args.startup_timeout)
        lim = health.get("limits", {})
        print(
            f"target:  {args.target or url} ({health.get('source', '?')}, {health.get('method') or '?'}, "
            f"labels {', '.join(health.get('label_names', []))})"
        )
        print(
            f"server:  {url}{' (started by this benchmark)' if server else ''}; device {health.get('device')}, "
            f"threads {health.get('threads')}, {health.get('precision', 'fp32')}"
            f"{', compiled' if health.get('compiled') else ''}, max-batch {lim.get('max_batch')}, "
            f"max-wait {lim.get('max_wait_ms')} ms"
        )
        print(f"texts:   {source}; concurrent phase: {args.texts_per_request} per request\n")
        for i in range(args.warmup):
            probe.post([texts[i % len(texts)]])
        probe.close()

        sequential = run_phase(
            "sequential",
            url,
            clients=1,
            total=args.sequential,
            per_request=1,
            texts=texts,
            timeout=args.request_timeout,
        )
        before = Client(url, args.request_timeout).get_json("/health")["batching"]
        concurrent = run_phase(
            "concurrent",
            url,
            clients=args.clients,
            total=args.requests,
            per_request=args.texts_per_request,
            texts=texts,
            timeout=args.request_timeout,
        )
        after = Client(url, args.request_timeout).get_json("/health")["batching"]
    finally:
        if server:
            server.stop()

    print(format_table([sequential, concurrent]))
    calls = after["batches"] - before["batches"]
    served = after["texts"] - before["texts"]
    if calls:
        print(
            f"\nserver batching (concurrent phase): {after['requests'] - before['requests']} requests in {calls} "
            f"model calls, mean {served / calls:.1f} texts per call, largest so far {after['largest_batch']}; "
            f"rejected (503) {after['rejected'] - before['rejected']}"
        )
    print(f"single-text sequential latency p50: {percentile([x * 1000 for x in sequential.latencies], 50):.1f} ms")
    errors = sequential.errors + concurrent.errors
    print(f"errors: {errors}" + (f" (first: {sequential.first_error or concurrent.first_error})" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
