"""A small JSON-over-HTTP client for the dashboard API (urllib only)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from . import EXIT_AUTH, EXIT_INPUT, EXIT_SERVER, EXIT_UNREACHABLE, __version__


class CliError(Exception):
    """A failure with the exit code it maps to and a message for stderr."""

    def __init__(self, code: int, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _error_message(status: int, body: bytes) -> str:
    """The API's common error shape {"error": {"message", "fields"}}, else the raw text."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body[:300].decode('utf-8', 'replace').strip()}"
    message = f"HTTP {status}: {error.get('message', '')}"
    fields = error.get("fields") or {}
    if fields:
        details = "; ".join(f"{k}: {v}" for k, v in sorted(fields.items(), key=str))
        message += f" ({details})"
    return message


class Client:
    """Requests against MODELOPS_URL with `Authorization: Bearer MODELOPS_TOKEN`."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        if not base_url:
            raise CliError(
                EXIT_INPUT, "set MODELOPS_URL (or --url), e.g. https://modelops.example.com"
            )
        if not base_url.startswith(("http://", "https://")):
            raise CliError(
                EXIT_INPUT, f"MODELOPS_URL must start with http:// or https://: {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        all_headers = {
            "Accept": "application/json",
            "User-Agent": f"modelops-cli/{__version__}",
            "X-Request-ID": uuid.uuid4().hex,
            **(headers or {}),
        }
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            all_headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            status = exc.code
            if status in (401, 403):
                hint = " (check MODELOPS_TOKEN)" if status == 401 else " (token scope or role)"
                raise CliError(EXIT_AUTH, _error_message(status, raw) + hint, status) from None
            if status >= 500:
                raise CliError(EXIT_SERVER, _error_message(status, raw), status) from None
            raise CliError(EXIT_INPUT, _error_message(status, raw), status) from None
        except (urllib.error.URLError, TimeoutError, ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(EXIT_UNREACHABLE, f"cannot reach {self.base_url}: {reason}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(
                EXIT_SERVER, f"HTTP {status} from {url} is not JSON; is MODELOPS_URL the dashboard?"
            ) from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)


def multipart(
    fields: dict[str, str], file_field: str, filename: str, data: bytes
) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data upload with one file."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
