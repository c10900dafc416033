"""A small client for a running `genret serve`: search without loading a model (stdlib only, no torch import)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from .errors import GenRetError
from .hit import Hit

#: Queries per request to /search/batch (the server's default --max-batch is larger).
BATCH = 32
TIMEOUT = 300.0


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash, or GenRetError unless it is http(s)://HOST[:PORT][/prefix]."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise GenRetError(f"invalid server URL {url!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise GenRetError(f"invalid server URL {url!r}: use http(s)://HOST[:PORT]")
    return url.rstrip("/")


def request(
    url: str, method: str, path: str, body: Any = None, *, token: str | None = None, timeout: float = TIMEOUT
) -> Any:
    """Send one JSON request to the server at ``url`` and return its decoded JSON answer. An error answer
    becomes a GenRetError with the server's message; so does a server that cannot be reached."""
    base = check_server_url(url)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            message = json.loads(raw)["error"]
        except (ValueError, KeyError, TypeError):
            message = raw.decode(errors="replace").strip()[:200] or e.reason
        raise GenRetError(f"server {base} answered {e.code}: {message}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise GenRetError(f"cannot reach the server {base}: {reason} (is `genret serve` running?)") from None
    except json.JSONDecodeError:
        raise GenRetError(f"server {base} did not answer with JSON (is it a `genret serve`?)") from None


def search(
    url: str,
    queries: list[str],
    k: int = 10,
    where: dict | None = None,
    task: str | None = None,
    *,
    timeout: float = TIMEOUT,
) -> list[list[Hit]]:
    """Top-``k`` hits per query from the server at ``url``, as ``Index.search`` returns them locally; ``where``
    is the same field -> value(s) filter."""
    results: list[list[Hit]] = []
    for s in range(0, len(queries), BATCH):
        part = queries[s : s + BATCH]
        answer = request(
            url, "POST", "/search/batch", {"queries": part, "k": k, "filter": where, "task": task}, timeout=timeout
        )
        try:
            rows = answer["results"]
            if len(rows) != len(part):
                raise ValueError
            results += [[Hit(**hit) for hit in row["hits"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise GenRetError(f"unexpected answer from the server {url} (is it a `genret serve`?)") from None
    return results
