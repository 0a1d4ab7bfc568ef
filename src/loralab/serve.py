"""``loralab serve``: an HTTP service and a web page for a trained run or a merged export.

    POST /predict       {"texts": [...]} -> {"predictions": [{label, label_name, confidence, probabilities}]}
    GET  /health        status, model, label names, limits and batching counters
    GET  /              a self-contained web page (no external resources: works offline)
    GET  /openapi.json  the OpenAPI schema; /docs shows it with Swagger UI, whose JavaScript comes
                        from a CDN, so /docs needs internet access (the schema itself does not)

Bad input never reaches the model: a body that is not JSON or has the wrong shape is a 422, a
body not declared as JSON a 415, too many or too long texts (or too big a body) a 413, and a
full queue a 503, each with a one-line ``detail``.

Concurrent requests are micro-batched (:class:`MicroBatcher`): requests wait in a bounded asyncio
queue; one worker takes the first, gathers more until ``max_batch`` texts or ``max_wait_ms``,
scores them with one :class:`~loralab.predict.Predictor` call in a worker thread (the event loop
stays responsive) and hands each request its slice of the results. A lone request on an idle
server (the previous batch had no company either) does not wait: it is scored at once.

The server binds 127.0.0.1 unless told otherwise, reads weights only from safetensors and never
runs remote code. FastAPI and uvicorn are imported inside functions, so ``import loralab.serve``
works without the ``serve`` extra installed.
"""

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ConfigError, LoralabError, RunDirError

log = logging.getLogger(__name__)

