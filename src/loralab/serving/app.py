"""The FastAPI app: ``/predict``, ``/health``, the web page and, over many adapters, ``/adapters``.

POST   /predict          {"texts": [...]} -> {"predictions": [{label, label_name, confidence, probabilities}]}
                         pair models: also "text_pairs": [...]; regression models answer {"score"}
                         many adapters: also "adapter": NAME, or "adapters": [NAME, ...] | "all"
GET    /health           status, model, label names, limits and batching counters
GET    /adapters         many adapters: each one's name and run metadata, and the default
POST   /adapters         many adapters, admin: {"run": PATH under an --adapter-root, "name": optional}
DELETE /adapters/NAME    many adapters, admin: stop serving one (?new_default=OTHER for the default one)
GET    /                 a self-contained web page (no external resources: works offline)

The admin routes are off unless the server has an admin token; then they need
``Authorization: Bearer TOKEN``. The rules on what is served (names, runs, the default, the last
adapter, the cap) are the adapter registry's (:mod:`loralab.inference.registry`), not this layer's.
"""

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from loralab.serving.batcher import MicroBatcher, UnavailableError
from loralab.serving.requests import (
    RequestError,
    ServeLimits,
    check_admin,
    is_json,
    parse_request,
    read_body,
    request_models,
)

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


def predict_items(predictor):
    """The batcher's scoring function over one predictor: items are texts, or ``(text, text_pair)``
    tuples for a pair model."""

    def predict(items: list):
        if items and isinstance(items[0], tuple):
            return predictor.predict([a for a, _ in items], [b for _, b in items])
        return predictor.predict(items)

    return predict


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


def shown_path(path: Path, roots: Sequence[Path]) -> str:
    """A served run as clients see it: relative to its adapter root, else its folder's name
    (never the server's absolute path)."""
    root = next((r for r in roots if path.is_relative_to(r) and path != r), None)
    return path.relative_to(root).as_posix() if root is not None else path.name


def public_name(value):
    """A model name as clients see it: a local folder (an absolute path) by its name only."""
    return Path(value).name if isinstance(value, str) and os.path.isabs(value) else value


def error_status(e: Exception) -> int:
    """The HTTP status of a refused change to the served adapters."""
    from loralab.inference.registry import AdapterConflictError, AdapterPathError, UnknownAdapterError

    for kind, status in ((UnknownAdapterError, 404), (AdapterPathError, 403), (AdapterConflictError, 409)):
        if isinstance(e, kind):
            return status
    return 422


