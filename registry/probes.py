"""The golden-input probe engine: send inputs to replicas over HTTP and compare the answers.

No database access here: `registry.services.probes` feeds it plain data and stores the
verdicts. Standard library only (urllib + a bounded thread pool).

Replica-side contract
---------------------
Each replica exposes ``POST <replica.url><REPLICA_PROBE_PATH>`` (default ``/predict``)::

    request:  {"inputs": <one golden input, any JSON>}
    response: 200, Content-Type application/json, {"outputs": <the model's answer, any JSON>}

The response may add ``"sha256"`` (artifact loaded) or ``"version"``; they are ignored by the
comparison. Anything else is a fault, reported as such and never counted as a disagreement:
no answer within the timeout -> ``timeout``; connection refused / DNS failure / no url ->
``unreachable``; HTTP status other than 2xx -> ``error``; a body that is not a JSON object
with an ``outputs`` key -> ``bad_response``. A replica's inputs are sent one after the other
(replicas are probed in parallel, at most ``max_workers`` at once), a replica's first
fault ends its run, so a dead replica costs one timeout, not one per input, and the whole
run stops at its time budget.
"""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

MAX_RESPONSE_BYTES = 1_000_000

# Per-answer statuses; the same words as ReplicaProbeResult.Verdict's faults.
OK = "ok"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
ERROR = "error"
BAD_RESPONSE = "bad_response"


# --- Comparison rules ---


@dataclass(frozen=True)
class Rule:
    """How two answers are compared (GoldenSet.rule and its parameters)."""

    kind: str = "exact"  # exact | tolerance | top_k
    abs_tolerance: float = 0.0
    rel_tolerance: float = 0.0
    top_k: int | None = None
    min_overlap: float = 1.0


def _close(a: Any, b: Any, rule: Rule) -> bool:
    """Structural equality where numbers may differ within the rule's tolerances."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=rule.rel_tolerance, abs_tol=rule.abs_tolerance)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rule) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rule) for k in a)
    return a == b


def _items(answer: Any) -> list[str] | None:
    """The ranked items of a recommendation answer: a list, or {"items": [...]}."""
    if isinstance(answer, dict) and isinstance(answer.get("items"), list):
        answer = answer["items"]
    if not isinstance(answer, list):
        return None
    # items may be ids or objects: compare their canonical JSON
    return [json.dumps(item, sort_keys=True) for item in answer]


def top_k_overlap(a: Any, b: Any, k: int | None) -> float | None:
    """Share of the first k items that the two ranked answers have in common (None: not lists)."""
    items_a, items_b = _items(a), _items(b)
    if items_a is None or items_b is None:
        return None
    k = k or max(len(items_a), len(items_b))
    if k == 0:
        return 1.0
    return len(set(items_a[:k]) & set(items_b[:k])) / k


def answers_agree(a: Any, b: Any, rule: Rule) -> bool:
    """True when `rule` counts the two answers as the same."""
    if rule.kind == "tolerance":
        return _close(a, b, rule)
    if rule.kind == "top_k":
        overlap = top_k_overlap(a, b, rule.top_k)
        return overlap is not None and overlap >= rule.min_overlap - 1e-9
    return a == b


# --- HTTP ---


@dataclass(frozen=True)
class Answer:
    """One replica's reply to one golden input."""

    status: str
    output: Any = None
    latency_ms: float | None = None
    detail: str = ""
    sha256: str = ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer of its own ("error"), never followed elsewhere


# Replicas are reached directly: no HTTP(S)_PROXY from the environment, no redirects.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def probe_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def post_input(url: str, payload: Any, *, timeout: float) -> Answer:
    """POST {"inputs": payload} to `url`; every failure becomes an Answer, never an exception."""
    if not url.lower().startswith(("http://", "https://")):
        return Answer(UNREACHABLE, detail="only http:// and https:// replica URLs are probed")
    body = json.dumps({"inputs": payload}).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    started = time.monotonic()

    def elapsed() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    try:
        with _opener.open(request, timeout=timeout) as response:
            raw = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return Answer(ERROR, latency_ms=elapsed(), detail=f"HTTP {exc.code}")
    except TimeoutError:
        return Answer(TIMEOUT, latency_ms=elapsed(), detail=f"no answer within {timeout:g} s")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError | socket.timeout):
            return Answer(TIMEOUT, latency_ms=elapsed(), detail=f"no answer within {timeout:g} s")
        return Answer(UNREACHABLE, latency_ms=elapsed(), detail=str(exc.reason)[:200])
    except (OSError, ValueError) as exc:  # reset mid-answer, bad URL, http.client errors
        return Answer(
            UNREACHABLE, latency_ms=elapsed(), detail=str(exc)[:200] or type(exc).__name__
        )
    latency = elapsed()
    if len(raw) > MAX_RESPONSE_BYTES:
        return Answer(BAD_RESPONSE, latency_ms=latency, detail="answer larger than 1 MB")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return Answer(BAD_RESPONSE, latency_ms=latency, detail="answer is not JSON")
    if not isinstance(data, dict) or "outputs" not in data:
        return Answer(BAD_RESPONSE, latency_ms=latency, detail='answer has no "outputs" key')
    sha = data.get("sha256")
    return Answer(OK, data["outputs"], latency, sha256=sha if isinstance(sha, str) else "")


