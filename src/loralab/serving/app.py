"""The FastAPI app: ``/predict``, ``/health``, the web page and, over many adapters, ``/adapters``.

POST   /predict          {"texts": [...]} -> {"predictions": [{label, label_name, confidence, probabilities}]}
                         many adapters: also "adapter": NAME, or "adapters": [NAME, ...] | "all"
GET    /health           status, model, label names, limits and batching counters
GET    /adapters         many adapters: each one's name and run metadata, and the default
POST   /adapters         many adapters: {"run": PATH under an --adapter-root, "name": optional}
DELETE /adapters/NAME    many adapters: stop serving one
GET    /                 a self-contained web page (no external resources: works offline)
"""

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from loralab.serving.batcher import MicroBatcher, UnavailableError
from loralab.serving.requests import RequestError, ServeLimits, is_json, parse_request, read_body, request_models

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


def _static(name: str) -> str:
    return resources.files("loralab").joinpath("static", name).read_text(encoding="utf-8")


def resolve_under_roots(path: str, roots: Sequence[Path]) -> Path:
    """The run directory a request names, only if it lies under one of ``roots`` (the
    ``--adapter-root`` folders): a relative path is taken under each root in turn; ``..`` is
    refused outright; symbolic links are resolved before the check. Raises RequestError (403/404)."""
    if not roots:
        raise RequestError(403, "adding adapters is off: start the server with --adapter-root DIR")
    if not path or "\x00" in path:
        raise RequestError(422, "run: give the path of a run directory")
    given = Path(path)
    if ".." in given.parts:
        raise RequestError(403, f"run {path}: '..' is not allowed; give a path under an adapter root")
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    for candidate in candidates:
        resolved = candidate.resolve()  # symbolic links followed before the check
        if not any(resolved.is_relative_to(root) and resolved != root for root in roots):
            raise RequestError(403, f"run {path}: not under an adapter root (--adapter-root)")
        if resolved.is_dir():
            return resolved
    raise RequestError(404, f"run {path}: no such run directory under the adapter roots")


