"""The ASGI application: routes, authentication, admission control (429), disconnects, timing headers."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from runtime.batching import TOKENS_PER_RUN
from runtime.encoder import Encoder
from runtime.server.batcher import Batcher, InputTooLong, Job
from runtime.server.metrics import Metrics
from runtime.server.options import Settings
from runtime.server.protocol import (
    ApiError,
    Inputs,
    Limits,
    openai_body,
    parse_json,
    parse_openai,
    parse_tei,
    tei_body,
)

log = logging.getLogger("uvicorn.error")
JSON = "application/json"
CLIENT_CLOSED = 499  # nginx's status for a client that went away; only ever seen in metrics
# Embedding paths and the route name their metrics carry; a full server refuses these before routing.
ADMITTED_ROUTES = {"/v1/embeddings": "/v1/embeddings", "/embeddings": "/v1/embeddings", "/embed": "/embed"}


def package_version() -> str:
    """This distribution's version."""
    try:
        return version("minilm-stsb-onnx")
    except PackageNotFoundError:
        return "unknown"


class Service:
    """Everything one server process holds: the encoders (one per worker), their batcher, metrics, limits and
    drain state."""

    def __init__(
        self, encoders: Encoder | Sequence[Encoder], settings: Settings, cpus: Sequence[set[int] | None] | None = None
    ) -> None:
        encoders = [encoders] if isinstance(encoders, Encoder) else list(encoders)
        encoder = self.encoder = encoders[0]
        self.settings = settings
        self.model_name = settings.model_name or encoder.manifest.name
        self.metrics = Metrics()
        self.batcher = Batcher(encoders, self.metrics, settings.batch_size, cpus)
        self.limits = Limits(
            max_inputs=settings.max_inputs_per_request,
            vocab_size=encoder.vocab_size,
            max_seq_length=encoder.max_seq_length,
            dimension=encoder.get_sentence_embedding_dimension(),
            precisions=encoder.output_precisions,
        )
        self.inflight = 0  # inputs admitted and not yet answered; touched only on the event loop
        self.draining = False  # set by SIGTERM: /health answers 503 so balancers stop routing here; work goes on
        self.last_arrival = 0.0  # monotonic time of the last embedding request, for the drain's quiet period
        self._key = f"Bearer {settings.api_key}".encode() if settings.api_key else None
        self._counters: dict[tuple[str, int], Any] = {}
        # read when /metrics is scraped: a Gauge.set per request takes prometheus_client's lock twice a request
        self.metrics.inflight_inputs.set_function(lambda: self.inflight)
        self.app = self._build()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application. A full server refuses embedding requests here, before routing or reading the body:
        under overload most requests are refused, and every cycle they take is one inference does not get. Other
        embedding requests go straight to their endpoint, which answers every error itself: Starlette's router and
        middleware cost each request CPU that inference then lacks."""
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._embedding_endpoints.get(scope["path"])
            if endpoint is not None:
                if self.inflight >= self.settings.max_inflight_inputs and self._authorized(scope["headers"]):
                    await self._refuse(ADMITTED_ROUTES[scope["path"]], scope, receive, send)
                    return
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _count(self, route: str, status: int) -> None:
        """Count a response; prometheus_client's labels() lookup takes a lock, so each series is looked up once."""
        counter = self._counters.get((route, status))
        if counter is None:
            counter = self._counters[(route, status)] = self.metrics.requests.labels(route, str(status))
        counter.inc()

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the raw headers carry the API key (always, without one); a refusal never answers for 401."""
        if self._key is None:
            return True
        given = next((v for k, v in headers if k == b"authorization"), None)
        return given is not None and hmac.compare_digest(given, self._key)

    async def _refuse(self, route: str, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        self.last_arrival = time.monotonic()
        response = _error_response(_overloaded(self.inflight))
        self._count(route, 429)
        elapsed = time.perf_counter() - start
        self.metrics.request_seconds.labels(route).observe(elapsed)
        response.headers["x-total-time"] = _ms(elapsed)
        await response(scope, receive, send)

    def _build(self) -> Starlette:
        embed = {"/v1/embeddings": self._openai, "/embed": self._tei}
        self._embedding_endpoints = {path: self._route(name, embed[name]) for path, name in ADMITTED_ROUTES.items()}
        routes = [
            *(Route(path, endpoint, methods=["POST"]) for path, endpoint in self._embedding_endpoints.items()),
            Route("/health", self._health, methods=["GET"]),
            Route("/info", self._route("/info", self._info), methods=["GET"]),
            Route("/v1/models", self._route("/v1/models", self._models), methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
        ]
        handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
            HTTPException: _http_error,
            Exception: _server_error,
        }
        return Starlette(routes=routes, exception_handlers=handlers, lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> Any:
        self.batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(self.batcher.close, self.settings.graceful_timeout)

    def _route(
        self, name: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: authentication, OpenAI error bodies, status counts and the duration histogram."""
        duration = self.metrics.request_seconds.labels(name)

        async def endpoint(request: Request) -> Response:
            start = time.perf_counter()
            try:
                self._authenticate(request)
                response = await handler(request)
            except ApiError as err:
                response = _error_response(err)
            except ClientDisconnect:
                response = _error_response(ApiError(CLIENT_CLOSED, "client disconnected while sending its request"))
            except Exception as err:  # a server fault: logged with its traceback, answered 500, counted
                log.exception("request to %s failed", name)
                response = _error_response(
                    ApiError(500, f"Internal server error: {type(err).__name__}", kind="server_error")
                )
            self._count(name, response.status_code)
            elapsed = time.perf_counter() - start
            duration.observe(elapsed)
            response.headers["x-total-time"] = _ms(elapsed)
            return response

        return endpoint

    def _authenticate(self, request: Request) -> None:
        if self._key is None:
            return
        given = request.headers.get("authorization")
        if given is None:
            raise ApiError(
                401,
                "You didn't provide an API key: send 'Authorization: Bearer KEY'",
                code="invalid_api_key",
                headers={"www-authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.encode(), self._key):
            raise ApiError(
                401, "Incorrect API key provided", code="invalid_api_key", headers={"www-authenticate": "Bearer"}
            )

    async def _openai(self, request: Request) -> Response:
        body = await self._admit_and_read(request)
        parsed = parse_openai(body, self.limits, self.model_name)
        job = await self._embed(request, parsed.inputs, truncate=True, normalize=True)
        assert job.out is not None
        out = self.encoder.quantize(job.out, parsed.precision)
        content = openai_body(out, self.model_name, job.tokens, parsed.base64)
        return Response(content, media_type=JSON, headers=_timing(job))

    async def _tei(self, request: Request) -> Response:
        body = await self._admit_and_read(request)
        parsed = parse_tei(body, self.limits)
        job = await self._embed(request, parsed.inputs, truncate=parsed.truncate, normalize=parsed.normalize)
        assert job.out is not None
        out = self.encoder.quantize(job.out, parsed.precision)
        return Response(tei_body(out, parsed.base64), media_type=JSON, headers=_timing(job))

    async def _admit_and_read(self, request: Request) -> dict[str, Any]:
        """Refuse when full (``__call__`` already did, unless the Starlette app is served on its own); read the body
        within the payload limit; parse the JSON."""
        self.last_arrival = time.monotonic()
        if self.inflight >= self.settings.max_inflight_inputs:
            raise _overloaded(self.inflight)
        limit = self.settings.max_payload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    async def _embed(self, request: Request, inputs: Inputs, truncate: bool, normalize: bool) -> Job:
        """Queue the inputs for the inference thread and wait, dropping the work if the client disconnects."""
        count = inputs.count
        if self.inflight and self.inflight + count > self.settings.max_inflight_inputs:
            raise _overloaded(self.inflight)  # one request larger than the bound is admitted when nothing else is
        loop = asyncio.get_running_loop()
        job = Job(
            loop,
            loop.create_future(),
            count,
            texts=inputs.texts,
            ids=inputs.ids,
            truncate=truncate,
            normalize=normalize,
        )
        self.inflight += count
        gone: asyncio.Future[Any] | None = None

        def client_left(_: object) -> None:
            if not job.future.done():
                job.future.cancel()

        try:
            self.batcher.submit(job)
            gone = asyncio.ensure_future(request.receive())  # resolves with http.disconnect if the client leaves
            gone.add_done_callback(client_left)
            try:
                await job.future
            except asyncio.CancelledError:
                if gone.done() and not gone.cancelled():
                    raise ApiError(CLIENT_CLOSED, "client disconnected before its embeddings were computed") from None
                raise  # this task was cancelled (server shutdown)
        except InputTooLong as err:
            raise ApiError(
                413, f"{err}; send truncate=true or shorten it", param="inputs", code="input_too_long"
            ) from None
        finally:
            if not job.future.done() or job.future.cancelled():  # the inference thread skips this job's rows
                job.cancelled = True
            if gone is not None:
                gone.remove_done_callback(client_left)
                gone.cancel()
            self.inflight -= count
        return job

    async def _health(self, request: Request) -> Response:
        if self.draining:
            return Response(b'{"status":"draining"}', status_code=503, media_type=JSON)
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def _info(self, request: Request) -> Response:
        enc = self.encoder
        s = self.settings
        info = {
            "model": self.model_name,
            "artifact": str(enc.folder),
            "dimension": self.limits.dimension,
            "max_seq_length": enc.max_seq_length,
            "vocab_size": self.limits.vocab_size,
            "device": enc.device,
            "precision": enc.precision.value,
            "backend": enc.backend,
            "rule": enc.rule,  # which engine embeds which texts (Encoder.rule)
            "portable": enc.decision.portable,  # the same vectors on every CPU
            "output_precisions": list(enc.output_precisions),
            "version": package_version(),
            "batching": {"batch_size": s.batch_size, "tokens_per_run": TOKENS_PER_RUN[enc.device]},
            "workers": self.batcher.workers,
            "limits": {
                "max_payload_bytes": s.max_payload_bytes,
                "max_inputs_per_request": s.max_inputs_per_request,
                "max_inflight_inputs": s.max_inflight_inputs,
            },
        }
        return Response(orjson.dumps(info), media_type=JSON)

    async def _models(self, request: Request) -> Response:
        model = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "minilm-stsb-onnx"}
        return Response(orjson.dumps({"object": "list", "data": [model]}), media_type=JSON)

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _timing(job: Job) -> dict[str, str]:
    assert job.first_run is not None and job.finished is not None
    return {
        "x-queue-time": _ms(job.first_run - job.enqueued - job.tokenize_s),
        "x-tokenization-time": _ms(job.tokenize_s),
        "x-inference-time": _ms(job.finished - job.first_run),
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def _overloaded(inflight: int) -> ApiError:
    return ApiError(
        429,
        f"The server is at its limit of inputs in flight ({inflight}); retry after the Retry-After delay",
        kind="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"retry-after": "1"},
    )


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"Request body of {size} bytes exceeds the limit of {limit} bytes", code="payload_too_large")


def _error_response(err: ApiError) -> Response:
    return Response(err.body(), status_code=err.status, media_type=JSON, headers=err.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = {404: f"Unknown path {request.url.path}", 405: f"Method {request.method} not allowed on this path"}
    err = ApiError(
        status, message.get(status, str(exc.detail)), code={404: "not_found", 405: "method_not_allowed"}.get(status)
    )
    return _error_response(err)


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error_response(ApiError(500, f"Internal server error: {type(exc).__name__}", kind="server_error"))
