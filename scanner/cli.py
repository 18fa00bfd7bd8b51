"""The ``iotbaseline`` command line.

Exit codes: 0 no finding at or above --fail-on; 1 findings at or above it; 2 usage or
configuration error; 3 the scan could not run; 130 interrupted (a partial report is written).
Errors are one line on stderr; ``--debug`` adds the traceback. Only report payloads use stdout.

The history store is opt-in for scans: ``--store URL`` (or ``IOTBASELINE_STORE``) saves each scan,
partial ones too, after its report files are written; a store failure is a one-line warning, never
a lost scan. ``iotbaseline store …`` uses the same URL, or else the default SQLite file under the
user's data folder (``$XDG_DATA_HOME/iotbaseline/store.sqlite``); ``--store default`` names it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
from dataclasses import asdict
from datetime import datetime
from importlib.resources import files
from itertools import islice
from pathlib import Path
from typing import NoReturn

import yaml

from probes.registry import load_probes
from profiles import TlsTrust, builtin_profile_names, load_profile
from profiles.yamldata import DataFileError
from reports.answers import checklist, load_answers
from reports.capture import capture_scope
from reports.compliance import (
    PRIMARY_FRAMEWORK,
    FrameworkError,
    clauses_by_check,
    load_frameworks,
    mapping_errors,
    select_frameworks,
)
from reports.diff import diff_results, render_diff_json, render_diff_text
from reports.evidence import EvidenceError, sha256_file, write_evidence
from reports.renderers import RENDERERS, write_reports
from reports.verdicts import assess
from scanner import __version__
from scanner.agents import BROKER_ENV, run_worker, valid_segment
from scanner.engine import PlanError, ScanEngine, ScanPlan
from scanner.jobs import build_plan
from scanner.models import ScanResult, Severity
from scanner.progress import ScanProgress
from scanner.storage import JOURNAL_NAME, REPORT_NAME, ResultStore, StoredScan, load_report
from scanner.store import ScanStore, StoreError, default_store_path, redacted, store_url
from scanner.targets import Scope, TargetError, build_scope, parse_ports
from scanner.textsafe import terminal_safe
from scanner.webhooks import WebhookTarget

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_SCAN_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FORMATS = tuple(RENDERERS)
DEFAULT_FORMATS = ",".join(name for name in ("json", "html") if name in RENDERERS)
DEFAULT_PROFILE = "safe"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # both stop the scan and keep a partial report
STORE_ENV = "IOTBASELINE_STORE"
EXCLUDE_PORTS_ENV = "IOTBASELINE_EXCLUDE_PORTS"
AUTHORISED_ENV = "IOTBASELINE_AUTHORISED"

log = logging.getLogger("iotbaseline")


class _TerminalSafe(logging.Filter):
    """Log lines carry device and plugin text: neutralise escape sequences before printing."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = terminal_safe(record.getMessage(), 2000)
        record.args = None
        return True