@dataclass(frozen=True)
class Target:
    """A replica to probe and the golden inputs meant for the version it should serve."""

    key: Any
    url: str
    inputs: Sequence[tuple[str, Any]]  # (input name, payload)


def _probe_one(target: Target, *, path: str, timeout: float, deadline: float) -> dict[str, Answer]:
    if not target.url:
        return {"": Answer(UNREACHABLE, detail="replica reported no url")}
    url = probe_url(target.url, path)
    answers: dict[str, Answer] = {}
    for n, (name, payload) in enumerate(target.inputs):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f"probe time budget spent after {n} of {len(target.inputs)} inputs"
            answers[name] = Answer(TIMEOUT, detail=detail)
            break
        answer = post_input(url, payload, timeout=min(timeout, remaining))
        answers[name] = answer
        if answer.status != OK:
            break  # one fault is the verdict; don't spend a timeout per input
    return answers


def probe_targets(
    targets: Sequence[Target],
    *,
    path: str,
    timeout: float,
    max_workers: int,
    budget: float | None = None,
) -> dict[Any, dict[str, Answer]]:
    """Answers of every target, keyed by target.key then input name; replicas in parallel.

    `budget` bounds the whole run in seconds (the Celery task has a hard time limit): a
    replica still busy when it is spent gets a `timeout` for its next input.
    """
    if not targets:
        return {}
    deadline = time.monotonic() + (budget if budget is not None else math.inf)
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(targets)))) as pool:
        futures = {
            t.key: pool.submit(_probe_one, t, path=path, timeout=timeout, deadline=deadline)
            for t in targets
        }
        return {key: future.result() for key, future in futures.items()}


# --- Verdicts ---


@dataclass
class Finding:
    """One replica's verdict after comparison."""

    verdict: str  # consistent | divergent | a fault status
    latency_ms: float | None = None
    answered: int = 0
    detail: str = ""
    first_difference: dict[str, Any] | None = None
    sha256: str = ""
    disagreements: list[str] = field(default_factory=list)


def _fault(answers: dict[str, Answer]) -> Answer | None:
    return next((a for a in answers.values() if a.status != OK), None)


def _reference(answers: list[Any], rule: Rule) -> tuple[bool, Any]:
    """The answer most replicas agree with: (found, answer); no strict plurality -> not found."""
    clusters: list[list[Any]] = []
    for answer in answers:
        for cluster in clusters:
            if answers_agree(cluster[0], answer, rule):
                cluster.append(answer)
                break
        else:
            clusters.append([answer])
    if not clusters:
        return False, None
    sizes = sorted((len(c) for c in clusters), reverse=True)
    if len(sizes) > 1 and sizes[0] == sizes[1]:
        return False, None
    best = max(clusters, key=len)
    return True, best[0]


def compare_group(
    answers: dict[Any, dict[str, Answer]],
    *,
    inputs: Sequence[tuple[str, Any, Any]],
    rule: Rule,
    voters: set[Any] | None = None,
) -> dict[Any, Finding]:
    """Verdicts for replicas that should serve the same version and got the same inputs.

    `inputs` are (name, payload, expected-or-None). The reference of an input is its expected
    output when given, else the answer a strict plurality of the replicas in `voters` gave
    (all by default); a tie leaves no reference and every answering replica is divergent.
    Faulty replicas keep their fault and take no part in the vote.
    """
    voters = set(answers) if voters is None else voters
    findings: dict[Any, Finding] = {}
    for key, replica_answers in answers.items():
        fault = _fault(replica_answers)
        latencies = [a.latency_ms for a in replica_answers.values() if a.latency_ms is not None]
        findings[key] = Finding(
            verdict=fault.status if fault else "consistent",
            latency_ms=max(latencies) if latencies else None,
            answered=sum(1 for a in replica_answers.values() if a.status == OK),
            detail=fault.detail if fault else "",
            sha256=next((a.sha256 for a in replica_answers.values() if a.sha256), ""),
        )
    healthy = [k for k in answers if findings[k].verdict == "consistent"]
    for name, _payload, expected in inputs:
        got = {k: answers[k][name].output for k in healthy if name in answers[k]}
        if expected is not None:
            found, reference, source = True, expected, "expected"
        else:
            found, reference = _reference([got[k] for k in got if k in voters], rule)
            source = "majority"
        for key, output in got.items():
            if found and answers_agree(reference, output, rule):
                continue
            finding = findings[key]
            finding.verdict = "divergent"
            finding.disagreements.append(name)
            if finding.first_difference is None:
                finding.first_difference = {
                    "input": name,
                    "reference": source if found else "no majority",
                    "expected": reference if found else None,
                    "got": output,
                }
    return findings