#: Keys of each prediction in a ``/predict`` response.
PREDICTION_KEYS = ("label", "label_name", "confidence", "probabilities")
#: The web page's files, served from the package (``src/loralab/static``).
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class ServeLimits:
    """Request limits and micro-batching settings (each one is a ``loralab serve`` flag)."""

    max_texts: int = 64  # texts per request; more is a 413
    max_chars: int = 2000  # characters per text; longer is a 413
    max_batch: int = 32  # texts per model call (a single larger request is scored alone)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 256  # requests waiting for the model; more is a 503

    def validate(self) -> None:
        for name in ("max_texts", "max_chars", "max_batch", "max_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"--max-wait-ms must be in [0, 1000], got {self.max_wait_ms}")

    @property
    def max_body_bytes(self) -> int:
        """Largest request body read: every text at the limit, each character JSON-escaped as a
        surrogate pair (12 bytes), plus room for whitespace."""
        return self.max_texts * (12 * self.max_chars + 64) + 4096


class RequestError(Exception):
    """A request the service refuses: HTTP status and a one-line reason."""

    def __init__(self, status: int, detail: str, errors: list[dict] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


class UnavailableError(Exception):
    """The service cannot take a request now: the queue is full or it is shutting down (HTTP 503)."""


# ---------------------------------------------------------------------------------------------
# Loading a model
# ---------------------------------------------------------------------------------------------


def load_predictor(path: str | Path, device: str = "auto", batch_size: int | None = None,
                   precision: str = "fp32", compile: bool = False):
    """``(predictor, info)`` for a run directory or a merged export / transformers classifier folder.

    ``info`` describes what is served (shown by ``/health`` and the web page). ``precision`` and
    ``compile`` are the :class:`~loralab.predict.Predictor`'s.
    """
    from . import artifacts as A  # noqa: PLC0415
    from .backbones import max_positions  # noqa: PLC0415
    from .export import (  # noqa: PLC0415
        is_model_folder,
        load_export_predictor,
        read_export_meta,
        require_safetensors,
    )
    from .predict import Predictor  # noqa: PLC0415

    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory or model folder")
    if is_model_folder(path):
        predictor = load_export_predictor(path, device=device, batch_size=batch_size, precision=precision,
                                          compile=compile)
        meta = read_export_meta(path) or {}
        info = {"source": "export" if meta else "model folder", "base_model": meta.get("base_model"),
                "method": meta.get("method")}
    else:
        A.check_run_dir(path)
        meta = A.read_json(path / A.CONFIG_FILE)
        require_safetensors(path, meta)
        predictor = Predictor.from_run(path, device=device, merge=True, batch_size=batch_size, precision=precision,
                                       compile=compile)
        # a run may ask for more tokens than the model has positions: long texts would crash it
        predictor.max_length = min(predictor.max_length, max_positions(predictor.model.config))
        info = {"source": "run", "base_model": meta["config"]["model"]["model"],
                "method": meta["config"]["method"]["method"]}
    import torch  # noqa: PLC0415

    info.update(name=path.resolve().name, label_names=list(predictor.label_names),
                max_length=predictor.max_length, device=str(predictor.device), threads=torch.get_num_threads(),
                precision=predictor.precision, compiled=predictor.compiled)
    return predictor, info


# ---------------------------------------------------------------------------------------------
# Micro-batching
# ---------------------------------------------------------------------------------------------


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future


@dataclass
class BatchStats:
    requests: int = 0  # requests scored
    texts: int = 0  # texts scored
    batches: int = 0  # model calls
    largest_batch: int = 0  # most texts in one model call
    rejected: int = 0  # requests refused because the queue was full
    failed: int = 0  # model calls that raised


@dataclass
class MicroBatcher:
    """Gathers concurrent requests into model calls. Create it, then :meth:`start` it inside the
    running event loop; :meth:`submit` returns one result per text, in order.

    The worker waits up to ``max_wait_s`` for company only when there is reason to expect it
    (requests were already queued, or the previous batch held several); a request larger than
    ``max_batch`` texts is scored alone. The model runs in one dedicated thread, never twice at
    once.
    """

    predict: Callable[[list[str]], list]
    max_batch: int = 32
    max_wait_s: float = 0.005
    max_queue: int = 256
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._getter: asyncio.Future | None = None
        self._carry: _Job | None = None
        self._scoring: list[_Job] = []  # the batch the model is working on
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        # one thread: the model is called by one batch at a time, never concurrently
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loralab-predict")
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="loralab-batcher")

    async def stop(self) -> None:
        scoring = list(self._scoring)  # cancelling the worker clears it
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._getter is not None:
            self._getter.cancel()
        pending = [*scoring, *([self._carry] if self._carry else [])]
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for job in pending:
            if not job.future.done():
                job.future.set_exception(UnavailableError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False)  # a model call under way finishes on its own
        self._task = self._getter = self._carry = None

    async def submit(self, texts: list[str]) -> list:
        if not self.running:
            raise UnavailableError("the server is not running (no batching worker)")
        job = _Job(list(texts), asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise UnavailableError(f"the server is busy ({self.max_queue} requests waiting); retry shortly") from None
        return await job.future

    async def _next(self, timeout: float | None) -> tuple[_Job | None, bool]:
        """``(job, waited)``: the next job, waiting at most ``timeout`` seconds (None: forever);
        ``waited`` says whether none was ready. A ``get`` that times out is kept for the next
        call rather than cancelled, so no job is ever lost."""
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job, False
        if self._getter is None:
            with contextlib.suppress(asyncio.QueueEmpty):
                return self._queue.get_nowait(), False
            if timeout is not None and timeout <= 0:
                return None, True
            self._getter = asyncio.ensure_future(self._queue.get())
        elif self._getter.done():  # arrived while the model was busy
            job, self._getter = self._getter.result(), None
            return job, False
        done, _ = await asyncio.wait({self._getter}, timeout=timeout)
        if not done:
            return None, True
        job, self._getter = self._getter.result(), None
        return job, True

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        last_requests = 0  # requests in the previous batch
        while True:
            first, idle = await self._next(None)
            # A lone client (the server was idle and the previous batch had no company) is scored
            # at once: waiting for others would only add max_wait to its latency.
            wait = 0.0 if idle and last_requests <= 1 else self.max_wait_s
            batch, n = [first], len(first.texts)
            deadline = loop.time() + wait
            while n < self.max_batch:
                job, _ = await self._next(deadline - loop.time())
                if job is None:
                    break
                if n + len(job.texts) > self.max_batch:
                    self._carry = job  # starts the next batch
                    break
                batch.append(job)
                n += len(job.texts)
            last_requests = len(batch)
            batch = [j for j in batch if not j.future.done()]  # clients that went away
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        self._scoring = batch
        try:
            results = await loop.run_in_executor(self._executor, self.predict, texts)
        except Exception as e:  # the model failed: fail these requests, keep serving
            log.exception("prediction failed for a batch of %d texts", len(texts))
            self.stats.failed += 1
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        finally:
            self._scoring = []
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.texts += len(texts)
        self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
        start = 0
        for job in batch:
            end = start + len(job.texts)
            if not job.future.done():
                job.future.set_result(results[start:end])
            start = end


# ---------------------------------------------------------------------------------------------
# Request validation
# ---------------------------------------------------------------------------------------------


def _request_model():
    from pydantic import BaseModel, ConfigDict, Field  # noqa: PLC0415

    class PredictRequest(BaseModel):
        """Texts to classify, one review each."""

        model_config = ConfigDict(extra="forbid", strict=True)
        texts: list[str] = Field(min_length=1, description="texts to classify (non-empty, in order)",
                                 examples=[["a gorgeous, witty film", "a tedious mess"]])

    class Prediction(BaseModel):
        label: int = Field(description="predicted label id")
        label_name: str = Field(description="predicted label name")
        confidence: float = Field(description="probability of the predicted label")
        probabilities: list[float] = Field(description="probability of each label, in label-id order")

    class PredictResponse(BaseModel):
        predictions: list[Prediction] = Field(description="one per input text, in input order")

    class ErrorResponse(BaseModel):
        detail: str = Field(description="what was wrong, in one line")

    return PredictRequest, PredictResponse, ErrorResponse


def parse_texts(body: bytes, limits: ServeLimits, model) -> list[str]:
    """Validate a ``/predict`` body against ``model`` (the request schema) and ``limits``;
    raise :class:`RequestError` (422 bad JSON/shape, 413 over a limit)."""
    from pydantic import ValidationError  # noqa: PLC0415

    if not body.strip():
        raise RequestError(422, 'empty body: send JSON like {"texts": ["a review"]}')
    try:
        texts = model.model_validate_json(body).texts
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RequestError(422, f"{where}: {first['msg']}{more}",
                           [{"loc": list(x["loc"]), "msg": x["msg"], "type": x["type"]} for x in errors]) from None
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"too many texts: {len(texts)} (at most {limits.max_texts} per request)")
    for i, t in enumerate(texts):
        if len(t) > limits.max_chars:
            raise RequestError(413, f"texts.{i}: too long: {len(t)} characters (at most {limits.max_chars})")
        if not t.strip():
            raise RequestError(422, f"texts.{i}: empty text")
    return texts


async def _read_body(request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"request body too large: {int(declared)} bytes (at most {max_bytes})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"request body too large: more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # curl --data-binary without -H: accept, the body is still checked
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------


def _static(name: str) -> str:
    return resources.files("loralab").joinpath("static", name).read_text(encoding="utf-8")


def create_app(predictor, limits: ServeLimits | None = None, info: dict | None = None,
               allowed_hosts: Sequence[str] | None = None):
    """The FastAPI app serving ``predictor`` (anything with ``predict(texts)`` and ``label_names``).

    Use it as an ASGI app (uvicorn, or ``with TestClient(app)``: the batching worker starts and
    stops with the app's lifespan). ``allowed_hosts`` restricts the ``Host`` header (DNS-rebinding
    protection for a loopback server).
    """
    from fastapi import FastAPI, Request  # noqa: PLC0415
    from fastapi.responses import HTMLResponse, JSONResponse, Response  # noqa: PLC0415

    from . import __version__  # noqa: PLC0415

    limits = limits or ServeLimits()
    limits.validate()
    info = dict(info or {})
    info.setdefault("label_names", list(predictor.label_names))
    info.setdefault("name", "model")
    request_model, response_model, error_model = _request_model()
    batcher = MicroBatcher(predictor.predict, limits.max_batch, limits.max_wait_ms / 1000, limits.max_queue)
    page = _static("index.html")
    assets = {name: _static(name) for name in STATIC_FILES}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="loralab text classifier", version=__version__, lifespan=lifespan, redoc_url=None,
        description="Classify texts with a model trained by loralab. The /docs page loads Swagger UI from a "
                    "CDN and needs internet access; /openapi.json works offline.",
    )
    app.state.batcher = batcher
    app.state.limits = limits
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware  # noqa: PLC0415

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    def error(status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None):
        body = {"detail": detail} if errors is None else {"detail": detail, "errors": errors}
        return JSONResponse(body, status_code=status, headers=headers)

    body_schema = request_model.model_json_schema()
    errors_doc = {code: {"model": error_model, "description": why} for code, why in (
        (413, "too many texts, a text too long, or the body too large"),
        (415, "the body is not declared as JSON"),
        (422, "the body is not JSON, or not an object with a non-empty list of non-empty strings"),
        (503, "the server is busy (queue full); retry shortly"),
    )}

    @app.post("/predict", response_model=response_model, responses=errors_doc, summary="Classify texts",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}})
    async def predict(request: Request):
        """One prediction per text, in input order."""
        try:
            if not _is_json(request.headers.get("content-type")):
                raise RequestError(415, "send the body as JSON (Content-Type: application/json)")
            texts = parse_texts(await _read_body(request, limits.max_body_bytes), limits, request_model)
        except RequestError as e:
            return error(e.status, e.detail, e.errors)
        try:
            preds = await batcher.submit(texts)
        except UnavailableError as e:
            return error(503, str(e), headers={"Retry-After": "1"})
        except Exception:  # logged by the batcher
            return error(500, "prediction failed (see the server log)")
        return JSONResponse({"predictions": [{k: p[k] for k in PREDICTION_KEYS} for p in preds]})

    @app.get("/health", summary="Status, model, limits and batching counters")
    async def health():
        return {"status": "ok" if batcher.running else "stopped", **info, "limits": asdict(limits),
                "queued": batcher.queued(), "batching": asdict(batcher.stats)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in assets:
            return error(404, "Not Found")
        return Response(assets[name], media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket for uvicorn (``port=0``: a free port).

    Created with ``proto=IPPROTO_TCP`` on purpose: asyncio sets TCP_NODELAY only on sockets that
    say so, and without it every response (headers and body are two writes) waits ~40 ms for
    the client's delayed ACK (Nagle's algorithm).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # connectable from now on: clients wait in the backlog until uvicorn runs
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread (tests, benchmarks); yields its base URL.
    ``port=0`` picks a free port. The server stops when the block exits."""
    import uvicorn  # noqa: PLC0415

    sock = bind_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="loralab-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    try:
        yield f"http://{shown}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def add_parser(subparsers) -> None:
    from .predict import add_inference_flags  # noqa: PLC0415

    d = ServeLimits()
    p = subparsers.add_parser(
        "serve", help="HTTP service + web page for a run or a merged export",
        description="Serve a run directory or a merged export over HTTP: POST /predict, GET /health, a web "
                    "page at /, the schema at /openapi.json (/docs needs internet: Swagger UI comes from a CDN).")
    p.add_argument("path", metavar="RUN_OR_EXPORT", help="run directory, or a folder written by loralab export --merge")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--max-texts", type=int, default=d.max_texts, help=f"texts per request (default: {d.max_texts})")
    p.add_argument("--max-chars", type=int, default=d.max_chars,
                   help=f"characters per text (default: {d.max_chars})")
    p.add_argument("--max-batch", type=int, default=d.max_batch,
                   help=f"texts per model call when batching requests (default: {d.max_batch})")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help=f"how long a request waits for others to batch with (default: {d.max_wait_ms:g})")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"requests waiting for the model before answering 503 (default: {d.max_queue})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core; 1 is much faster on a "
                        "machine whose cores are busy with other work)")
    add_inference_flags(p)  # compiled at start-up, before the first request
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    limits = ServeLimits(args.max_texts, args.max_chars, args.max_batch, args.max_wait_ms, args.max_queue)
    limits.validate()
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {args.port}")
    try:
        import fastapi  # noqa: F401, PLC0415
        import uvicorn  # noqa: PLC0415
    except ImportError as e:
        raise LoralabError(f"serve needs the serve extra ({e.name} is missing): pip install 'loralab[serve]'") from None
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.threads)
    predictor, info = load_predictor(args.path, device=args.device, precision=args.precision, compile=args.compile)
    predictor.warm_up()  # one-off costs (compilation included) are paid here, not by the first clients
    loopback = is_loopback(args.host)
    if not loopback:
        log.warning("binding %s: anyone who can reach this address can use the model (no authentication)", args.host)
    # DNS-rebinding protection: a loopback server answers only to loopback names (not for IPv6,
    # whose "[::1]:port" Host header the middleware cannot parse)
    allowed = ["localhost", "127.0.0.1", args.host] if loopback and ":" not in args.host else None
    app = create_app(predictor, limits, info, allowed_hosts=allowed)
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as e:
        raise LoralabError(f"--host {args.host} --port {args.port}: cannot bind ({e.strerror or e})") from None
    shown = f"[{args.host}]" if sock.family == socket.AF_INET6 else args.host
    print(f"serving {args.path} ({info['source']}, labels: {', '.join(info['label_names'])}) "
          f"on http://{shown}:{sock.getsockname()[1]}/  (API: POST /predict, schema: /openapi.json)", flush=True)
    config = uvicorn.Config(app, log_level="warning" if args.quiet else "info", access_log=args.access_log)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