class UsageError(Exception):
    """Bad input from the user: shown as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own errors: one line, exit 2
        sys.stderr.write(f"iotbaseline: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text.removesuffix("/s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _add_scan_options(parser: argparse.ArgumentParser, with_checks: bool) -> None:
    parser.add_argument("targets", nargs="+", metavar="TARGET",
                        help="address, CIDR, range (10.0.0.5-40), host name or @file")
    parser.add_argument("--exclude", action="append", default=[], metavar="TARGET",
                        help="leave these out (same forms as targets); repeatable")
    _add_exclude_ports_option(parser)
    parser.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME|PATH",
                        help=f"scan profile (default {DEFAULT_PROFILE})")
    parser.add_argument("--ports", metavar="PORTS",
                        help="ports instead of the profile's: 22,80,8000-8100,U:161")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="report folder (default: a new timestamped folder here)")
    _add_format_option(parser)
    parser.add_argument("--concurrency", type=_positive_int, metavar="N",
                        help="connections in flight across the scan")
    parser.add_argument("--per-host", type=_positive_int, metavar="N",
                        help="connections in flight to one device (default 2)")
    parser.add_argument("--rate", type=_positive_float, metavar="N/s",
                        help="new connections per second to one device")
    parser.add_argument("--timeout", type=_positive_float, metavar="S",
                        help="connect and read timeout in seconds")
    parser.add_argument("--allow-public", action="store_true",
                        help="allow globally routable targets (only with authorisation)")
    parser.add_argument("--force", action="store_true",
                        help="allow more than 65,536 addresses")
    _add_store_option(parser, f"also save the scan in this history store (default from "
                      f"{STORE_ENV}; none when unset)")
    if with_checks:
        parser.add_argument("--fail-on", default="high", metavar="SEVERITY",
                            help="exit 1 when a finding is at least this severe "
                                 "(info, low, medium, high, critical; default high)")
        parser.add_argument("--show-secrets", action="store_true",
                            help="do not redact discovered passwords in reports")
        _add_frameworks_option(parser)
        parser.add_argument("--evidence", type=Path, metavar="DIR",
                            help="write an evidence bundle to this new folder: a transcript "
                                 "per finding, a packet capture of in-scope traffic (needs "
                                 "root or CAP_NET_RAW) and a SHA-256 manifest")


def _add_exclude_ports_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exclude-ports", default=os.environ.get(EXCLUDE_PORTS_ENV, ""),
                        metavar="PORTS", help="ports never to contact, TCP or UDP, e.g. "
                        f"2024,9100 (default from {EXCLUDE_PORTS_ENV})")


def _add_store_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--store", default=os.environ.get(STORE_ENV), metavar="URL",
                        help=help_text + ": sqlite:///PATH, a file path, "
                        "postgresql://USER@HOST/DB or 'default'")


def _add_frameworks_option(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(f.id for f in load_frameworks())
    parser.add_argument("--frameworks", default=PRIMARY_FRAMEWORK, metavar="ID[,ID]",
                        help=f"standards to give clause verdicts for ({names}; default "
                             f"{PRIMARY_FRAMEWORK})")


def _framework_ids(text: str) -> list[str]:
    ids = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [f.id for f in select_frameworks(ids)]
    except FrameworkError as exc:
        raise UsageError(f"--frameworks: {exc}") from None


def _add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default=DEFAULT_FORMATS, metavar="FMT[,FMT]",
                        help=f"report formats, JSON always included ({', '.join(FORMATS)}; "
                             f"default {DEFAULT_FORMATS})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iotbaseline", description="Network-based baseline audit of IoT "
                     "devices, mapped to ISO/IEC 27402:2023. Scan only networks you are "
                     "authorised to test.")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    scan = commands.add_parser("scan", help="discover devices and run the checks")
    _add_scan_options(scan, with_checks=True)
    discover = commands.add_parser("discover", help="discovery and fingerprinting only")
    _add_scan_options(discover, with_checks=False)
    demo = commands.add_parser("demo", help="start a simulated IoT lab on 127.77.0.x, scan it")
    demo.add_argument("--out", type=Path, metavar="DIR", help="report folder")
    _add_store_option(demo, f"also save the scan in this history store (default from "
                      f"{STORE_ENV}; none when unset)")
    report = commands.add_parser("report", help="re-render a saved scan, merging assessor "
                                 "answers into the clause verdicts")
    report.add_argument("scan", type=Path, metavar="SCAN.json")
    _add_format_option(report)
    _add_frameworks_option(report)
    report.add_argument("--answers", type=Path, metavar="FILE",
                        help="assessor answers (YAML, from `iotbaseline checklist`)")
    report.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for the reports (default: the scan's folder)")
    checklist_parser = commands.add_parser(
        "checklist", help="write the assessor answers template for a saved scan (stdout)")
    checklist_parser.add_argument("scan", type=Path, metavar="SCAN.json")
    checklist_parser.add_argument("--framework", default="iso-iec-27402-2023")
    diff = commands.add_parser("diff", help="compare two saved scans: findings, devices and "
                               "clause verdicts (stdout)")
    diff.add_argument("old", type=Path, metavar="OLD.json")
    diff.add_argument("new", type=Path, metavar="NEW.json")
    diff.add_argument("--json", action="store_true", help="the diff as JSON instead of text")
    profiles_parser = commands.add_parser("profiles", help="list, show or validate scan profiles")
    profile_commands = profiles_parser.add_subparsers(dest="profiles_command", required=True,
                                                      parser_class=_Parser)
    profile_commands.add_parser("list", help="the built-in profiles")
    show = profile_commands.add_parser("show", help="a profile with extends: resolved (YAML)")
    show.add_argument("profile", metavar="NAME|PATH")
    check = profile_commands.add_parser("validate", help="check a profile file; exit 2 if bad")
    check.add_argument("profile", metavar="PATH")
    plugins_parser = commands.add_parser(
        "plugins", help="list the installed checks, their source package and what was refused")
    plugins_parser.add_subparsers(dest="plugins_command", parser_class=_Parser).add_parser(
        "list", help="the same as plain `plugins`")
    commands.add_parser("version", help="print the version")
    _add_store_parser(commands)
    _add_schedule_parser(commands)
    _add_worker_parser(commands)
    _add_service_parsers(commands)
    return parser


def _add_store_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    store = commands.add_parser("store", help="the scan history store: create, import, query")
    _add_store_option(store, f"the store (default from {STORE_ENV}, else {default_store_path()})")
    actions = store.add_subparsers(dest="store_command", required=True, parser_class=_Parser)
    actions.add_parser("init", help="create the store, or bring its schema up to date")
    actions.add_parser("upgrade", help="bring the store's schema up to date")
    imported = actions.add_parser("import", help="save report.json files (idempotent by scan id)")
    imported.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json")
    scans = actions.add_parser("scans", help="the saved scans, newest first")
    scans.add_argument("--limit", type=_positive_int, default=50, metavar="N")
    scans.add_argument("--offset", type=int, default=0, metavar="N")
    scans.add_argument("--json", action="store_true", help="JSON instead of a table")
    devices = actions.add_parser("devices", help="every device seen, with its latest verdict")
    devices.add_argument("--json", action="store_true", help="JSON instead of a table")
    history = actions.add_parser("history", help="one device across scans: addresses, verdicts, "
                                 "findings")
    history.add_argument("device", metavar="DEVICE", help="device key, MAC, serial or address")
    history.add_argument("--json", action="store_true", help="JSON instead of text")


def _add_worker_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    worker = commands.add_parser("worker", help="a scan agent: run the scans queued for one "
                                 "network segment, saving them to the central store")
    worker.add_argument("--segment", required=True, metavar="NAME",
                        help="serve the queue scan.NAME (lower-case letters, digits, '-')")
    worker.add_argument("--broker", default=os.environ.get(BROKER_ENV), metavar="URL",
                        help=f"the Celery broker, redis://HOST:PORT/DB (default from "
                             f"{BROKER_ENV})")
    _add_store_option(worker, f"the central store scans are saved to (default from {STORE_ENV})")
    worker.add_argument("--concurrency", type=_positive_int, default=1, metavar="N",
                        help="scans run at once, one process each (default 1)")
    worker.add_argument("--out", type=Path, default=Path("iotbaseline-agent"), metavar="DIR",
                        help="report files go to DIR/<scan id> (default ./iotbaseline-agent)")
    worker.add_argument("--name", metavar="NAME@HOST",
                        help="the worker's name (default SEGMENT-<random>@<host name>)")
    worker.add_argument("--authorised", nargs="+", metavar="CIDR",
                        default=os.environ.get(AUTHORISED_ENV, "").split() or None,
                        help="the only networks this agent's scans may touch (required; "
                             f"default from {AUTHORISED_ENV}, space-separated)")
    _add_exclude_ports_option(worker)


def _add_service_parsers(commands: argparse._SubParsersAction[_Parser]) -> None:
    serve = commands.add_parser("serve", help="the REST API, the dashboard and the scheduler")
    serve.add_argument("--listen", default="127.0.0.1:8700", metavar="HOST:PORT",
                       help="address to serve on (default 127.0.0.1:8700)")
    _add_store_option(serve, f"the store (default from {STORE_ENV}, else {default_store_path()})")
    serve.add_argument("--authorised", nargs="+", required=True, metavar="CIDR",
                       help="the only networks scans started here may touch")
    _add_exclude_ports_option(serve)
    serve.add_argument("--webhook-allow", nargs="+", default=[], metavar="CIDR",
                       help="networks webhooks made through the API may reach although they "
                            "are loopback, link-local or inside --authorised")
    serve.add_argument("--out", type=Path, default=Path("iotbaseline-service"), metavar="DIR",
                       help="report files go to DIR/<scan id> (default ./iotbaseline-service)")
    serve.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this "
                       "certificate chain (with --tls-key)")
    serve.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's key")
    token = commands.add_parser("token", help="API and dashboard tokens: create, list, revoke")
    _add_store_option(token, f"the store (default from {STORE_ENV}, else {default_store_path()})")
    actions = token.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    create = actions.add_parser("create", help="a new token, printed once (only a hash is kept)")
    create.add_argument("name")
    create.add_argument("--role", choices=("viewer", "operator"), default="viewer",
                        help="viewers read; operators also start scans and edit schedules")
    actions.add_parser("list", help="the tokens, never their secrets")
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)


def _cmd_serve(args: argparse.Namespace) -> int:
    from scanner.service.app import serve, tls_context
    from scanner.service.keys import ServiceConfig

    host, _, port_text = args.listen.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--listen: need HOST:PORT, got {args.listen!r}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        tls = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--tls-cert/--tls-key: {exc}") from None
    url = args.store or "default"
    with ScanStore(url):  # reachable, schema up to date: fail now, not at the first request
        pass
    authorised = build_scope(args.authorised,
                             excluded_ports=_excluded_ports(args.exclude_ports))
    webhook_allow = build_scope(args.webhook_allow, allow_public=True, force=True) \
        if args.webhook_allow else None
    config = ServiceConfig(store_url=url, authorised=authorised, webhook_allow=webhook_allow,
                           out_root=args.out, secure_cookies=tls is not None)
    asyncio.run(serve(config, host.strip("[]"), int(port_text), tls))
    return EXIT_OK


def _cmd_token(args: argparse.Namespace) -> int:
    with ScanStore(args.store or "default") as store:
        if args.token_command == "create":
            try:
                token, secret = store.create_token(args.name, args.role)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            sys.stderr.write(f"Token {token.id} ({token.name}, {token.role}); shown once:\n")
            sys.stdout.write(secret + "\n")
        elif args.token_command == "list":
            for token in store.list_tokens():
                used = token.last_used.isoformat(timespec="seconds") if token.last_used \
                    else "never used"
                sys.stdout.write(f"{token.id}\t{terminal_safe(token.name, 100)}\t{token.role}\t"
                                 f"{token.created_at.isoformat(timespec='seconds')}\t{used}\n")
        else:
            try:
                store.revoke_token(args.id)
            except LookupError as exc:
                raise UsageError(str(exc)) from None
            sys.stderr.write(f"Revoked token {args.id}\n")
    return EXIT_OK


def _cmd_worker(args: argparse.Namespace) -> int:
    if not valid_segment(args.segment):
        raise UsageError(f"--segment: not a segment name: {args.segment!r}")
    if not args.broker:
        raise UsageError(f"a worker needs --broker (or {BROKER_ENV})")
    store = _requested_store(args)
    if store is None:
        raise UsageError(f"a worker needs --store (or {STORE_ENV}): the central store")
    if not args.authorised:
        raise UsageError(f"a worker needs --authorised CIDR... (or {AUTHORISED_ENV}): the "
                         "networks its scans may touch")
    authorised = build_scope(args.authorised,
                             excluded_ports=_excluded_ports(args.exclude_ports))
    with ScanStore(store):  # reachable, schema up to date: fail now, not at the first scan
        pass
    run_worker(args.segment, args.broker, store, args.out, authorised, args.concurrency,
               args.name)
    return EXIT_OK


def _add_schedule_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    schedule = commands.add_parser("schedule", help="recurring scans run by `iotbaseline "
                                   "serve`: add, list, remove")
    _add_store_option(schedule, f"the store (default from {STORE_ENV}, else "
                      f"{default_store_path()})")
    actions = schedule.add_subparsers(dest="schedule_command", required=True,
                                      parser_class=_Parser)
    add = actions.add_parser("add", help="a new schedule, first due at the cron's next time")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--cron", required=True, metavar="EXPR",
                     help="five cron fields, in UTC, e.g. '*/30 * * * *'")
    add.add_argument("--targets", nargs="+", required=True, metavar="TARGET",
                     help="address, CIDR, range or host name")
    add.add_argument("--exclude", action="append", default=[], metavar="TARGET",
                     help="leave these out; repeatable")
    add.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME|PATH",
                     help=f"scan profile (default {DEFAULT_PROFILE})")
    add.add_argument("--ports", metavar="PORTS", help="ports instead of the profile's")
    _add_format_option(add)
    add.add_argument("--segment", metavar="NAME",
                     help="network segment whose scan agents run it (default: in-process)")
    add.add_argument("--webhook", action="append", default=[], metavar="URL",
                     help="POST the drift here after each scan; repeatable")
    add.add_argument("--webhook-secret-env", action="append", default=[], metavar="VAR",
                     help="environment variable holding the HMAC secret of each --webhook, in "
                          "order (one for all when given once); read when sending, never stored")
    listed = actions.add_parser("list", help="the schedules, with their next and last runs")
    listed.add_argument("--json", action="store_true", help="JSON instead of a table")
    removed = actions.add_parser("remove", help="delete a schedule (its scans stay)")
    removed.add_argument("name", metavar="NAME")


def _webhook_targets(urls: list[str], secret_envs: list[str]) -> list[WebhookTarget]:
    if urls and len(secret_envs) == 1:
        secret_envs = secret_envs * len(urls)
    if len(secret_envs) != len(urls):
        raise UsageError("give one --webhook-secret-env per --webhook (or one for all): "
                         "every webhook is signed")
    try:
        return [WebhookTarget(url, env) for url, env in zip(urls, secret_envs, strict=True)]
    except ValueError as exc:
        raise UsageError(f"--webhook: {exc}") from None


def _cmd_schedule(args: argparse.Namespace) -> int:
    from scanner.schedule import add_schedule, schedule_named

    write = sys.stdout.write
    with ScanStore(args.store or "default") as store:
        if args.schedule_command == "add":
            webhooks = _webhook_targets(args.webhook, args.webhook_secret_env)
            try:
                added = add_schedule(store, args.name, args.cron, args.targets,
                                     excludes=args.exclude, profile=args.profile,
                                     ports=args.ports, formats=_formats(args.format),
                                     segment=args.segment, webhooks=webhooks)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            write(f"schedule {added.name} added (id {added.id}), next run "
                  f"{added.next_run:%Y-%m-%d %H:%M}Z\n")
        elif args.schedule_command == "list":
            schedules = store.list_schedules()
            if args.json:
                write(json.dumps([asdict(s) for s in schedules], default=str, indent=2) + "\n")
            for item in [] if args.json else schedules:
                last = f"{item.last_run:%Y-%m-%d %H:%M}Z" if item.last_run else "never"
                upcoming = f"{item.next_run:%Y-%m-%d %H:%M}Z" if item.next_run else "-"
                scope = " ".join([*item.targets,
                                  *(["excluding", *item.excludes] if item.excludes else []),
                                  *(["ports", item.ports] if item.ports else [])])
                write(f"{terminal_safe(item.name, 40):<20} {terminal_safe(item.cron, 40):<16} "
                      f"next {upcoming}  "
                      f"last {last}  {item.segment or 'in-process'}  "
                      f"{terminal_safe(scope, 160)}  webhooks {len(item.webhooks)}\n")
        else:
            try:
                store.delete_schedule(schedule_named(store, args.name).id)
            except LookupError as exc:
                raise UsageError(str(exc.args[0])) from None
            write(f"schedule {args.name} removed\n")
    return EXIT_OK


def _excluded_ports(text: str) -> list[int]:
    """``--exclude-ports``: every port named, TCP or UDP alike."""
    excluded = parse_ports(text) if text else {}
    return sorted({*excluded.get("tcp", []), *excluded.get("udp", [])})


def _scope(args: argparse.Namespace) -> Scope:
    return build_scope(args.targets, args.exclude, allow_public=args.allow_public,
                       force=args.force, excluded_ports=_excluded_ports(args.exclude_ports))


def _formats(text: str) -> list[str]:
    asked = [item.strip().lower() for item in text.split(",") if item.strip()]
    unknown = [item for item in asked if item not in FORMATS]
    if unknown:
        raise UsageError(f"unknown report format {unknown[0]!r} (available: {', '.join(FORMATS)})")
    return sorted(set(asked) | {"json"})


def _out_dir(requested: Path | None) -> Path:
    if requested is not None:
        if requested.exists() and not requested.is_dir():
            raise UsageError(f"--out {requested} exists and is not a folder")
        if (requested / REPORT_NAME).exists() or (requested / JOURNAL_NAME).exists():
            raise UsageError(f"--out {requested} already holds a scan; choose a new folder")
        return requested
    return Path.cwd() / f"iotbaseline-report-{datetime.now():%Y%m%d-%H%M%S}"


def _plan(args: argparse.Namespace, with_checks: bool) -> ScanPlan:
    scope = _scope(args)
    profile = load_profile(args.profile)
    ports = parse_ports(args.ports) if args.ports else None
    for error in mapping_errors() if with_checks else ():
        log.warning("framework mapping %s from %s not used: %s", error.entry_point,
                    error.source, error.reason)
    overrides = {"concurrency": args.concurrency, "per_host": args.per_host, "rate": args.rate,
                 "connect_timeout": args.timeout, "read_timeout": args.timeout}
    plan = build_plan(scope, profile, with_checks=with_checks, ports=ports, overrides=overrides,
                      show_secrets=getattr(args, "show_secrets", False),
                      command_line=["iotbaseline", *sys.argv[1:]])
    plan.formats = _formats(args.format)
    if with_checks:
        plan.frameworks = _framework_ids(args.frameworks)
    return plan


async def _run_engine(plan: ScanPlan, out_dir: Path) -> StoredScan:
    store = ResultStore(out_dir)
    with ScanProgress(plan.scope.size) as progress:
        engine = ScanEngine(plan, store, progress)
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            log.warning("stopping: finishing the partial report (Ctrl-C again to abort)")
            for number in STOP_SIGNALS:
                loop.remove_signal_handler(number)
            engine.stop()

        for number in STOP_SIGNALS:
            loop.add_signal_handler(number, interrupt)
        try:
            return await engine.execute()
        finally:
            for number in STOP_SIGNALS:
                loop.remove_signal_handler(number)


def _evidence_dir(requested: Path | None) -> Path | None:
    if requested is not None and requested.exists() and (
            not requested.is_dir() or any(requested.iterdir())):
        raise UsageError(f"--evidence {requested} must be a new or empty folder")
    return requested


def _credential_files(plan: ScanPlan) -> list[Path]:
    """The credential data a scan may have tried: the built-in lists and the profile's own."""
    builtin = files("profiles").joinpath("credentials")
    paths = sorted(Path(str(r)) for r in builtin.iterdir() if r.name.endswith(".yaml"))
    return paths + [Path(name) for name in plan.profile.authentication.extra_files]


