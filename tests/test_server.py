"""The HTTP server as a real process on a free local port: API parity with the library through the openai client
and /embed, every error status, auth, truncation, disconnects, admission control, graceful SIGTERM, a load smoke."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="needs the 'serve' extra")
openai = pytest.importorskip("openai", reason="needs the 'serve-test' extra")
httpx = pytest.importorskip("httpx", reason="needs the 'serve-test' extra")

import runtime  # noqa: E402
from benchmarks.procs import thread_affinities  # noqa: E402
from benchmarks.server_process import ServerProcess, free_port  # noqa: E402
from export.data import dev_sentences  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
LONG = " ".join(["embedding servers batch requests from many clients"] * 60)  # ~420 tokens: truncated at 256
TEXTS = [*dev_sentences()[:40], LONG, "naïve café — 東京 🙂", "   ", "A"]


class Server(ServerProcess):
    """``python -m runtime serve`` in a subprocess on a free 127.0.0.1 port, stopped by the test. It runs the portable
    engine, as the ``encoder`` fixture does (what ``auto`` picks depends on the CPU class; one test covers it)."""

    def __init__(self, tmp: Path, *args: str, backend: str = "onnxruntime") -> None:
        port = free_port()
        cmd = [sys.executable, "-m", "runtime", "--provider", "cpu", "--backend", backend, "serve"]
        cmd += ["--port", str(port), "--threads", "1"]
        super().__init__("server", [*cmd, *args], port, tmp / f"server-{port}.log", cwd=REPO, ready_s=180, stop_s=30)

    def post(self, path: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=AUTH if headers is None else headers, timeout=180)

    def metric(self, name: str) -> float:
        """The value of one unlabelled sample of /metrics."""
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("server"), "--api-key", KEY, "--workers", "2")
    yield srv
    assert srv.stop() == 0, srv.log.read_text()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Small limits: 8 inputs per request, 64 kB bodies, 4 inputs in flight; two workers."""
    limits = ["--max-inputs-per-request", "8", "--max-payload-bytes", "65536", "--max-inflight-inputs", "4"]
    limits += ["--workers", "2"]
    srv = Server(tmp_path_factory.mktemp("strict"), *limits)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def _usage(encoder: runtime.Encoder, texts: list[str]) -> int:
    return sum(len(ids) for ids in encoder.tokenize(texts))


def test_openai_client_float_matches_library(client: openai.OpenAI, encoder: runtime.Encoder) -> None:
    reply = client.embeddings.create(input=TEXTS, model="minilm-l6-stsb", encoding_format="float")
    assert [d.index for d in reply.data] == list(range(len(TEXTS)))
    got = np.array([d.embedding for d in reply.data])
    assert np.abs(got - encoder.encode(TEXTS)).max() <= 1e-6
    assert reply.model == "minilm-l6-stsb" and reply.object == "list"
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == _usage(encoder, TEXTS)


