"""Request schemas (OpenAI embeddings, TEI /embed), their validation, and response bodies."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from runtime.quantization import OUTPUT_PRECISIONS, OutputPrecision

OPENAI_FIELDS = {"input", "model", "encoding_format", "dimensions", "user", "precision"}
TEI_FIELDS = {"inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "dimensions"}
TEI_FIELDS |= {"precision", "encoding_format"}  # this server's additions to TEI's /embed
INPUT_KINDS = "a string, an array of strings, an array of token ids or an array of token-id arrays"


class ApiError(Exception):
    """An error answered with OpenAI's body: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        """The JSON error body."""
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return orjson.dumps({"error": error})


@dataclass(frozen=True)
class Limits:
    """What one request may hold, and the model's token rules."""

    max_inputs: int
    vocab_size: int
    max_seq_length: int
    dimension: int
    precisions: tuple[str, ...] = OUTPUT_PRECISIONS  # output types the served artifact offers


@dataclass(frozen=True)
class Inputs:
    """Texts, or token-id sequences already checked and truncated; exactly one is set."""

    texts: list[str] | None = None
    ids: list[list[int]] | None = None

    @property
    def count(self) -> int:
        """Number of inputs (embeddings to return)."""
        return len(self.texts if self.texts is not None else self.ids or [])


@dataclass(frozen=True)
class OpenAIRequest:
    """A validated ``POST /v1/embeddings`` body."""

    inputs: Inputs
    base64: bool
    precision: OutputPrecision = "float32"


@dataclass(frozen=True)
class TeiRequest:
    """A validated ``POST /embed`` body."""

    inputs: Inputs
    normalize: bool
    truncate: bool
    precision: OutputPrecision = "float32"
    base64: bool = False


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, else 400."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ApiError(400, f"We could not parse the JSON body of your request: {err}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"The request body must be a JSON object, got {_type(value)}", code="invalid_json")
    return value


def parse_openai(body: dict[str, Any], limits: Limits, model_name: str) -> OpenAIRequest:
    """Validate an OpenAI embeddings request for the served model."""
    _reject_unknown(body, OPENAI_FIELDS)
    model = body.get("model")
    if model is not None and model != model_name:
        raise ApiError(
            400,
            f"The model {model!r} is not served here; this server serves {model_name!r} (or omit 'model')",
            param="model",
            code="model_not_found",
        )
    encoding = _encoding_format(body)
    precision = _precision(body, limits)
    _check_dimensions(body.get("dimensions"), limits.dimension)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, f"'user' must be a string, got {_type(user)}", param="user")
    if "input" not in body:
        raise ApiError(400, "Missing required parameter: 'input'", param="input", code="missing_required_parameter")
    inputs = parse_inputs(body["input"], "input", limits)
    return OpenAIRequest(inputs=inputs, base64=encoding == "base64", precision=precision)


def parse_tei(body: dict[str, Any], limits: Limits) -> TeiRequest:
    """Validate a TEI ``/embed`` request (``inputs``, ``normalize``, ``truncate``; right truncation only)."""
    _reject_unknown(body, TEI_FIELDS)
    normalize = _optional_bool(body, "normalize", True)
    truncate = _optional_bool(body, "truncate", True)
    direction = body.get("truncation_direction")
    if direction not in (None, "right", "Right"):
        raise ApiError(400, f"only right truncation is supported, got {direction!r}", param="truncation_direction")
    if body.get("prompt_name") is not None:
        raise ApiError(400, "this model has no prompts; 'prompt_name' must be absent", param="prompt_name")
    _check_dimensions(body.get("dimensions"), limits.dimension)
    encoding = _encoding_format(body)
    precision = _precision(body, limits)
    if "inputs" not in body:
        raise ApiError(400, "Missing required parameter: 'inputs'", param="inputs", code="missing_required_parameter")
    inputs = parse_inputs(body["inputs"], "inputs", limits)
    return TeiRequest(inputs, normalize, truncate, precision=precision, base64=encoding == "base64")