async def _run_with_evidence(plan: ScanPlan, out_dir: Path, folder: Path) -> StoredScan:
    """The scan inside a packet capture (when permitted), then the evidence bundle."""
    with tempfile.TemporaryDirectory(prefix="iotbaseline-capture-") as temporary:
        async with capture_scope(plan.scope, Path(temporary) / "scan.pcap") as capture:
            if capture.path is None:
                log.warning("no packet capture: %s", capture.reason)
            stored = await _run_engine(plan, out_dir)
        bundle = write_evidence(load_report(out_dir / REPORT_NAME), folder, capture.path,
                                _credential_files(plan), plan.profile.source,
                                capture_note=capture.reason or None,
                                capture_details=capture.details())
    sys.stderr.write(f"Evidence: {bundle} (manifest SHA-256 "
                     f"{sha256_file(bundle / 'manifest.json')})\n")
    return stored


SUMMARY_DEVICES = 50  # a /22's device list belongs in the report, not on the terminal


def print_summary(stored: StoredScan, out_dir: Path) -> None:
    """A short human summary on stderr; device strings are neutralised for the terminal. Read
    from the scan's journal, one record at a time, so a big scan's summary stays small."""
    write = sys.stderr.write
    meta = stored.meta
    state = "complete" if meta.complete else \
        f"INCOMPLETE ({meta.interrupted_reason or meta.stop_reason})"
    devices = len(stored.device_spans)
    write(f"\nScan {state}: {devices} device(s), {sum(stored.severity_counts.values())} "
          f"finding(s), {len(stored.error_spans)} probe error(s)\n")
    for device in islice(stored.devices(), SUMMARY_DEVICES):
        label = " ".join(filter(None, [device.vendor, device.manufacturer, device.model]))
        services = ", ".join(f"{s.port}/{s.transport} {s.label}"
                             for s in device.services)
        write(f"  {device.address:<16} {terminal_safe(label, 40):<30} "
              f"{terminal_safe(services, 120)}\n")
    if devices > SUMMARY_DEVICES:
        write(f"  … and {devices - SUMMARY_DEVICES} more device(s): see the report\n")
    counts = stored.severity_counts
    if counts:
        write("  findings: " + ", ".join(f"{counts[s]} {s.value}" for s in reversed(Severity)
                                         if counts[s]) + "\n")
    for finding in stored.ordered_findings[:20]:
        write(f"  [{finding.severity.value:>8}] {finding.device}:{finding.port} "
              f"{finding.check_id}: {terminal_safe(finding.summary, 160)}\n")
    for note in meta.discovery_notes:
        write(f"  note: {terminal_safe(note, 200)}\n")
    for renderer in RENDERERS.values():
        if (out_dir / renderer.filename).exists():
            write(f"Report: {out_dir / renderer.filename}\n")