def test_auto_server_embeds_as_the_auto_library_does(tmp_path: Path, dev_pairs: list) -> None:
    """The server under backend="auto" (the default) returns the library's auto vectors: the same engine for each
    text (its length rule), runs planned without crossing the rule's cut. Texts batch differently in the server than
    in one encode call, so a bf16 path may differ by its padding gate; float32 and int8 inference by 1e-5."""
    library = runtime.load(provider="cpu", threads=1)
    texts = [p.s1 for p in dev_pairs[:40]] + [" ".join(p.s2 for p in dev_pairs[k : k + 12]) for k in range(0, 48, 12)]
    srv = Server(tmp_path, backend="auto")
    try:
        reply = httpx.post(f"{srv.url}/v1/embeddings", json={"input": texts, "encoding_format": "float"}, timeout=180)
        info = httpx.get(f"{srv.url}/info", timeout=10).json()
    finally:
        assert srv.stop() == 0, srv.log.read_text()
    assert reply.status_code == 200, reply.text
    got = np.array([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)
    assert library.rule in json.dumps(info)
    bf16 = library.info["inference_precision"] == "bf16"
    assert np.abs(got - library.encode(texts)).max() <= (2e-3 if bf16 else 1e-5)


def test_readme_server_example_runs(server: Server, encoder: runtime.Encoder) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python server\n(.*?)```", readme, flags=re.DOTALL)
    scope: dict[str, object] = {}
    exec(block.replace("http://127.0.0.1:8000", server.url).replace('"KEY"', repr(KEY)), scope)
    texts = ["A man plays the guitar.", "A man is playing music."]
    assert np.abs(np.array(scope["vectors"]) - encoder.encode(texts)).max() <= 1e-6


def test_openai_client_base64_default_matches_library(client: openai.OpenAI, encoder: runtime.Encoder) -> None:
    reply = client.embeddings.create(input=TEXTS, model="minilm-l6-stsb")  # the client asks for base64 itself
    got = np.array([d.embedding for d in reply.data])
    assert np.abs(got - encoder.encode(TEXTS)).max() <= 1e-6
    one = client.embeddings.create(input="A man is playing a guitar.", model="minilm-l6-stsb")
    assert len(one.data) == 1
    assert np.abs(np.array(one.data[0].embedding) - encoder.encode("A man is playing a guitar.")).max() <= 1e-6


def test_raw_base64_is_little_endian_float32(server: Server, encoder: runtime.Encoder) -> None:
    reply = server.post("/v1/embeddings", {"input": ["one text"], "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(reply["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(vector, encoder.encode("one text"))


def test_embed_route_matches_library(server: Server, encoder: runtime.Encoder) -> None:
    got = np.array(server.post("/embed", {"inputs": TEXTS}).json())
    assert np.abs(got - encoder.encode(TEXTS)).max() <= 1e-6
    raw = np.array(server.post("/embed", {"inputs": TEXTS, "normalize": False}).json())
    assert np.abs(raw - encoder.encode(TEXTS, normalize_embeddings=False)).max() <= 1e-6
    single = server.post("/embed", {"inputs": "A"}).json()
    assert len(single) == 1 and np.abs(np.array(single[0]) - encoder.encode("A")).max() <= 1e-6


def test_token_ids_are_model_input_as_given(server: Server, encoder: runtime.Encoder) -> None:
    texts = TEXTS[:5]
    ids = encoder.tokenize(texts)  # [CLS] ... [SEP], as the model sees them
    reply = server.post("/v1/embeddings", {"input": ids, "encoding_format": "float"}).json()
    got = np.array([d["embedding"] for d in reply["data"]])
    assert np.abs(got - encoder.encode(texts)).max() <= 1e-6
    assert reply["usage"]["prompt_tokens"] == sum(map(len, ids))
    one = server.post("/v1/embeddings", {"input": ids[0], "encoding_format": "float"}).json()
    assert np.abs(np.array(one["data"][0]["embedding"]) - encoder.encode(texts[0])).max() <= 1e-6


def test_long_token_ids_truncate_like_the_library(server: Server, encoder: runtime.Encoder) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(encoder.folder / "tokenizer.json"))
    tokenizer.no_truncation()
    full = tokenizer.encode(LONG).ids
    assert len(full) > 300
    reply = server.post("/v1/embeddings", {"input": [full], "encoding_format": "float"}).json()
    assert reply["usage"]["prompt_tokens"] == 256
    assert np.abs(np.array(reply["data"][0]["embedding"]) - encoder.encode(LONG)).max() <= 1e-6


def test_long_text_truncates_unless_asked_not_to(server: Server, encoder: runtime.Encoder) -> None:
    reply = server.post("/v1/embeddings", {"input": LONG, "encoding_format": "float"}).json()
    assert reply["usage"]["prompt_tokens"] == 256
    refused = server.post("/embed", {"inputs": ["short", LONG], "truncate": False})
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "input_too_long" and "input 1" in refused.json()["error"]["message"]
    assert server.post("/embed", {"inputs": ["short"], "truncate": False}).status_code == 200


def test_timing_headers(server: Server) -> None:
    sums = ("embed_queue_duration_seconds_sum", "embed_tokenization_duration_seconds_sum")
    sums += ("embed_batch_duration_seconds_sum",)
    before = {name: server.metric(name) for name in sums}
    response = server.post("/v1/embeddings", {"input": ["timed"]})
    spent = {name: (server.metric(name) - before[name]) * 1000 for name in sums}  # this request's spans, ms
    names = ("x-queue-time", "x-tokenization-time", "x-inference-time")
    parts = {name: float(response.headers[name]) for name in names}
    total = float(response.headers["x-total-time"])
    # The headers are the spans /metrics records for the request (the metric's queue span includes tokenisation,
    # which the header subtracts), and consecutive spans inside it; each header is rounded to 0.001 ms.
    assert abs(parts["x-inference-time"] - spent["embed_batch_duration_seconds_sum"]) <= 0.002, (parts, spent)
    assert abs(parts["x-tokenization-time"] - spent["embed_tokenization_duration_seconds_sum"]) <= 0.002
    queued = parts["x-queue-time"] + parts["x-tokenization-time"]
    assert abs(queued - spent["embed_queue_duration_seconds_sum"]) <= 0.003, (parts, spent)
    assert sum(parts.values()) <= total + 0.003, (parts, total)


BAD_OPENAI = [
    ({"input": []}, "input"),
    ({"input": ""}, "input"),
    ({"input": ["a", ""]}, "input"),
    ({"input": ["a", 1]}, "input"),
    ({"input": [[101, 102], "a"]}, "input"),
    ({"input": [[101, "x"]]}, "input[0]"),
    ({"input": [[]]}, "input[0]"),
    ({"input": [101, -1, 102]}, "input"),
    ({"input": [101, 30522, 102]}, "input"),
    ({"input": [1.5]}, "input"),
    ({"input": [True]}, "input"),
    ({"input": None}, "input"),
    ({"input": {"text": "a"}}, "input"),
    ({"model": "minilm-l6-stsb"}, "input"),
    ({"input": "a", "model": "text-embedding-3-small"}, "model"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "a", "dimensions": 128}, "dimensions"),
    ({"input": "a", "dimension": 384}, "dimension"),
    ({"input": "a", "precision": "fp16"}, "precision"),
    ({"input": "a", "precision": "INT8"}, "precision"),
    ({"input": "a", "precision": 8}, "precision"),
]


@pytest.mark.parametrize(("body", "param"), BAD_OPENAI)
def test_bad_openai_requests_get_400_with_openai_error(server: Server, body: dict[str, object], param: str) -> None:
    response = server.post("/v1/embeddings", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


BAD_TEI = [
    ({}, "inputs", "missing_required_parameter", "Missing required parameter: 'inputs'"),
    ({"inputs": []}, "inputs", "empty_input", "'inputs' must not be an empty array"),
    ({"inputs": "a", "normalize": "yes"}, "normalize", None, "'normalize' must be true or false, got string"),
    ({"inputs": "a", "truncation_direction": "left"}, "truncation_direction", None, "got 'left'"),
    ({"inputs": "a", "prompt_name": "query"}, "prompt_name", None, "'prompt_name' must be absent"),
]


@pytest.mark.parametrize(("body", "param", "code", "message"), BAD_TEI)
def test_bad_embed_requests_get_400(
    server: Server, body: dict[str, object], param: str, code: str | None, message: str
) -> None:
    # /embed answers errors with the same body as /v1/embeddings (the README's "every error has OpenAI's ..."),
    # naming the field at fault; TEI itself answers {"error": "...", "error_type": "Validation"}.
    response = server.post("/embed", body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["error"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert message in error["message"], error["message"]


COMPACT = ("int8", "uint8", "binary", "ubinary")


@pytest.mark.parametrize("precision", COMPACT)
def test_compact_precisions_equal_the_library(server: Server, encoder: runtime.Encoder, precision: str) -> None:
    from runtime.quantization import output_dtype

    want = encoder.encode(TEXTS, precision=precision)
    reply = server.post("/v1/embeddings", {"input": TEXTS, "precision": precision, "encoding_format": "float"})
    got = [d["embedding"] for d in reply.json()["data"]]
    assert all(isinstance(v, int) for row in got for v in row)  # lists of ints, not floats
    assert np.array_equal(np.array(got), want)
    reply = server.post("/v1/embeddings", {"input": TEXTS, "precision": precision, "encoding_format": "base64"})
    raw = [base64.b64decode(d["embedding"]) for d in reply.json()["data"]]
    assert {len(r) for r in raw} == {48 if precision.endswith("binary") else 384}  # one byte per value, no header
    decoded = np.stack([np.frombuffer(r, dtype=output_dtype(precision)) for r in raw])
    assert decoded.dtype == want.dtype and np.array_equal(decoded, want)
    tei = server.post("/embed", {"inputs": TEXTS, "precision": precision}).json()
    assert np.array_equal(np.array(tei), want)
    tei64 = server.post("/embed", {"inputs": TEXTS, "precision": precision, "encoding_format": "base64"}).json()
    assert np.array_equal(np.stack([np.frombuffer(base64.b64decode(v), want.dtype) for v in tei64]), want)
    raw_rows = server.post("/embed", {"inputs": TEXTS[:3], "precision": precision, "normalize": False}).json()
    assert np.array_equal(
        np.array(raw_rows), encoder.quantize(encoder.encode(TEXTS[:3], normalize_embeddings=False), precision)
    )


def test_float32_precision_is_the_default(server: Server) -> None:
    plain = server.post("/v1/embeddings", {"input": TEXTS[:3], "encoding_format": "base64"}).json()
    named = server.post("/v1/embeddings", {"input": TEXTS[:3], "encoding_format": "base64", "precision": "float32"})
    assert named.json()["data"] == plain["data"]


def test_bad_precision_names_the_allowed_values(server: Server) -> None:
    for path, body in (("/v1/embeddings", {"input": "a"}), ("/embed", {"inputs": "a"})):
        response = server.post(path, {**body, "precision": "fp32"})
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert "['float32', 'int8', 'uint8', 'binary', 'ubinary']" in message and "'fp32'" in message
    response = server.post("/embed", {"inputs": "a", "encoding_format": "hex"})
    assert response.status_code == 400 and "'float' or 'base64'" in response.json()["error"]["message"]


def test_precision_without_calibrated_ranges_is_a_400_naming_what_is_available() -> None:
    from runtime.server.protocol import ApiError, Limits, parse_openai, parse_tei

    limits = Limits(max_inputs=8, vocab_size=100, max_seq_length=8, dimension=384, precisions=("float32", "binary"))
    assert parse_openai({"input": "a", "precision": "binary"}, limits, "m").precision == "binary"
    for parse in (
        lambda b: parse_openai({"input": "a", **b}, limits, "m"),
        lambda b: parse_tei({"inputs": "a", **b}, limits),
    ):
        with pytest.raises(ApiError) as err:
            parse({"precision": "int8"})
        assert err.value.status == 400 and err.value.param == "precision"
        assert "calibrate-outputs" in err.value.message and "['float32', 'binary']" in err.value.message


def test_bad_bodies_methods_and_paths(server: Server) -> None:
    def raw(content: bytes) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/embeddings", content=content, headers=AUTH)

    assert raw(b"{not json").status_code == 400
    assert raw(b'["a"]').status_code == 400
    assert raw(b'{"input": "\\ud800"}').status_code == 400  # a lone surrogate is not valid JSON text for orjson
    assert server.post("/v1/embeddings", {"input": "a", "dimensions": 384}).status_code == 200
    wrong_method = httpx.get(f"{server.url}/v1/embeddings", headers=AUTH)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    missing = httpx.get(f"{server.url}/v2/nothing", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_api_key(server: Server) -> None:
    body = {"input": "a"}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}):
        response = server.post("/v1/embeddings", body, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert server.post("/embed", {"inputs": "a"}, headers={}).status_code == 401
    assert httpx.get(f"{server.url}/info").status_code == 401
    assert server.post("/v1/embeddings", body).status_code == 200
    assert httpx.get(f"{server.url}/health").status_code == 200  # probes and scrapers need no key
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def test_info_health_metrics(server: Server) -> None:
    info = httpx.get(f"{server.url}/info", headers=AUTH).json()
    assert info["model"] == "minilm-l6-stsb" and info["dimension"] == 384 and info["max_seq_length"] == 256
    limits = {"max_payload_bytes": 2_000_000, "max_inputs_per_request": 2048, "max_inflight_inputs": 1024}
    assert info["limits"] == limits
    assert info["version"] and info["vocab_size"] == 30522
    assert info["output_precisions"] == ["float32", "int8", "uint8", "binary", "ubinary"]
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}

    # The series this test asserts are the ones its own requests create or move, so it holds run alone or after others.
    def requests(status: str) -> float:
        return _labelled(server, "embed_requests_total", route="/v1/embeddings", status=status)

    ok, bad = requests("200"), requests("400")
    inputs, tokens = server.metric("embed_inputs_total"), server.metric("embed_tokens_total")
    counted = server.post("/v1/embeddings", {"input": ["counted", "twice"]})
    assert counted.status_code == 200
    assert server.post("/v1/embeddings", {"input": []}).status_code == 400
    assert (requests("200") - ok, requests("400") - bad) == (1, 1)
    assert server.metric("embed_inputs_total") - inputs == 2
    assert server.metric("embed_tokens_total") - tokens == counted.json()["usage"]["prompt_tokens"]
    text = httpx.get(f"{server.url}/metrics").text
    for sample in (
        "embed_queue_inputs ",
        "embed_inflight_inputs ",
        "embed_batch_size_bucket",
        "embed_batch_tokens_bucket",
        "embed_queue_duration_seconds_bucket",
        "embed_batch_duration_seconds_bucket",
        'embed_request_duration_seconds_bucket{le="0.001",route="/v1/embeddings"}',
    ):
        assert sample in text, sample


def test_payload_and_count_limits(strict: Server, encoder: runtime.Encoder) -> None:
    texts = dev_sentences()[:9]
    too_many = strict.post("/v1/embeddings", {"input": texts}, headers={})
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_inputs"
    assert strict.post("/embed", {"inputs": texts}, headers={}).status_code == 413
    eight = strict.post("/embed", {"inputs": texts[:8]}, headers={})
    assert eight.status_code == 200 and np.abs(np.array(eight.json()) - encoder.encode(texts[:8])).max() <= 1e-6
    big = strict.post("/v1/embeddings", {"input": ["x" * 70_000]}, headers={})
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    chunked = httpx.post(
        f"{strict.url}/v1/embeddings", content=iter([b'{"input": "', b"y" * 70_000, b'"}']), timeout=30
    )  # no content-length: the limit applies while reading
    assert chunked.status_code == 413


def _in_background(fn: object) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def target() -> None:
        result["value"] = fn()  # type: ignore[operator]

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


def _wait_for(predicate: object, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_full_server_answers_429_with_retry_after(strict: Server) -> None:
    # 8 long inputs: admitted because nothing else is in flight, then the bound of 4 is exceeded while they run.
    for _attempt in range(5):
        thread, result = _in_background(lambda: strict.post("/embed", {"inputs": [LONG] * 8}, headers={}))
        _wait_for(lambda: strict.metric("embed_inflight_inputs") > 0)
        refused = strict.post("/v1/embeddings", {"input": "one more"}, headers={})
        thread.join()
        assert result["value"].status_code == 200  # type: ignore[attr-defined]
        if refused.status_code == 429:
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert float(refused.headers["x-total-time"]) < 1000
            assert _labelled(strict, "embed_requests_total", route="/v1/embeddings", status="429") >= 1
            return
        assert refused.status_code == 200  # the long request had ended before ours arrived: try again
    pytest.fail("never caught the server with inputs in flight")


def _labelled(server: Server, name: str, **labels: str) -> float:
    """The value of one labelled sample of /metrics (0 when the series does not exist yet)."""
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        key, _, value = line.rpartition(" ")
        if key.startswith(name + "{"):
            inner = sorted(key[len(name) + 1 : -1].split(","))
            if name + "{" + ",".join(inner) + "}" == want:
                return float(value)
    return 0.0


def test_full_server_answers_401_not_429_without_the_key(tmp_path: Path) -> None:
    # A full server refuses before routing; that shortcut must not tell an unauthenticated client anything but 401.
    srv = Server(tmp_path, "--api-key", KEY, "--max-inflight-inputs", "1")
    try:
        for _attempt in range(5):
            thread, result = _in_background(lambda: srv.post("/embed", {"inputs": [LONG] * 32}))
            _wait_for(lambda: srv.metric("embed_inflight_inputs") > 0)
            anonymous = srv.post("/v1/embeddings", {"input": "one more"}, headers={})
            wrong = srv.post("/embed", {"inputs": "one more"}, headers={"authorization": "Bearer nope"})
            keyed = srv.post("/v1/embeddings", {"input": "one more"})
            thread.join()
            assert result["value"].status_code == 200  # type: ignore[attr-defined]
            assert anonymous.status_code == wrong.status_code == 401
            if keyed.status_code == 429:
                return
            assert keyed.status_code == 200  # the long request had ended first: try again
        pytest.fail("never caught the server with inputs in flight")
    finally:
        srv.stop()


def test_disconnected_client_work_is_dropped_before_inference(server: Server) -> None:
    dropped = server.metric("embed_inputs_dropped_total")
    embedded = server.metric("embed_inputs_total")
    # One long request per worker (each over a step's token window), so the next request has to wait.
    busy = [_in_background(lambda: server.post("/embed", {"inputs": [LONG] * 32})) for _ in range(2)]
    assert _wait_for(lambda: server.metric("embed_inflight_inputs") >= 64)
    body = json.dumps({"input": ["left early"] * 4}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = f"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n"
        sock.sendall(f"{head}content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        assert _wait_for(lambda: server.metric("embed_inflight_inputs") >= 68)
    for thread, result in busy:
        thread.join()
        assert result["value"].status_code == 200  # type: ignore[attr-defined]
    assert _wait_for(lambda: server.metric("embed_inflight_inputs") == 0)
    assert server.metric("embed_inputs_dropped_total") - dropped == 4
    assert server.metric("embed_inputs_total") - embedded == 64


def test_client_gone_while_sending_its_body_is_counted(server: Server) -> None:
    head = f"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-length: 1000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + b'{"input": ["half a bo')
        time.sleep(0.2)
    closed = 'embed_requests_total{route="/v1/embeddings",status="499"}'
    assert _wait_for(lambda: closed in httpx.get(f"{server.url}/metrics").text, timeout=10)
    assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_in_flight_work_then_exits_cleanly(
    tmp_path: Path, encoder: runtime.Encoder, workers: str
) -> None:
    srv = Server(tmp_path, "--graceful-timeout", "300", "--workers", workers)  # generous: busy CI machines
    try:
        texts = [f"{LONG} {i}" for i in range(32)]
        thread, result = _in_background(lambda: srv.post("/embed", {"inputs": texts}))
        assert _wait_for(lambda: srv.metric("embed_inflight_inputs") >= 32)
        srv.proc.send_signal(signal.SIGTERM)
        health = httpx.get(f"{srv.url}/health", timeout=10)
        late = srv.post("/v1/embeddings", {"input": "on its way when the signal came"})
        thread.join()
        assert health.status_code == 503 and health.json() == {"status": "draining"}
        assert late.status_code == 200  # stragglers are still answered while the balancer catches up
        answer = result["value"]
        assert answer.status_code == 200  # type: ignore[attr-defined]
        got = np.array(answer.json())  # type: ignore[attr-defined]
        assert got.shape == (32, 384) and np.abs(got[:4] - encoder.encode(texts[:4])).max() <= 1e-6
        assert srv.proc.wait(60) == 0, srv.log.read_text()
        assert "draining 32 inputs in flight" in srv.log.read_text()
    finally:
        srv.stop()


def _metric_samples(server: Server, name: str) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{"):
            key, value = line.rsplit(" ", 1)
            found[key] = float(value)
    return found


def test_two_workers_both_run_and_hold_a_core_each(server: Server, encoder: runtime.Encoder) -> None:
    assert httpx.get(f"{server.url}/info", headers=AUTH).json()["workers"] == 2
    busy = "embed_worker_busy_seconds_total"
    before = _metric_samples(server, busy)
    assert set(before) == {f'{busy}{{worker="0"}}', f'{busy}{{worker="1"}}'}
    # Two requests over the token window each: the second arrives while one worker is busy with the first.
    texts = [[f"{LONG} {k} {i}" for i in range(24)] for k in range(2)]
    runs = [_in_background(lambda t=t: server.post("/embed", {"inputs": t})) for t in texts]  # type: ignore[misc]
    for thread, _ in runs:
        thread.join()
    for (_, result), sent in zip(runs, texts, strict=True):
        got = np.array(result["value"].json())  # type: ignore[attr-defined]
        assert np.abs(got[:2] - encoder.encode(sent[:2])).max() <= 1e-6
    after = _metric_samples(server, busy)
    assert all(after[k] > before[k] for k in before), (before, after)
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        # Each worker's thread is allowed on one core of its own (the server inherits this test's affinity).
        allowed = thread_affinities(server.proc.pid)
        single = sorted(a for a in allowed if len(a) == 1)
        assert len(single) == 2 and single[0] != single[1], allowed


def test_load_smoke(server: Server) -> None:
    loadgen = pytest.importorskip("benchmarks.loadgen")
    pytest.importorskip("aiohttp")
    texts = dev_sentences()[:64]
    load = loadgen.Load(f"{server.url}/v1/embeddings", loadgen.payloads(texts, 4, count=16), 4, AUTH)
    closed = loadgen.run(load, "closed", 4, 0.0, duration_s=1.5, warmup_s=0.5)
    assert closed.requests > 0 and closed.by_status == {"200": closed.requests}
    opened = loadgen.run(load, "open", 0, 40.0, duration_s=1.5, warmup_s=0.5)
    assert opened.requests > 0 and opened.by_status == {"200": opened.requests}
    assert opened.p99_ms is not None and closed.p50_ms is not None


def test_serve_reports_a_bad_model_cleanly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "--model", str(tmp_path), "serve", "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode != 0 and "manifest" in done.stderr.lower() and "Traceback" not in done.stderr


def test_full_service_refuses_in_its_asgi_entry_without_routing_or_reading_the_body(encoder: runtime.Encoder) -> None:
    # In process: the refusal must not touch the body or the Starlette app (that is what makes a 429 cheap).
    import asyncio

    from runtime.server.app import Service
    from runtime.server.options import Settings

    service = Service(encoder, Settings(api_key=KEY, max_inflight_inputs=4))
    service.inflight = 4

    async def starlette_app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("routed to Starlette")

    async def receive() -> dict[str, object]:
        raise AssertionError("body read")

    service.app = starlette_app  # type: ignore[assignment]
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/embeddings",
        "headers": [(b"authorization", AUTH["authorization"].encode())],
    }
    asyncio.run(service(scope, receive, send))
    start, body = sent
    headers = dict(start["headers"])  # type: ignore[call-overload]
    assert start["status"] == 429 and headers[b"retry-after"] == b"1"
    assert json.loads(body["body"])["error"]["code"] == "rate_limit_exceeded"  # type: ignore[arg-type]
    assert service.metrics.requests.labels("/v1/embeddings", "429")._value.get() == 1
    # Without the key the request goes on to its endpoint (which answers 401), and so does any request once not
    # full: it reads the body (this receive() raises, which the endpoint answers 500).
    for scope_headers, inflight in (([], 4), ([(b"authorization", b"Bearer nope")], 4), (scope["headers"], 3)):
        service.inflight = inflight
        sent.clear()
        asyncio.run(service({**scope, "headers": scope_headers}, receive, send))
        assert sent[0]["status"] == (401 if scope_headers != scope["headers"] else 500), sent
    # Other routes still go through Starlette.
    with pytest.raises(AssertionError, match="routed to Starlette"):
        asyncio.run(service({**scope, "path": "/health", "method": "GET"}, receive, send))