def create_app(
    predictor,
    limits: ServeLimits | None = None,
    info: dict | None = None,
    allowed_hosts: Sequence[str] | None = None,
    adapter_roots: Sequence[str | Path] = (),
    default_adapter: str | None = None,
):
    """The FastAPI app serving ``predictor``: anything with ``predict(texts)`` and ``label_names``,
    or a :class:`~loralab.inference.adapters.MultiAdapterPredictor` (many adapters: ``/adapters`` routes,
    ``adapter``/``adapters`` in ``/predict``; runs may be added from under ``adapter_roots``).

    Use it as an ASGI app (uvicorn, or ``with TestClient(app)``: the batching worker starts and
    stops with the app's lifespan). ``allowed_hosts`` restricts the ``Host`` header (DNS-rebinding
    protection for a loopback server).
    """
    import importlib.metadata

    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from loralab.errors import LoralabError

    multi = hasattr(predictor, "adapters") and hasattr(predictor, "remove")
    limits = limits or ServeLimits()
    limits.validate()
    info = dict(info or {})
    info.setdefault("label_names", list(predictor.label_names))
    info.setdefault("name", "model")
    request_model, response_model, error_model = request_models(multi)
    batcher = MicroBatcher(predictor.predict, limits.max_batch, limits.max_wait_ms / 1000, limits.max_queue)
    page = _static("index.html")
    assets = {name: _static(name) for name in STATIC_FILES}
    roots = [Path(r).resolve() for r in adapter_roots]
    state = {"default": None}
    if multi:
        from loralab.inference.adapters import UnknownAdapterError

        if default_adapter is not None and default_adapter not in predictor.adapters:
            raise UnknownAdapterError(
                f"--default-adapter {default_adapter}: no such adapter (served: {', '.join(predictor.names)})"
            )
        state["default"] = default_adapter or predictor.names[0]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="loralab text classifier",
        version=importlib.metadata.version("loralab"),
        lifespan=lifespan,
        redoc_url=None,
        description="Classify texts with a model trained by loralab. The /docs page loads Swagger UI from a "
        "CDN and needs internet access; /openapi.json works offline.",
    )
    app.state.batcher = batcher
    app.state.limits = limits
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    def error(status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None):
        body = {"detail": detail} if errors is None else {"detail": detail, "errors": errors}
        return JSONResponse(body, status_code=status, headers=headers)

    body_schema = request_model.model_json_schema()
    errors_doc = {
        code: {"model": error_model, "description": why}
        for code, why in (
            (413, "too many texts, a text too long, or the body too large"),
            (415, "the body is not declared as JSON"),
            (422, "the body is not JSON, or not an object with a non-empty list of non-empty strings"),
            (503, "the server is busy (queue full); retry shortly"),
            *([(404, "an unknown adapter")] if multi else []),
        )
    }

    def chosen_adapters(req) -> tuple[list[str], bool]:
        """``(names, several)``: the adapters a request asks for, and whether it used ``adapters``."""
        if req.adapter is not None and req.adapters is not None:
            raise RequestError(422, "give adapter or adapters, not both")
        if req.adapters == "all":
            return predictor.names, True
        if req.adapters is not None:
            if not req.adapters:
                raise RequestError(422, 'adapters: List should have at least 1 item (or "all")')
            if len(set(req.adapters)) != len(req.adapters):
                raise RequestError(422, "adapters: a name is given twice")
            names, several = list(req.adapters), True
        else:
            names, several = [req.adapter or state["default"]], False
        for name in names:
            if name not in predictor.adapters:
                raise RequestError(404, f"unknown adapter {name!r} (GET /adapters lists the served ones)")
        return names, several

    @app.post(
        "/predict",
        response_model=response_model,
        responses=errors_doc,
        summary="Classify texts",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
    )
    async def predict(request: Request):
        """One prediction per text, in input order (many adapters: per text, one per adapter asked)."""
        try:
            if not is_json(request.headers.get("content-type")):
                raise RequestError(415, "send the body as JSON (Content-Type: application/json)")
            req = parse_request(await read_body(request, limits.max_body_bytes), limits, request_model)
            names, several = chosen_adapters(req) if multi else ([], False)
        except RequestError as e:
            return error(e.status, e.detail, e.errors)
        items = [(name, t) for t in req.texts for name in names] if multi else req.texts
        try:
            preds = await batcher.submit(items)
        except UnavailableError as e:
            return error(503, str(e), headers={"Retry-After": "1"})
        except Exception:  # logged by the batcher
            return error(500, "prediction failed (see the server log)")
        if not multi:
            return JSONResponse({"predictions": [{k: p[k] for k in PREDICTION_KEYS} for p in preds]})
        gone = next((name for (name, _), p in zip(items, preds, strict=True) if p is None), None)
        if gone is not None:
            return error(404, f"adapter {gone!r} was removed while the request waited")
        answers = [{"adapter": p["adapter"], **{k: p[k] for k in PREDICTION_KEYS}} for p in preds]
        if not several:
            return JSONResponse({"adapter": names[0], "predictions": answers})
        k = len(names)
        return JSONResponse({"adapters": names, "predictions": [answers[i : i + k] for i in range(0, len(answers), k)]})

    @app.get("/health", summary="Status, model, limits and batching counters")
    async def health():
        extra = (
            {
                "adapters": predictor.names,
                "default_adapter": state["default"],
                "label_names": predictor.adapters[state["default"]].label_names,
            }
            if multi
            else {}
        )
        return {
            "status": "ok" if batcher.running else "stopped",
            **info,
            **extra,
            "limits": asdict(limits),
            "queued": batcher.queued(),
            "batching": asdict(batcher.stats),
        }

    if multi:

        def listing(adapter) -> dict:
            return {"name": adapter.name, "default": adapter.name == state["default"], **adapter.info}

        @app.get("/adapters", summary="The served adapters with their run metadata")
        async def list_adapters():
            return {"default": state["default"], "adapters": [listing(a) for a in list(predictor.adapters.values())]}

        @app.post(
            "/adapters",
            status_code=201,
            summary="Serve one more LoRA run (under an --adapter-root)",
            responses={
                403: {"model": error_model, "description": "the path is not under an adapter root"},
                404: {"model": error_model, "description": "no such run directory"},
                409: {"model": error_model, "description": "the name is taken"},
                422: {"model": error_model, "description": "not a LoRA run over this backbone"},
            },
        )
        async def add_adapter(request: Request):
            from pydantic import BaseModel, ConfigDict, ValidationError

            class AddAdapter(BaseModel):
                model_config = ConfigDict(extra="forbid", strict=True)
                run: str
                name: str | None = None

            try:
                if not is_json(request.headers.get("content-type")):
                    raise RequestError(415, "send the body as JSON (Content-Type: application/json)")
                try:
                    body = AddAdapter.model_validate_json(await read_body(request, 65536))
                except ValidationError as e:
                    first = e.errors(include_url=False)[0]
                    raise RequestError(422, f"{'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}") from None
                run_dir = resolve_under_roots(body.run, roots)
                name = body.name or run_dir.name
                if name in predictor.adapters:
                    raise RequestError(409, f"an adapter named {name!r} is already served")
                try:  # reading the weights is slow: off the event loop
                    adapter = await asyncio.to_thread(predictor.add, run_dir, name)
                except LoralabError as e:
                    detail = str(e).replace(str(run_dir), body.run)
                    raise RequestError(409 if "already served" in detail else 422, detail) from None
            except RequestError as e:
                return error(e.status, e.detail)
            return JSONResponse(listing(adapter), status_code=201)

        @app.delete(
            "/adapters/{name}",
            summary="Stop serving an adapter",
            responses={
                404: {"model": error_model, "description": "no such adapter"},
                409: {"model": error_model, "description": "the last adapter"},
            },
        )
        async def remove_adapter(name: str):
            if name not in predictor.adapters:
                return error(404, f"unknown adapter {name!r} (GET /adapters lists the served ones)")
            if len(predictor.adapters) == 1:
                return error(409, f"{name!r} is the last adapter: a server keeps at least one")
            await asyncio.to_thread(predictor.remove, name)  # waits for a batch being scored
            if state["default"] == name:
                state["default"] = predictor.names[0]
            return {"removed": name, "default": state["default"]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in assets:
            return error(404, "Not Found")
        return Response(assets[name], media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

    return app