def _exit_code(stored: StoredScan, fail_on: Severity | None) -> int:
    if stored.meta.stop_reason == "error":
        return EXIT_SCAN_FAILED
    if not stored.meta.complete:
        return EXIT_INTERRUPTED
    if fail_on is not None and any(severity.rank >= fail_on.rank and count
                                   for severity, count in stored.severity_counts.items()):
        return EXIT_FINDINGS
    return EXIT_OK


def _requested_store(args: argparse.Namespace) -> str | None:
    """The store URL asked for, checked before scanning so a typo fails fast."""
    if not args.store:
        return None
    try:
        store_url(args.store)
    except StoreError as exc:
        raise UsageError(f"--store: {exc}") from None
    return str(args.store)


def _save_to_store(report: Path, url: str | None) -> None:
    """Save the finished (or partial) scan; the report files exist already, so a failure here
    is a warning, not a lost scan."""
    if url is None:
        return
    try:
        result = load_report(report)
        with ScanStore(url) as store:
            store.save_scan(result)
            sys.stderr.write(f"Stored: scan {result.meta.scan_id} in {redacted(store.url)}\n")
    except Exception as exc:
        log.warning("scan not saved to the store: %s", _one_line(exc))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:300] if text else type(exc).__name__)


def _cmd_scan(args: argparse.Namespace, with_checks: bool) -> int:
    try:
        fail_on = Severity.parse(args.fail_on) if with_checks else None
    except ValueError as exc:
        raise UsageError(f"--fail-on: {exc}") from None
    evidence = _evidence_dir(getattr(args, "evidence", None))
    store = _requested_store(args)
    plan = _plan(args, with_checks)
    out_dir = _out_dir(args.out)
    log.info("scanning %d address(es) with profile %s; report in %s", plan.scope.size,
             plan.profile.name, out_dir)
    stored = asyncio.run(_run_engine(plan, out_dir) if evidence is None
                         else _run_with_evidence(plan, out_dir, evidence))
    print_summary(stored, out_dir)
    _save_to_store(out_dir / REPORT_NAME, store)
    return _exit_code(stored, fail_on)


