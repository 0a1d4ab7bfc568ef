"""What the HTTP service accepts: its limits, the request schemas, the validation of a body and
the admin token of the routes that change what is served."""

import hmac
from dataclasses import dataclass

from loralab.errors import ConfigError


@dataclass(frozen=True)
class ServeLimits:
    """Request limits and micro-batching settings (each one is a ``loralab serve`` flag)."""

    max_texts: int = 64  # texts per request; more is a 413
    max_chars: int = 2000  # characters per text; longer is a 413
    max_batch: int = 32  # texts per model call (a single larger request is scored alone)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 256  # requests waiting for the model; more is a 503
    max_predictions: int = 256  # many adapters: texts x adapters per request with "adapters"; more is a 413

    def validate(self) -> None:
        for name in ("max_texts", "max_chars", "max_batch", "max_queue", "max_predictions"):
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


def request_models(multi: bool = False):
    """``(request, response, error)`` pydantic models of ``POST /predict``; ``multi``: the
    variant of a multi-adapter server (``adapter`` / ``adapters`` fields, per-adapter answers)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, model_validator

    class PredictRequest(BaseModel):
        """Texts to classify: a list (``texts``, with ``text_pairs`` for a pair model), or one
        example (``text``, with ``text_pair``), answered as a list of one."""

        model_config = ConfigDict(extra="forbid", strict=True)
        texts: list[str] | None = Field(
            None,
            min_length=1,
            description="texts to classify (non-empty, in order)",
            examples=[["a gorgeous, witty film", "a tedious mess"]],
        )
        text_pairs: list[str] | None = Field(
            None,
            description="models trained on text pairs: the second text of each text, in the same order "
            "(one example is {text, text_pair}: texts[i] with text_pairs[i])",
        )
        text: str | None = Field(None, description="one text to classify (instead of texts)")
        text_pair: str | None = Field(None, description="with text, for a pair model: its second text")

        @model_validator(mode="after")
        def _one_form(self):
            if (self.texts is None) == (self.text is None):
                raise ValueError('send "texts" (a list) or "text" (one), exactly one of the two')
            if self.text is not None:
                if self.text_pairs is not None:
                    raise ValueError('"text" goes with "text_pair", "texts" with "text_pairs"')
                self.texts = [self.text]
                self.text_pairs = None if self.text_pair is None else [self.text_pair]
            elif self.text_pair is not None:
                raise ValueError('"text_pair" goes with "text", "text_pairs" with "texts"')
            return self

    class Prediction(BaseModel):
        """A classifier's answer; a regression model's is ``{"score": number}`` alone."""

        label: int = Field(description="predicted label id")
        label_name: str = Field(description="predicted label name")
        confidence: float = Field(description="probability of the predicted label")
        probabilities: list[float] = Field(description="probability of each label, in label-id order")

    class PredictResponse(BaseModel):
        predictions: list[Prediction] = Field(description="one per input text, in input order")

    class ErrorResponse(BaseModel):
        detail: str = Field(description="what was wrong, in one line")

    if not multi:
        return PredictRequest, PredictResponse, ErrorResponse

    class MultiPredictRequest(PredictRequest):
        """Texts to classify with one adapter (``adapter``, default: the server's default adapter)
        or with several (``adapters``: a list of names, or ``"all"``)."""

        adapter: str | None = Field(None, description="the adapter to answer with (default: the default adapter)")
        adapters: list[str] | Literal["all"] | None = Field(
            None, description='several adapters, in the order given, or "all" (in GET /adapters order)'
        )

    class AdapterPrediction(Prediction):
        adapter: str = Field(description="the adapter that gave this answer")

    class MultiPredictResponse(BaseModel):
        adapter: str | None = Field(None, description="with `adapter` or neither: the adapter that answered")
        adapters: list[str] | None = Field(None, description="with `adapters`: the adapters, in answer order")
        predictions: list[AdapterPrediction] | list[list[AdapterPrediction]] = Field(
            description="one entry per input text, in input order: with `adapter`, its prediction; with "
            "`adapters`, the list of each adapter's prediction, in the order of `adapters`"
        )

    return MultiPredictRequest, MultiPredictResponse, ErrorResponse


def parse_request(body: bytes, limits: ServeLimits, model):
    """Validate a ``/predict`` body against ``model`` (the request schema) and ``limits``;
    return the parsed request or raise :class:`RequestError` (422 bad JSON/shape, 413 over a limit)."""
    from pydantic import ValidationError

    if not body.strip():
        raise RequestError(422, 'empty body: send JSON like {"texts": ["a review"]}')
    try:
        request = model.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RequestError(
            422,
            f"{where}: {first['msg']}{more}",
            [{"loc": list(x["loc"]), "msg": x["msg"], "type": x["type"]} for x in errors],
        ) from None
    texts = request.texts
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"too many texts: {len(texts)} (at most {limits.max_texts} per request)")
    _check_each("texts", texts, limits)
    pairs = getattr(request, "text_pairs", None)
    if pairs is not None:
        if len(pairs) != len(texts):
            raise RequestError(422, f"text_pairs: {len(pairs)} second texts for {len(texts)} texts (one each)")
        _check_each("text_pairs", pairs, limits)
    return request


def _check_each(field: str, texts, limits) -> None:
    """Every text of ``field`` within the length limit and not blank."""
    for i, t in enumerate(texts):
        if len(t) > limits.max_chars:
            raise RequestError(413, f"{field}.{i}: too long: {len(t)} characters (at most {limits.max_chars})")
        if not t.strip():
            raise RequestError(422, f"{field}.{i}: empty text")


def parse_texts(body: bytes, limits: ServeLimits, model) -> list[str]:
    """The texts of a valid ``/predict`` body (see :func:`parse_request`)."""
    return parse_request(body, limits, model).texts


async def read_body(request, max_bytes: int) -> bytes:
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


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type header declares JSON. A missing one does not: a web page can send a
    body without one to any address (``fetch(url, {mode: "no-cors"})``), but never one declared
    as JSON without the server's consent (CORS), so requiring it keeps other sites out."""
    if not content_type:
        return False
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


#: What a refused admin request is told about turning the admin routes on.
ADMIN_HOW = (
    "start the server with --admin-token TOKEN (or LORALAB_ADMIN_TOKEN=TOKEN) and send Authorization: Bearer TOKEN"
)


def check_admin(authorization: str | None, token: str | None) -> None:
    """Allow a request that changes what is served only with ``Authorization: Bearer TOKEN``:
    403 when the server has no admin token (the routes are off), 401 without a bearer token,
    403 for a wrong one (compared in constant time)."""
    if token is None:
        raise RequestError(403, f"adding and removing adapters is off: {ADMIN_HOW}")
    scheme, _, given = (authorization or "").strip().partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise RequestError(401, "admin token required: send Authorization: Bearer TOKEN")
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")):
        raise RequestError(403, "wrong admin token")
