"""``loralab serve``: loading what is served (a run, an export, or many LoRA runs over one
backbone) and the command line; the service itself lives in :mod:`loralab.serving`.

    POST /predict       {"texts": [...]} -> {"predictions": [{label, label_name, confidence, probabilities}]}
    GET  /health        status, model, label names, limits and batching counters
    GET  /              a self-contained web page (no external resources: works offline)
    GET  /openapi.json  the OpenAPI schema; /docs shows it with Swagger UI, whose JavaScript comes
                        from a CDN, so /docs needs internet access (the schema itself does not)
    GET/POST /adapters, DELETE /adapters/NAME   with several LoRA runs (docs/serving.md); adding
                        and removing need --admin-token (or LORALAB_ADMIN_TOKEN) and a bearer token

Bad input never reaches the model: a body that is not JSON or has the wrong shape is a 422, a
body not declared as JSON a 415, too many or too long texts (or too big a body) a 413, and a
full queue a 503, each with a one-line ``detail``. Concurrent requests are micro-batched
(:class:`~loralab.serving.batcher.MicroBatcher`); with many adapters, requests for different
adapters share one forward pass (:mod:`loralab.inference.adapters`).

The server binds 127.0.0.1 unless told otherwise, reads weights only from safetensors and never
runs remote code. FastAPI and uvicorn are imported inside functions, so ``import loralab.serving.server``
works without the ``serve`` extra installed.
"""

import argparse
import logging
import os
import socket
from pathlib import Path

from loralab.errors import ConfigError, LoralabError, RunDirError
from loralab.serving.app import PAGE_HEADERS, PREDICTION_KEYS, STATIC_FILES, create_app, resolve_under_roots
from loralab.serving.batcher import BatchStats, MicroBatcher, UnavailableError
from loralab.serving.net import bind_socket, is_loopback, serve_in_thread
from loralab.serving.requests import RequestError, ServeLimits, parse_texts

