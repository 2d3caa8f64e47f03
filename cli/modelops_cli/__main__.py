"""Entry point: `modelops <command>` (console script) or `python -m modelops_cli`."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import (
    EXIT_GATE,
    EXIT_INPUT,
    EXIT_OK,
    EXIT_SERVER,
    __version__,
)
from . import (
    __doc__ as PACKAGE_DOC,
)
from .client import Client, CliError, multipart

CONDITIONS = ("stale", "inconsistent", "alerts", "rollout-failing")
BATCH_SIZE = 1000


def q(part: str | int) -> str:
    return urllib.parse.quote(str(part), safe="")


def err(message: str) -> None:
    print(f"modelops: {message}", file=sys.stderr)


def out_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# --- Lookups shared by commands ---


def version_ref(text: str) -> tuple[str, int]:
    """'ranker:3' -> ('ranker', 3)."""
    model, sep, number = text.rpartition(":")
    if not sep or not model or not (number.isascii() and number.isdigit()) or int(number) < 1:
        raise CliError(EXIT_INPUT, f"give a version as MODEL:NUMBER, e.g. ranker:3 (got {text!r})")
    return model, int(number)


def version_id(client: Client, ref: str) -> int:
    model, number = version_ref(ref)
    return client.get(f"/api/v1/models/{q(model)}/versions/{number}/")["id"]


def deployment_id(client: Client, ref: str) -> int:
    """A deployment id, or APPLICATION/DEPLOYMENT resolved through the list endpoint."""
    if ref.isascii() and ref.isdigit():
        return int(ref)
    app, sep, name = ref.partition("/")
    if not sep or not app or not name:
        raise CliError(EXIT_INPUT, f"give a deployment as an id or APPLICATION/NAME (got {ref!r})")
    page = client.get("/api/v1/deployments/", query={"application": app, "page_size": 200})
    for row in page.get("results", []):
        if row["name"] == name:
            return row["id"]
    raise CliError(EXIT_INPUT, f"no deployment {name!r} in application {app!r}")


# --- register ---


def sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest(), path.stat().st_size


def parse_metrics(pairs: Sequence[str]) -> dict[str, float]:
    metrics = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            metrics[name] = float(value)
        except ValueError:
            raise CliError(EXIT_INPUT, f"--metric takes NAME=NUMBER (got {pair!r})") from None
        if not sep or not name:
            raise CliError(EXIT_INPUT, f"--metric takes NAME=NUMBER (got {pair!r})")
    return metrics


def cmd_register(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"artifact_uri": args.artifact_uri}
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise CliError(EXIT_INPUT, f"no such file: {path}")
        body["sha256"], body["size_bytes"] = sha256_of(path)
    if args.sha256:
        if args.file and args.sha256.lower() != body["sha256"]:
            raise CliError(EXIT_INPUT, f"--sha256 does not match {args.file} ({body['sha256']})")
        body["sha256"] = args.sha256
    if args.size is not None:
        body["size_bytes"] = args.size
    if "sha256" not in body or "size_bytes" not in body:
        raise CliError(
            EXIT_INPUT, "give --file (sha256 and size are computed) or --sha256 and --size"
        )
    body["trained_at"] = args.trained_at or datetime.now(UTC).isoformat()
    body["metrics"] = parse_metrics(args.metric)
    for field in (
        "version",
        "format",
        "framework",
        "source_commit",
        "pipeline_url",
        "stage",
        "reason",
    ):
        value = getattr(args, field)
        if value not in (None, ""):
            body[field] = value
    if args.team is not None:
        # create the registered model first when it does not exist yet
        try:
            client.get(f"/api/v1/models/{q(args.model)}/")
        except CliError as exc:
            if exc.status != 404:
                raise
            client.post("/api/v1/models/", json_body={"name": args.model, "team": args.team})
    version = client.post(f"/api/v1/models/{q(args.model)}/versions/", json_body=body)
    if args.alias:
        client.put(
            f"/api/v1/models/{q(args.model)}/aliases/{q(args.alias)}",
            json_body={"version": version["version"], "reason": args.reason or "modelops register"},
        )
    if args.json:
        out_json(version)
    else:
        alias = f", alias {args.alias}" if args.alias else ""
        print(f"registered {args.model}:{version['version']} (id {version['id']}{alias})")
    return EXIT_OK


# --- deploy ---


def parse_arm(text: str) -> dict[str, Any]:
    """MODEL:VERSION[=WEIGHT][/ROLE] -> an allocation item (weight 100 when alone)."""
    ref, _, role = text.partition("/")
    ref, sep, weight = ref.partition("=")
    model, number = version_ref(ref)
    item: dict[str, Any] = {"model": model, "version": number}
    if sep:
        if not weight.isdigit():
            raise CliError(EXIT_INPUT, f"weight must be a whole percent (got {text!r})")
        item["weight"] = int(weight)
    if role:
        item["role"] = role
    return item


def cmd_deploy(client: Client, args: argparse.Namespace) -> int:
    arms = [parse_arm(a) for a in args.arms]
    if len(arms) == 1 and "weight" not in arms[0]:
        arms[0]["weight"] = 100
    if any("weight" not in a for a in arms):
        raise CliError(
            EXIT_INPUT, "with several arms give each a weight: ranker:3=90 ranker:4=10/canary"
        )
    dep = deployment_id(client, args.deployment)
    state = client.put(
        f"/api/v1/deployments/{dep}/allocation",
        json_body={"allocations": arms, "reason": args.reason or "modelops deploy"},
    )
    if args.json:
        out_json(state)
    else:
        split = ", ".join(
            f"{a['model']}:{a['version']} {a['weight']}% {a['role']}" for a in state["allocations"]
        )
        print(f"deployment {dep} now serves {split}")
    return EXIT_OK


# --- rollout ---


def cmd_rollout(client: Client, args: argparse.Namespace) -> int:
    reason = args.reason or f"modelops rollout {args.action}"
    rollout_id = args.id
    if args.action == "start" and rollout_id is None:
        if not (args.deployment and args.candidate):
            raise CliError(EXIT_INPUT, "rollout start needs an ID, or --deployment and --candidate")
        dep = deployment_id(client, args.deployment)
        baseline = args.baseline
        if baseline is None:
            serving = client.get(f"/api/v1/deployments/{dep}/allocation")["allocations"]
            if not serving:
                raise CliError(EXIT_INPUT, "the deployment serves nothing; give --baseline")
            top = max(serving, key=lambda a: a["weight"])
            baseline = f"{top['model']}:{top['version']}"
        body: dict[str, Any] = {
            "deployment": dep,
            "strategy": args.strategy,
            "baseline_version": version_id(client, baseline),
            "candidate_version": version_id(client, args.candidate),
            "reason": reason,
        }
        if args.steps:
            try:
                body["steps"] = [{"percent": int(p)} for p in args.steps.split(",")]
            except ValueError:
                raise CliError(
                    EXIT_INPUT, f"--steps takes percents like 10,50,100 ({args.steps!r})"
                ) from None
        rollout_id = client.post("/api/v1/rollouts/", json_body=body)["id"]
    if rollout_id is None:
        raise CliError(EXIT_INPUT, f"rollout {args.action} needs the rollout ID")
    rollout = client.post(
        f"/api/v1/rollouts/{rollout_id}/{args.action}/", json_body={"reason": reason}
    )
    if args.json:
        out_json(rollout)
    else:
        print(f"rollout {rollout['id']} is {rollout['state']}")
    return EXIT_OK


# --- feedback push ---


def chunks(path: Path, size: int) -> Iterator[tuple[str, bytes, int]]:
    """(format, bytes, row count) per batch of `size` rows; CSV chunks repeat the header."""
    fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    try:
        fh = path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise CliError(EXIT_INPUT, f"cannot read {path}: {exc.strerror}") from None
    with fh:
        if fmt == "csv":
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise CliError(EXIT_INPUT, f"{path} has no header row")
            rows: list[list[str]] = []
            for row in reader:
                rows.append(row)
                if len(rows) == size:
                    yield fmt, _csv_bytes(header, rows), len(rows)
                    rows = []
            if rows:
                yield fmt, _csv_bytes(header, rows), len(rows)
        else:
            lines: list[str] = []
            for line in fh:
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                if len(lines) == size:
                    yield fmt, ("\n".join(lines) + "\n").encode(), len(lines)
                    lines = []
            if lines:
                yield fmt, ("\n".join(lines) + "\n").encode(), len(lines)


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def cmd_feedback_push(client: Client, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(EXIT_INPUT, f"no such file: {path}")
    batches: list[int] = []
    sent = 0
    for number, (fmt, data, rows) in enumerate(chunks(path, args.batch_size), start=1):
        fields = {"application": args.application} if args.application else {}
        body, ctype = multipart(fields, "file", f"{path.stem}-{number}.{fmt}", data)
        # the same chunk re-sent (a retried pipeline) maps to the first batch, counted once
        key = hashlib.sha256(f"{path.name}:{number}:".encode() + data).hexdigest()
        batch = client.post(
            "/api/v1/feedback/", body=body, content_type=ctype, headers={"Idempotency-Key": key}
        )
        batches.append(batch["id"])
        sent += rows
        print(f"sent {sent} rows in {number} batch(es)", file=sys.stderr, flush=True)
    if not batches:
        raise CliError(EXIT_INPUT, f"{path} holds no rows")
    totals = {"batches": len(batches), "rows": sent, "accepted": 0, "duplicate": 0, "rejected": 0}
    errors: list[dict[str, Any]] = []
    if args.no_wait:
        totals["pending"] = len(batches)
    else:
        deadline = time.monotonic() + args.wait
        pending = list(batches)
        while pending:
            batch = client.get(f"/api/v1/ingest-batches/{pending[0]}")
            if batch["state"] in ("done", "failed"):
                pending.pop(0)
                for k in ("accepted", "duplicate", "rejected"):
                    totals[k] += batch.get(k) or 0
                errors += [{"batch": batch["id"], **e} for e in batch.get("errors") or []][:20]
                if batch["state"] == "failed":
                    errors.append({"batch": batch["id"], "message": batch.get("last_error", "")})
                done = len(batches) - len(pending)
                print(f"processed {done}/{len(batches)} batch(es)", file=sys.stderr, flush=True)
                continue
            if time.monotonic() > deadline:
                raise CliError(
                    EXIT_SERVER,
                    f"{len(pending)} batch(es) still {batch['state']} after {args.wait}s "
                    f"(is a worker consuming the ingest queue?): {pending}",
                )
            time.sleep(args.poll)
    report = {**totals, "batch_ids": batches, "errors": errors[:50]}
    if args.json:
        out_json(report)
    else:
        print(
            f"{totals['accepted']} accepted, {totals['duplicate']} duplicate, "
            f"{totals['rejected']} rejected ({sent} rows, {len(batches)} batch(es))"
        )
        for e in errors[:10]:
            print(
                f"  batch {e.get('batch')} row {e.get('index', '-')}: "
                f"{e.get('field', '')} {e.get('message', '')}".rstrip()
            )
    return EXIT_GATE if args.fail_on_rejected and totals["rejected"] else EXIT_OK


# --- status (the deployment gate) ---


def conditions_of(client: Client, status: dict[str, Any]) -> dict[str, list[str]]:
    """Every gate condition that holds now, with the reasons."""
    found: dict[str, list[str]] = {c: [] for c in CONDITIONS}
    for d in status["deployments"]:
        for v in d["versions"]:
            if v["slo_breached"]:
                found["stale"].append(
                    f"{d['name']}: {v['model']}:{v['version']} is past the age SLO "
                    f"({v['age_seconds']}s > {status['application']['max_model_age_s']}s)"
                )
        r = d["replicas"]
        if r.get("mismatched") or r.get("inconsistent"):
            found["inconsistent"].append(
                f"{d['name']}: {r.get('mismatched', 0)} replica(s) serve an unallocated artifact, "
                f"{r.get('inconsistent', 0)} failed the last golden-input probe"
            )
        rollout = d.get("active_rollout")
        if rollout:
            if rollout["state"] == "paused":
                found["rollout-failing"].append(f"{d['name']}: rollout {rollout['id']} is paused")
            analysis = client.get(f"/api/v1/rollouts/{rollout['id']}/analysis")
            for g in (analysis or {}).get("guardrails") or []:
                if g.get("verdict") == "fail":
                    found["rollout-failing"].append(
                        f"{d['name']}: rollout {rollout['id']} guardrail {g.get('metric')} fails"
                    )
            if ((analysis or {}).get("srm") or {}).get("verdict") == "mismatch":
                found["rollout-failing"].append(
                    f"{d['name']}: rollout {rollout['id']} has a sample ratio mismatch"
                )
    for a in status.get("firing_alerts") or []:
        found["alerts"].append(f"{a['severity']}: {a['name']}: {a['message']}")
    return found


def print_status(status: dict[str, Any]) -> None:
    app = status["application"]
    print(f"{app['name']} ({app['slug']}), team {app['team']}, age SLO {app['max_model_age_s']}s")
    rows = [("DEPLOYMENT", "VERSION", "ROLE", "WEIGHT", "AGE", "SLO", "OFFLINE", "ONLINE")]
    for d in status["deployments"]:
        for v in d["versions"]:
            rows.append(
                (
                    d["name"],
                    f"{v['model']}:{v['version']}",
                    v["role"],
                    f"{v['weight']}%",
                    f"{(v['age_seconds'] or 0) // 3600}h",
                    "BREACH" if v["slo_breached"] else "ok",
                    "-" if v["offline_accuracy"] is None else f"{v['offline_accuracy']:.3f}",
                    "-" if v["online_accuracy"] is None else f"{v['online_accuracy']:.3f}",
                )
            )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for d in status["deployments"]:
        r = d["replicas"]
        print(
            f"{d['name']}: replicas {r['reporting']}/{r['expected']} reporting, "
            f"{r['stale']} stale, {r['mismatched']} mismatched, "
            f"{r.get('inconsistent', 0)} inconsistent"
        )
        ro = d.get("active_rollout")
        if ro:
            print(
                f"{d['name']}: rollout {ro['id']} {ro['strategy']} {ro['state']} step "
                f"{ro['step_index'] + 1}/{ro['step_count']} at {ro['percent']}%"
            )
    for a in status.get("firing_alerts") or []:
        print(f"ALERT {a['severity']}: {a['name']}: {a['message']}")


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    wanted = [c.strip() for c in (args.fail_on or "").split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(CONDITIONS))
    if unknown:
        raise CliError(
            EXIT_INPUT, f"unknown --fail-on condition(s) {unknown}; use {','.join(CONDITIONS)}"
        )
    status = client.get(f"/api/v1/applications/{q(args.application)}/status")
    if not isinstance(status, dict) or "deployments" not in status:
        raise CliError(EXIT_SERVER, "the status answer lacks deployments")
    found = conditions_of(client, status) if wanted else {}
    failing = {c: found[c] for c in wanted if found.get(c)}
    if args.json:
        out_json({**status, "gate": {"checked": wanted, "failing": failing}})
    else:
        print_status(status)
    if failing:
        for condition, reasons in failing.items():
            for reason in reasons:
                err(f"gate failed [{condition}] {reason}")
        return EXIT_GATE
    if wanted and not args.json:
        print(f"gate passed: none of {','.join(wanted)}")
    return EXIT_OK


# --- Parser ---


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelops",
        description="Pipeline client for the model operations dashboard.",
        epilog=PACKAGE_DOC.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url", default=os.environ.get("MODELOPS_URL", ""), help="default $MODELOPS_URL"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--version", action="version", version=f"modelops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("register", help="register a model version")
    p.add_argument("model")
    p.add_argument("--artifact-uri", required=True)
    p.add_argument("--file", help="local artifact: sha256 and size are computed from it")
    p.add_argument("--sha256")
    p.add_argument("--size", type=int)
    p.add_argument("--metric", action="append", default=[], help="NAME=NUMBER, repeatable")
    p.add_argument("--trained-at", help="ISO 8601 (default: now)")
    p.add_argument("--version", type=int, dest="version", help="default: the next number")
    p.add_argument("--format")
    p.add_argument("--framework")
    p.add_argument("--source-commit")
    p.add_argument("--pipeline-url")
    p.add_argument("--stage")
    p.add_argument("--alias", help="then move this alias to the new version")
    p.add_argument("--team", help="create the registered model with this team when missing")
    p.add_argument("--reason", default="")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("deploy", help="set a deployment's traffic allocation")
    p.add_argument("deployment", help="id or APPLICATION/NAME")
    p.add_argument("arms", nargs="+", help="MODEL:VERSION[=WEIGHT][/ROLE], e.g. ranker:4=10/canary")
    p.add_argument("--reason", default="")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("rollout", help="start, pause, promote or roll back a rollout")
    p.add_argument(
        "action", choices=["start", "pause", "resume", "advance", "promote", "rollback", "abort"]
    )
    p.add_argument("id", nargs="?", type=int, help="rollout id (start: omit to create one)")
    p.add_argument("--deployment", help="start: id or APPLICATION/NAME")
    p.add_argument("--candidate", help="start: MODEL:VERSION")
    p.add_argument("--baseline", help="start: MODEL:VERSION (default: the main serving version)")
    p.add_argument("--strategy", default="canary", help="start: canary, gradual, ab_test, shadow")
    p.add_argument("--steps", help="start: percents, e.g. 10,50,100")
    p.add_argument("--reason", default="")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("feedback", help="send feedback events")
    fsub = p.add_subparsers(dest="feedback_command", required=True)
    push = fsub.add_parser("push", help="upload a CSV or JSONL file in batches")
    push.add_argument("file")
    push.add_argument("--application", help="default application slug for rows without one")
    push.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    push.add_argument("--no-wait", action="store_true", help="do not wait for the workers")
    push.add_argument("--wait", type=float, default=600.0, help="seconds to wait for processing")
    push.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    push.add_argument(
        "--fail-on-rejected", action="store_true", help="exit 1 when rows were rejected"
    )
    push.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    push.set_defaults(func=cmd_feedback_push)

    p = sub.add_parser("status", help="an application's status; a deployment gate with --fail-on")
    p.add_argument("application", help="application slug")
    p.add_argument("--fail-on", default="", help=f"comma list of {','.join(CONDITIONS)}")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    if getattr(args, "batch_size", 1) < 1:
        err("--batch-size must be at least 1")
        return EXIT_INPUT
    try:
        client = Client(args.url, os.environ.get("MODELOPS_TOKEN", ""), timeout=args.timeout)
        return args.func(client, args)
    except CliError as exc:
        err(exc.message)
        return exc.code
    except KeyboardInterrupt:
        err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