def parse_inputs(value: object, param: str, limits: Limits) -> Inputs:
    """A string, list of strings, list of token ids, or list of token-id lists; empty input is an error.

    Token ids are this model's WordPiece ids, used as given (send [CLS] ... [SEP] yourself, as
    ``Encoder.tokenize`` returns them); a sequence over max_seq_length keeps its first max_seq_length - 1 ids and
    its last one, which is the library's truncation when the sequence ends in [SEP].
    """
    if isinstance(value, str):
        if not value:
            raise ApiError(400, f"'{param}' must not be an empty string", param=param, code="empty_input")
        return Inputs(texts=[value])
    if not isinstance(value, list):
        raise ApiError(400, f"'{param}' must be {INPUT_KINDS}, got {_type(value)}", param=param)
    if not value:
        raise ApiError(400, f"'{param}' must not be an empty array", param=param, code="empty_input")
    first = value[0]
    if _is_int(first):
        _check_count(1, param, limits)
        return Inputs(ids=[_token_ids(value, param, limits)])
    _check_count(len(value), param, limits)
    if isinstance(first, str):
        for i, text in enumerate(value):
            if not isinstance(text, str):
                raise ApiError(
                    400, f"'{param}[{i}]' must be a string like '{param}[0]', got {_type(text)}", param=param
                )
            if not text:
                raise ApiError(400, f"'{param}[{i}]' must not be an empty string", param=param, code="empty_input")
        return Inputs(texts=value)
    if isinstance(first, list):
        ids = []
        for i, seq in enumerate(value):
            if not isinstance(seq, list):
                raise ApiError(
                    400,
                    f"'{param}[{i}]' must be an array of token ids like '{param}[0]', got {_type(seq)}",
                    param=param,
                )
            ids.append(_token_ids(seq, f"{param}[{i}]", limits))
        return Inputs(ids=ids)
    raise ApiError(400, f"'{param}' must be {INPUT_KINDS}; '{param}[0]' is {_type(first)}", param=param)


def openai_body(out: np.ndarray, model: str, tokens: int, as_base64: bool) -> bytes:
    """The OpenAI embeddings response; base64 is each vector's raw bytes: little-endian float32 (as the openai client
    decodes it), or one byte per int8/uint8 value or per 8 packed bits."""
    vectors = _vectors(out, as_base64)
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    body = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def tei_body(out: np.ndarray, as_base64: bool = False) -> bytes:
    """TEI's /embed response: an array of number arrays (floats, or ints for the compact types), or of base64
    strings of the raw bytes."""
    if not as_base64:
        return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps(_vectors(out, True))


def _vectors(out: np.ndarray, as_base64: bool) -> list[Any]:
    if not as_base64:
        return list(out)
    raw = np.ascontiguousarray(out, dtype="<f4" if out.dtype.kind == "f" else out.dtype)
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in raw]


def _encoding_format(body: dict[str, Any]) -> str | None:
    encoding = body.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise ApiError(400, f"'encoding_format' must be 'float' or 'base64', got {encoding!r}", param="encoding_format")
    return encoding


def _precision(body: dict[str, Any], limits: Limits) -> OutputPrecision:
    """The output type asked for: one of OUTPUT_PRECISIONS that the served artifact offers, else 400."""
    value = body.get("precision")
    if value is None:
        return "float32"
    for name in OUTPUT_PRECISIONS:
        if isinstance(value, str) and value == name:
            if name not in limits.precisions:
                missing = f"{name!r} needs the int8/uint8 output ranges, which this server's model artifact lacks"
                raise ApiError(
                    400,
                    f"'precision' {missing} (python -m export calibrate-outputs adds them); "
                    f"available here: {list(limits.precisions)}",
                    param="precision",
                    code="precision_unavailable",
                )
            return name
    raise ApiError(
        400,
        f"'precision' must be one of {list(OUTPUT_PRECISIONS)} (the type of the returned vectors), got {value!r}",
        param="precision",
    )


def _token_ids(seq: list[Any], param: str, limits: Limits) -> list[int]:
    if not seq:
        raise ApiError(400, f"'{param}' must not be an empty array of token ids", param=param, code="empty_input")
    for j, token in enumerate(seq):
        if not _is_int(token):
            raise ApiError(400, f"'{param}[{j}]' must be an integer token id, got {_type(token)}", param=param)
    low, high = min(seq), max(seq)
    if low < 0 or high >= limits.vocab_size:
        bad = low if low < 0 else high
        raise ApiError(
            400,
            f"'{param}' holds token id {bad}, outside this model's vocabulary 0..{limits.vocab_size - 1}",
            param=param,
            code="invalid_token_id",
        )
    if len(seq) > limits.max_seq_length:
        seq = seq[: limits.max_seq_length - 1] + seq[-1:]
    return seq


def _check_count(count: int, param: str, limits: Limits) -> None:
    if count > limits.max_inputs:
        raise ApiError(
            413,
            f"'{param}' holds {count} inputs; at most {limits.max_inputs} per request",
            param=param,
            code="too_many_inputs",
        )


def _check_dimensions(value: object, dimension: int) -> None:
    if value is not None and (not _is_int(value) or value != dimension):
        raise ApiError(400, f"'dimensions' must be {dimension} or absent, got {value!r}", param="dimensions")


def _optional_bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false, got {_type(value)}", param=name)
    return value


def _reject_unknown(body: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