__all__ = [
    "PAGE_HEADERS",
    "PREDICTION_KEYS",
    "STATIC_FILES",
    "BatchStats",
    "MicroBatcher",
    "RequestError",
    "ServeLimits",
    "UnavailableError",
    "bind_socket",
    "cmd_serve",
    "create_app",
    "is_loopback",
    "load_adapters",
    "load_predictor",
    "parse_texts",
    "resolve_under_roots",
    "serve_in_thread",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Loading a model
# ---------------------------------------------------------------------------------------------


def load_predictor(
    path: str | Path,
    device: str = "auto",
    batch_size: int | None = None,
    precision: str = "fp32",
    compile: bool = False,
):
    """``(predictor, info)`` for a run directory or a merged export / transformers classifier folder.

    ``info`` describes what is served (shown by ``/health`` and the web page). ``precision`` and
    ``compile`` are the :class:`~loralab.inference.predictor.Predictor`'s.
    """
    from loralab.files import read_json
    from loralab.inference.predictor import Predictor, load_export_predictor
    from loralab.models.backbones import length_cap
    from loralab.runs.exported import is_model_folder, read_export_meta
    from loralab.runs.layout import CONFIG_FILE, check_run_dir

    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory or model folder")
    if is_model_folder(path):
        predictor = load_export_predictor(
            path, device=device, batch_size=batch_size, precision=precision, compile=compile
        )
        meta = read_export_meta(path) or {}
        info = {
            "source": "export" if meta else "model folder",
            "base_model": meta.get("base_model"),
            "method": meta.get("method"),
            "text_pair": (meta.get("columns") or {}).get("text_pair"),
        }
    else:
        check_run_dir(path)
        meta = read_json(path / CONFIG_FILE)
        predictor = Predictor.from_run(
            path, device=device, merge=True, batch_size=batch_size, precision=precision, compile=compile
        )
        # a run may ask for more tokens than the model has positions: long texts would crash it
        predictor.max_length = length_cap(predictor.max_length, predictor.model.config)
        info = {
            "source": "run",
            "base_model": meta["config"]["model"]["model"],
            "method": meta["config"]["method"]["method"],
            "text_pair": meta["config"]["data"].get("text_pair_column"),  # a pair run: the page shows two boxes
        }
    import torch

    info.update(
        name=path.resolve().name,
        label_names=list(predictor.label_names),
        task="regression" if len(predictor.label_names) == 1 else "classification",
        max_length=predictor.max_length,
        device=str(predictor.device),
        threads=torch.get_num_threads(),
        precision=predictor.precision,
        compiled=predictor.compiled,
    )
    return predictor, info


def load_adapters(
    paths,
    device: str = "auto",
    batch_size: int | None = None,
    precision: str = "fp32",
    mixed: bool = True,
    max_adapters: int | None = None,
):
    """``(predictor, info)`` for many LoRA runs over one backbone: run directories, ``NAME=RUN``
    or study folders (all their LoRA runs); see :class:`~loralab.inference.adapters.MultiAdapterPredictor`.
    ``max_adapters``: the most adapters served at once (start-up and ``POST /adapters``; None: no cap)."""
    import torch

    from loralab.inference.adapters import MultiAdapterPredictor, adapter_name, expand_runs
    from loralab.runs.weights import require_safetensors

    runs = expand_runs([str(p) for p in paths])
    for _, run_dir in runs:
        if not Path(run_dir).is_dir():
            raise RunDirError(f"{run_dir}: no such run directory or study folder")
    predictor = MultiAdapterPredictor.from_runs(
        [d for _, d in runs],
        [n or adapter_name(d) for n, d in runs],
        device=device,
        batch_size=batch_size,
        precision=precision,
        mixed=mixed,
        max_adapters=max_adapters,
    )
    for adapter in predictor.adapters.values():
        require_safetensors(adapter.run_dir, {"config": {"method": {"method": "lora"}}})
    info = {
        "source": "adapters",
        "base_model": predictor.backbone,
        "method": "lora",
        "name": f"{len(predictor.adapters)} adapters over {predictor.backbone}",
        "device": str(predictor.device),
        "threads": torch.get_num_threads(),
        "precision": predictor.precision,
        "compiled": False,
        "adapter_batching": "mixed" if mixed else "per-adapter",
    }
    return predictor, info


def is_multi(args: argparse.Namespace) -> bool:
    """Whether ``loralab serve`` serves adapters over one backbone (rather than one merged model)."""
    from loralab.runs.layout import STUDY_FILE

    return (
        len(args.paths) > 1
        or bool(args.adapter_root)
        or args.default_adapter is not None
        or args.adapter_batching != "mixed"
        or any((Path(p) / STUDY_FILE).is_file() for p in args.paths)
    )


#: The environment variable that holds the admin token when ``--admin-token`` is not given.
ADMIN_TOKEN_ENV = "LORALAB_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 16


def admin_token(args: argparse.Namespace, multi: bool) -> str | None:
    """The admin token of ``POST``/``DELETE /adapters``: ``--admin-token``, else the environment
    variable (which a single-model server ignores: it has no admin routes), else None (off)."""
    token = args.admin_token
    if token is not None and not multi:
        raise ConfigError(
            "--admin-token: a single model has no admin routes (serve several runs, or add --adapter-root)"
        )
    if token is None and multi:
        token = os.environ.get(ADMIN_TOKEN_ENV) or None
    if token is not None and (
        len(token) < MIN_TOKEN_CHARS or token != token.strip() or not (token.isascii() and token.isprintable())
    ):
        raise ConfigError(
            f"--admin-token / {ADMIN_TOKEN_ENV}: use at least {MIN_TOKEN_CHARS} printable ASCII characters "
            "without surrounding spaces, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    limits = ServeLimits(
        args.max_texts, args.max_chars, args.max_batch, args.max_wait_ms, args.max_queue, args.max_predictions
    )
    limits.validate()
    if args.max_adapters < 1:
        raise ConfigError(f"--max-adapters must be at least 1, got {args.max_adapters}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {args.port}")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise LoralabError(f"serve needs the serve extra ({e.name} is missing): pip install 'loralab[serve]'") from None
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    roots = []
    for root in args.adapter_root:
        if not Path(root).is_dir():
            raise ConfigError(f"--adapter-root {root}: no such folder")
        roots.append(Path(root))
    multi = is_multi(args)
    token = admin_token(args, multi)
    if multi:
        if args.compile:
            raise ConfigError("--compile serves one model; it does not apply to several adapters")
        if roots and token is None:
            log.warning("--adapter-root without an admin token: POST /adapters stays off (see --admin-token)")
        predictor, info = load_adapters(
            args.paths,
            device=args.device,
            precision=args.precision,
            mixed=args.adapter_batching == "mixed",
            max_adapters=args.max_adapters,
        )
    else:
        predictor, info = load_predictor(
            args.paths[0], device=args.device, precision=args.precision, compile=args.compile
        )
    predictor.warm_up()  # one-off costs (compilation included) are paid here, not by the first clients
    loopback = is_loopback(args.host)
    if not loopback:
        log.warning("binding %s: anyone who can reach this address can use the model (no authentication)", args.host)
    # DNS-rebinding protection: a loopback server answers only to loopback names (not for IPv6,
    # whose "[::1]:port" Host header the middleware cannot parse)
    allowed = ["localhost", "127.0.0.1", args.host] if loopback and ":" not in args.host else None
    app = create_app(
        predictor,
        limits,
        info,
        allowed_hosts=allowed,
        adapter_roots=roots,
        default_adapter=args.default_adapter,
        admin_token=token,
    )
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as e:
        raise LoralabError(f"--host {args.host} --port {args.port}: cannot bind ({e.strerror or e})") from None
    shown = f"[{args.host}]" if sock.family == socket.AF_INET6 else args.host
    what = (
        f"{len(predictor.adapters)} adapters over {info['base_model']} ({', '.join(predictor.names)})"
        if multi
        else f"{args.paths[0]} ({info['source']}, labels: {', '.join(info['label_names'])})"
    )
    print(
        f"serving {what} on http://{shown}:{sock.getsockname()[1]}/  (API: POST /predict, schema: /openapi.json)",
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning" if args.quiet else "info", access_log=args.access_log)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
