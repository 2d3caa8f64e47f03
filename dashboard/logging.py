"""Structured logs with a request id that follows a request into the Celery tasks it enqueues.

- `RequestIdMiddleware` takes `X-Request-ID` from the caller (a proxy or a pipeline) when it
  is a sane token, else makes one, and echoes it on the response.
- `RequestIdFilter` stamps `record.request_id` on every log record ("-" outside a request).
- `JsonFormatter` writes one JSON object per line (LOG_FORMAT=json).
- Celery signals: `before_task_publish` copies the current id into the message headers;
  `task_prerun` / `task_postrun` restore it around the task in the worker, so one grep of the
  id finds the web request and every task it caused.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import signals
from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
CELERY_HEADER = "request_id"
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")  # ids from outside go into logs verbatim

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


def current_request_id() -> str | None:
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Bind a request id for the duration of the request and return it in X-Request-ID."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        rid = incoming if _VALID.match(incoming) else new_request_id()
        request.request_id = rid  # type: ignore[attr-defined]
        token = request_id_var.set(rid)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[HEADER] = rid
        return response


class RequestIdFilter(logging.Filter):
    """Give every record a `request_id` attribute, so formatters can always name it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        return True


# Attributes every LogRecord has; anything else was passed in `extra=` and is logged too.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get() or None,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            body["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(body, default=str, ensure_ascii=False)


# --- Celery: carry the id from the publisher into the task ---


@signals.before_task_publish.connect(dispatch_uid="dashboard.logging.publish")
def _add_request_id_header(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    rid = request_id_var.get()
    if rid and headers is not None and CELERY_HEADER not in headers:
        headers[CELERY_HEADER] = rid


_task_tokens: dict[str, contextvars.Token[str | None]] = {}


def request_id_of_task(task: Any) -> str | None:
    """The id a task's message carried (protocol 2 exposes custom headers on the request)."""
    request = getattr(task, "request", None)
    rid = getattr(request, CELERY_HEADER, None)
    if not rid:
        rid = (getattr(request, "headers", None) or {}).get(CELERY_HEADER)
    return rid if isinstance(rid, str) and _VALID.match(rid) else None


@signals.task_prerun.connect(dispatch_uid="dashboard.logging.prerun")
def _bind_task_request_id(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    rid = request_id_of_task(task)
    if rid and task_id:
        _task_tokens[task_id] = request_id_var.set(rid)


@signals.task_postrun.connect(dispatch_uid="dashboard.logging.postrun")
def _unbind_task_request_id(task_id: str | None = None, **kwargs: Any) -> None:
    token = _task_tokens.pop(task_id or "", None)
    if token is not None:
        request_id_var.reset(token)