def _cmd_demo(args: argparse.Namespace) -> int:
    from scanner.lab import Lab, default_devices

    store = _requested_store(args)

    async def run() -> tuple[StoredScan, Path]:
        devices = default_devices()
        async with Lab(devices) as lab:
            sys.stderr.write("Demo lab running: " + ", ".join(
                f"{d.name} {d.address}" for d in devices) + "\n")
            excluded = os.environ.get("IOTBASELINE_EXCLUDE_PORTS", "")
            scope = build_scope(lab.addresses, excluded_ports=sorted(
                {p for ports in (parse_ports(excluded) if excluded else {}).values()
                 for p in ports}))
            out_dir = _out_dir(args.out)
            # The lab's CA is trusted the way a site trusts its vendor's: named by the profile.
            ca_file = out_dir / "lab-ca.pem"
            out_dir.mkdir(parents=True, exist_ok=True)
            ca_file.write_bytes(lab.ca.pem)
            profile = load_profile(DEFAULT_PROFILE)
            profile = profile.model_copy(update={"tls": TlsTrust(ca_files=[str(ca_file)])})
            # Only the lab's own ports: whatever else listens on this machine is not the demo.
            plan = ScanPlan.build(
                scope, profile, load_probes()[0],
                ports={"tcp": lab.tcp_ports, "udp": lab.udp_ports},
                command_line=["iotbaseline", "demo"])
            plan.formats = _formats(DEFAULT_FORMATS)
            return await _run_engine(plan, out_dir), out_dir

    stored, out_dir = asyncio.run(run())
    print_summary(stored, out_dir)
    _save_to_store(out_dir / REPORT_NAME, store)
    return _exit_code(stored, None)


