"""One error shape for every 4xx/5xx: {"error": {"message", "type", "param", "code"}} (+ "problems" for datasets).

FastAPI's own validation errors and Starlette's 404/405 are converted too, so clients parse one thing.
Request-validation errors are 400 (as in the OpenAI API), with `param` naming the offending field.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        problems: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        detail: str | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.problems = problems
        self.headers = headers
        # What is wrong with `param`, without its name: lets another API (the OpenAI one) name the parameter its way.
        self.detail = detail


def invalid_cursor(problem: str) -> APIError:
    """The 400 for a list's `after` that names nothing to continue from; `problem` says what is wrong with it."""
    return APIError(400, f"after: {problem}", code="invalid_cursor", param="after")


def param_error(param: str, detail: str, code: str = "invalid_value", status_code: int = 400) -> APIError:
    """A 4xx about one parameter: the message is "param: detail", and both parts are kept apart."""
    return APIError(status_code, f"{param}: {detail}", code=code, param=param, detail=detail)


def not_found(kind: str, object_id: str, param: str = "id") -> APIError:
    # The same answer whether the object does not exist or belongs to another tenant: no existence oracle.
    return APIError(404, f"No {kind} with id {object_id!r}.", code=f"{kind}_not_found", param=param)


def error_body(
    status_code: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    problems: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": TYPES.get(status_code, "server_error" if status_code >= 500 else "invalid_request_error"),
        "param": param,
        "code": code,
    }
    body: dict[str, Any] = {"error": error}
    if problems is not None:
        body["problems"] = problems
    return body


def error_response(
    status_code: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    problems: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(status_code, message, code, param, problems), status_code=status_code, headers=headers
    )


async def send_error(
    send, status_code: int, message: str, code: str, close: bool = False, param: str | None = None
) -> None:
    """The error shape sent straight from an ASGI middleware, before any route or dependency runs."""
    import json

    payload = json.dumps(error_body(status_code, message, code, param)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _validation_param(loc: tuple) -> str | None:
    # ("body", "budget") -> "budget"; ("query", "limit") -> "limit"; ("body", "lora_targets", 2) -> "lora_targets.2"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or None


def json_syntax_message(first: dict, body: Any) -> str | None:
    """FastAPI reports a JSON syntax error as loc ("body", <offset>) with "JSON decode error"; say where it is as a
    person counts (line and column of the request body) and what the parser expected."""
    if first.get("type") != "json_invalid":
        return None
    loc = tuple(first.get("loc", ()))
    position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    reason = (first.get("ctx") or {}).get("error") or "malformed JSON"
    if position is None or not isinstance(body, str):
        return f"invalid JSON in the request body: {reason}"
    line = body.count("\n", 0, position) + 1
    column = position - (body.rfind("\n", 0, position) + 1) + 1
    return f"invalid JSON in the request body at line {line} column {column}: {reason}"


def _body_model(request: Request):
    """The pydantic model of the route's JSON body, or None (a form upload, a route without a body)."""
    from pydantic import BaseModel

    route = request.scope.get("route")
    field = getattr(route, "body_field", None)
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _model_in(annotation: Any):
    """The pydantic model an annotation is, or holds as `Model | None` (a comparison's `settings`), else None."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
            return candidate
    return None


def unknown_field_hint(request: Request, loc: tuple) -> str:
    """' (did you mean 'epochs'?)' for an unknown body field close to a known one (`n_epochs`), else ''.

    The known names are the fields of the model at that place in the body, so nested settings get theirs."""
    import difflib

    model = _body_model(request)
    path = [part for part in loc[1:-1]] if loc and loc[0] == "body" else None
    if model is None or path is None or not loc:
        return ""
    for part in path:  # walk into nested models; a list index keeps the model of the list's items
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None) if field is not None else model
        model = _model_in(annotation)
        if model is None:
            return ""
    known = [f.alias or name for name, f in model.model_fields.items()]
    match = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError):
        return error_response(exc.status_code, exc.message, exc.code, exc.param, exc.problems, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first: dict[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        syntax = json_syntax_message(first, exc.body)
        if syntax:  # not a field's problem: no param (it used to be the byte offset, "68")
            return error_response(400, syntax, "invalid_json", None)
        param = _validation_param(tuple(first.get("loc", ())))
        message = first.get("msg", "invalid request")
        if first.get("type") == "extra_forbidden":
            message += unknown_field_hint(request, tuple(first.get("loc", ())))
        if param:
            message = f"{param}: {message}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
        if first.get("type") == "extra_forbidden":
            code = "unknown_parameter"
        return error_response(400, message, code, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(exc.status_code, message, code, headers=getattr(exc, "headers", None))

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _pool_exhausted(_request: Request, exc: SQLAlchemyTimeoutError):
        # Every pooled connection is busy (load, not a bug): a retryable 503, never a 500.
        log.warning("database pool exhausted: %s", exc)
        return error_response(
            503,
            "The server is busy (no database connection free); retry shortly.",
            "server_busy",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "The server failed to handle the request; see its log.", "internal_error")