def create_app(
    predictor,
    limits: ServeLimits | None = None,
    info: dict | None = None,
    allowed_hosts: Sequence[str] | None = None,
    adapter_roots: Sequence[str | Path] = (),
    default_adapter: str | None = None,
    admin_token: str | None = None,
):
    """The FastAPI app serving ``predictor``: anything with ``predict(texts)`` and ``label_names``,
    or a :class:`~loralab.inference.adapters.MultiAdapterPredictor` (many adapters: ``/adapters`` routes,
    ``adapter``/``adapters`` in ``/predict``).

    Use it as an ASGI app (uvicorn, or ``with TestClient(app)``: the batching worker starts and
    stops with the app's lifespan). ``allowed_hosts`` restricts the ``Host`` header (DNS-rebinding
    protection for a loopback server). ``admin_token`` turns on ``POST /adapters`` (runs under
    ``adapter_roots`` only) and ``DELETE /adapters/NAME`` for requests that send it as a bearer token.
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
    if "base_model" in info:
        info["base_model"] = public_name(info["base_model"])
    request_model, response_model, error_model = request_models(multi)
    pair_model = bool(info.get("text_pair"))  # the served run reads text pairs (its second column)
    score_keys = ("score",) if len(predictor.label_names) == 1 else PREDICTION_KEYS  # one output: regression
    batcher = MicroBatcher(
        predictor.predict if multi else predict_items(predictor),
        limits.max_batch,
        limits.max_wait_ms / 1000,
        limits.max_queue,
    )
    page = _static("index.html")
    assets = {name: _static(name) for name in STATIC_FILES}
    roots = [Path(r).resolve() for r in adapter_roots]
    if admin_token is not None and not admin_token:
        raise ValueError("admin_token: an empty token")
    if multi and default_adapter is not None:
        from loralab.inference.adapters import UnknownAdapterError

        if default_adapter not in predictor.adapters:
            raise UnknownAdapterError(
                f"--default-adapter {default_adapter}: no such adapter (served: {', '.join(predictor.names)})"
            )
        predictor.set_default(default_adapter)

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
        served, default = predictor.registry.snapshot()
        if req.adapters == "all":
            names, several = list(served), True
        elif req.adapters is not None:
            if not req.adapters:
                raise RequestError(422, 'adapters: List should have at least 1 item (or "all")')
            if len(set(req.adapters)) != len(req.adapters):
                raise RequestError(422, "adapters: a name is given twice")
            names, several = list(req.adapters), True
        else:
            names, several = [req.adapter or default], False
        for name in names:
            if name not in served:
                raise RequestError(404, f"unknown adapter {name!r} (GET /adapters lists the served ones)")
        if several and len(req.texts) * len(names) > limits.max_predictions:
            raise RequestError(
                413,
                f"too many predictions: {len(req.texts)} texts x {len(names)} adapters = "
                f"{len(req.texts) * len(names)} (at most {limits.max_predictions} per request)",
            )
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
            pairs = req.text_pairs
            if pair_model and pairs is None:
                raise RequestError(422, "text_pairs: this model reads text pairs: send text_pairs beside texts")
            if pairs is not None and not pair_model:
                raise RequestError(422, "text_pairs: this model reads single texts; send texts only")
        except RequestError as e:
            return error(e.status, e.detail, e.errors)
        if multi:
            items = [(name, t) for t in req.texts for name in names]
        else:
            items = list(zip(req.texts, pairs)) if pairs is not None else req.texts
        try:
            preds = await batcher.submit(items)
        except UnavailableError as e:
            return error(503, str(e), headers={"Retry-After": "1"})
        except Exception:  # logged by the batcher
            return error(500, "prediction failed (see the server log)")
        if not multi:
            return JSONResponse({"predictions": [{k: p[k] for k in score_keys} for p in preds]})
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
        extra = {}
        if multi:
            served, default = predictor.registry.snapshot()
            extra = {
                "name": f"{len(served)} adapters over {public_name(predictor.backbone)}",
                "adapters": list(served),
                "adapter_count": len(served),
                "max_adapters": predictor.registry.max_adapters,
                "default_adapter": default,
                "label_names": served[default].label_names,
                "adapter_admin": admin_token is not None,
            }
        return {
            "status": "ok" if batcher.running else "stopped",
            **info,
            **extra,
            "limits": asdict(limits),
            "queued": batcher.queued(),
            "batching": asdict(batcher.stats),
        }

    if multi:
        admin_errors = {
            401: {"model": error_model, "description": "no admin token sent (Authorization: Bearer TOKEN)"},
            403: {"model": error_model, "description": "admin routes off, a wrong token, or a path outside the roots"},
        }

        def listing(adapter, default: str | None) -> dict:
            return {
                "name": adapter.name,
                "default": adapter.name == default,
                **adapter.info,
                "run": shown_path(adapter.run_dir, roots),
                "base_model": public_name(adapter.info.get("base_model")),
            }

        def refused(e: RequestError):
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            return error(e.status, e.detail, headers=headers)

        @app.get("/adapters", summary="The served adapters with their run metadata")
        async def list_adapters():
            served, default = predictor.registry.snapshot()
            return {"default": default, "adapters": [listing(a, default) for a in served.values()]}

        @app.post(
            "/adapters",
            status_code=201,
            summary="Serve one more LoRA run (admin token; under an --adapter-root)",
            responses={
                **admin_errors,
                404: {"model": error_model, "description": "no such run directory"},
                409: {"model": error_model, "description": "the name or the run is served, or --max-adapters reached"},
                415: {"model": error_model, "description": "the body is not declared as JSON"},
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
                check_admin(request.headers.get("authorization"), admin_token)
                if not is_json(request.headers.get("content-type")):
                    raise RequestError(415, "send the body as JSON (Content-Type: application/json)")
                try:
                    body = AddAdapter.model_validate_json(await read_body(request, 65536))
                except ValidationError as e:
                    first = e.errors(include_url=False)[0]
                    raise RequestError(422, f"{'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}") from None
                run_dir = resolve_under_roots(body.run, roots)
                try:  # the registry reserves the name and the run; the weights are read off the event loop
                    adapter = await asyncio.to_thread(predictor.add, run_dir, body.name or run_dir.name, roots)
                except LoralabError as e:
                    detail = str(e).replace(str(run_dir), body.run)
                    for root in roots:  # the server's own paths are not echoed
                        detail = detail.replace(f"{root}{os.sep}", "")
                    raise RequestError(error_status(e), detail) from None
            except RequestError as e:
                return refused(e)
            return JSONResponse(listing(adapter, predictor.default), status_code=201)

        @app.delete(
            "/adapters/{name}",
            summary="Stop serving an adapter (admin token)",
            responses={
                **admin_errors,
                404: {"model": error_model, "description": "no such adapter (or new_default)"},
                409: {"model": error_model, "description": "the last adapter, or the default without new_default"},
            },
        )
        async def remove_adapter(name: str, request: Request, new_default: str | None = None):
            """``new_default``: the adapter that becomes the default (required to remove the default one)."""
            try:
                check_admin(request.headers.get("authorization"), admin_token)
                try:  # the registry decides (never the last, the default only with new_default)
                    await asyncio.to_thread(predictor.remove, name, new_default)  # waits for a batch being scored
                except LoralabError as e:
                    raise RequestError(error_status(e), str(e)) from None
            except RequestError as e:
                return refused(e)
            return {"removed": name, "default": predictor.default}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in assets:
            return error(404, "Not Found")
        return Response(assets[name], media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

    return app