def _load_scan(path: Path) -> ScanResult:
    try:
        return load_report(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # pydantic's ValidationError and JSON errors are ValueErrors
        first = str(exc).splitlines()[0][:200]
        raise UsageError(f"{path} is not an iotbaseline scan report: {first}") from None


def _cmd_report(args: argparse.Namespace) -> int:
    formats = _formats(args.format)
    result = _load_scan(args.scan)
    answers = load_answers(args.answers) if args.answers else {}
    result = assess(result.model_copy(update={"verdicts": [], "device_verdicts": []}),
                    answers, select_frameworks(_framework_ids(args.frameworks)))
    out_dir = args.out or args.scan.parent
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in write_reports(result, out_dir, formats):
        sys.stderr.write(f"wrote {path}\n")
    return EXIT_OK


def _cmd_checklist(args: argparse.Namespace) -> int:
    frameworks = {f.id: f for f in load_frameworks()}
    if args.framework not in frameworks:
        raise UsageError(f"unknown framework {args.framework!r} "
                         f"(known: {', '.join(sorted(frameworks))})")
    sys.stdout.write(checklist(_load_scan(args.scan), frameworks[args.framework]))
    return EXIT_OK


def _cmd_diff(args: argparse.Namespace) -> int:
    changes = diff_results(_load_scan(args.old), _load_scan(args.new))
    sys.stdout.write(render_diff_json(changes) if args.json else render_diff_text(changes))
    return EXIT_OK


def _cmd_store(args: argparse.Namespace) -> int:
    url = args.store or "default"
    with ScanStore(url) as store:
        write = sys.stdout.write
        command = args.store_command
        if command in {"init", "upgrade"}:
            write(f"{redacted(store.url)}: schema at revision {store.revision}\n")
        elif command == "import":
            for path in args.reports:
                write(f"{store.save_scan(_load_scan(path))} {path}\n")
        elif command == "scans":
            scans = store.list_scans(args.limit, args.offset)
            if args.json:
                write(json.dumps([asdict(scan) for scan in scans], default=str, indent=2) + "\n")
            for scan in [] if args.json else scans:
                state = "complete" if scan.complete else "partial"
                write(f"{scan.id}  {scan.started_at:%Y-%m-%d %H:%M:%S}Z  {state:<8} "
                      f"{scan.devices:>5} device(s) {scan.findings:>6} finding(s)  "
                      f"{terminal_safe(scan.profile, 40)}\n")
        elif command == "devices":
            devices = store.devices()
            if args.json:
                write(json.dumps([asdict(d) for d in devices], default=str, indent=2) + "\n")
            for device in [] if args.json else devices:
                label = terminal_safe(" ".join(filter(None, [device.vendor, device.model])), 40)
                write(f"{terminal_safe(device.key, 48):<48} {device.address:<16} "
                      f"{device.verdict or '-':<14} {device.last_seen:%Y-%m-%d} {label}\n")
        else:
            _write_history(store, args.device, args.json)
    return EXIT_OK


def _write_history(store: ScanStore, device: str, as_json: bool) -> None:
    try:
        history = store.device_history(store.find_device(device))
    except LookupError as exc:
        raise UsageError(str(exc.args[0])) from None
    write = sys.stdout.write
    if as_json:
        write(json.dumps(asdict(history), default=str, indent=2) + "\n")
        return
    summary = history.device
    write(f"{terminal_safe(summary.key, 200)} ({terminal_safe(summary.vendor or '', 60)} "
          f"{terminal_safe(summary.model or '', 60)}), first seen {summary.first_seen:%Y-%m-%d}"
          "\n")
    for entry in history.entries:
        write(f"  {entry.started_at:%Y-%m-%d %H:%M}Z {entry.scan_id} {entry.address:<16} "
              f"{entry.verdict or '-'}: {len(entry.findings)} finding(s)\n")
        for finding in entry.findings:
            write(f"    [{finding.severity:>8}] {finding.port or '-'} {finding.check_id}: "
                  f"{terminal_safe(finding.title, 120)}\n")


def _cmd_profiles(args: argparse.Namespace) -> int:
    if args.profiles_command == "list":
        for name in builtin_profile_names():
            profile = load_profile(name)
            sys.stdout.write(f"{name:<12} {profile.max_intrusiveness:<13} "
                             f"{profile.description}\n")
        return EXIT_OK
    profile = load_profile(args.profile)  # a bad file raises a one-line DataFileError
    if args.profiles_command == "show":
        document = profile.model_dump(mode="json", exclude={"source", "extends"})
        sys.stdout.write(f"# {profile.source}, extends resolved\n")
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False))
    else:
        sys.stdout.write(f"{profile.source}: valid ({profile.name}, up to "
                         f"{profile.max_intrusiveness})\n")
    return EXIT_OK


