"""``loralab serve RUN_OR_STUDY ...``: the sub-command's flags (the service: :mod:`loralab.serving`)."""

from __future__ import annotations

from loralab.cli.predict import add_inference_flags
from loralab.serving.requests import ServeLimits
from loralab.serving.server import cmd_serve


def add_parser(subparsers) -> None:
    d = ServeLimits()
    p = subparsers.add_parser(
        "serve",
        help="HTTP service + web page for a run, an export (merged or adapter), or many LoRA runs",
        description="Serve a run directory or an export (merged or adapter) over HTTP: POST /predict, GET /health, a web "
        "page at /, the schema at /openapi.json (/docs needs internet: Swagger UI comes from a CDN). "
        "Several LoRA runs (or a study folder: all its LoRA runs) are served over one backbone, "
        'each as an adapter with its own head: GET /adapters, POST /predict with "adapter".',
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_STUDY",
        help="run directory, or a folder written by loralab export --merge; several LoRA runs (NAME=RUN "
        "to name one) or study folders: one adapter each, over one backbone",
    )
    p.add_argument(
        "--default-adapter",
        metavar="NAME",
        default=None,
        help="the adapter of requests that name none (default: the first)",
    )
    p.add_argument(
        "--adapter-root",
        metavar="DIR",
        action="append",
        default=[],
        help="POST /adapters may add run directories found under DIR (repeatable; needs --admin-token)",
    )
    p.add_argument(
        "--admin-token",
        metavar="TOKEN",
        default=None,
        help="turn on POST /adapters and DELETE /adapters/NAME for requests with Authorization: Bearer TOKEN "
        "(at least 16 ASCII characters; default: the LORALAB_ADMIN_TOKEN environment variable, which other users "
        "cannot read in the process list; neither: the routes are off)",
    )
    p.add_argument(
        "--max-adapters",
        type=int,
        default=64,
        metavar="N",
        help="the most adapters served at once, at start-up and through POST /adapters (default: 64)",
    )
    p.add_argument(
        "--adapter-batching",
        choices=("mixed", "per-adapter"),
        default="mixed",
        help="mixed (default): requests for different adapters share one forward pass; per-adapter: "
        "one forward pass per adapter (for comparison)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--max-texts", type=int, default=d.max_texts, help=f"texts per request (default: {d.max_texts})")
    p.add_argument("--max-chars", type=int, default=d.max_chars, help=f"characters per text (default: {d.max_chars})")
    p.add_argument(
        "--max-batch",
        type=int,
        default=d.max_batch,
        help=f"texts per model call when batching requests (default: {d.max_batch})",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=d.max_wait_ms,
        help=f"how long a request waits for others to batch with (default: {d.max_wait_ms:g})",
    )
    p.add_argument(
        "--max-predictions",
        type=int,
        default=d.max_predictions,
        help='many adapters: texts x adapters in one request with "adapters" (a list or "all"; '
        f"default: {d.max_predictions})",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help=f"requests waiting for the model before answering 503 (default: {d.max_queue})",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, one per core; 1 is much faster on a "
        "machine whose cores are busy with other work)",
    )
    add_inference_flags(p)  # compiled at start-up, before the first request
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)