def _cmd_plugins() -> int:
    """Every installed check with the package it comes from and its clauses in the primary
    framework (so a plugin author sees the mapping took); refused plugins on stderr, why."""
    probes, errors = load_probes()
    clauses = clauses_by_check()
    rows = [("CHECK", "SOURCE", "INTRUSIVENESS", "SEVERITY", PRIMARY_FRAMEWORK.upper(), "TITLE")]
    for loaded in sorted(probes, key=lambda lp: (not lp.builtin, lp.probe.metadata.check_id)):
        meta = loaded.probe.metadata
        rows.append((meta.check_id, loaded.source, meta.intrusiveness.name.lower(),
                     meta.severity.value,
                     ",".join(clauses.get(meta.check_id, {}).get(PRIMARY_FRAMEWORK, [])) or "-",
                     meta.title))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        sys.stdout.write(" ".join([*cells, row[-1]]) + "\n")
    for error in errors:
        sys.stderr.write(f"not loaded: probe {error.entry_point} ({error.source}): "
                         f"{error.reason}\n")
    for error in mapping_errors():
        sys.stderr.write(f"not loaded: framework mapping {error.entry_point} ({error.source}): "
                         f"{error.reason}\n")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_TerminalSafe())
    if not args.debug:
        for noisy in ("scapy", "asyncio", "zeroconf", "paramiko"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        if args.command == "version":
            sys.stdout.write(f"iotbaseline {__version__}\n")
            return EXIT_OK
        if args.command == "plugins":
            return _cmd_plugins()
        if args.command == "profiles":
            return _cmd_profiles(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "checklist":
            return _cmd_checklist(args)
        if args.command == "diff":
            return _cmd_diff(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "store":
            return _cmd_store(args)
        if args.command == "schedule":
            return _cmd_schedule(args)
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "token":
            return _cmd_token(args)
        if args.command == "worker":
            return _cmd_worker(args)
        return _cmd_scan(args, with_checks=args.command == "scan")
    except (UsageError, TargetError, DataFileError, PlanError, EvidenceError, StoreError) as exc:
        sys.stderr.write(f"iotbaseline: error: {exc}\n")
        if args.debug:
            traceback.print_exc()
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("iotbaseline: aborted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `iotbaseline plugins | head`: the reader has what it wanted
        with contextlib.suppress(OSError):  # nothing more reaches the closed pipe
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # the scan could not run: say why in one line
        sys.stderr.write(f"iotbaseline: scan could not run: {type(exc).__name__}: {exc}\n")
        if args.debug:
            traceback.print_exc()
        return EXIT_SCAN_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
