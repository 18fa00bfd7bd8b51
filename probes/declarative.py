"""Declarative checks: known IoT exposures written as data (probes/templates/*.yaml), Nuclei-like.

A template names one read-only request (HTTP GET/HEAD of a few paths, or a TCP banner read with
an optional fixed payload), matchers that recognise the exposure in the reply, and extractors
that lift facts (a firmware version) out of it. There is no regex: plain substrings, status
codes, JSON key paths and dotted-version comparisons are enough for these checks and cannot be
made to backtrack for ever by a hostile reply.

Catch-all servers (a 200 and the same page for every URL) would match nearly any path template,
so before each path the same matchers are run against a random path that cannot exist; when
that control matches too, the template cannot judge the server and the run is left out (with a
note). Requests are shared per service: thirty templates that read "/" cost one GET.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from probes.api import (
    Facts,
    NotApplicable,
    Observation,
    Probe,
    ProbeContext,
    ProbeMetadata,
    Target,
)
from profiles.yamldata import DataFileError, parse_yaml, read_text, validate
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.net import REDACTED, escape_bytes

MAX_BODY = 64 * 1024  # bytes of an HTTP body kept for matching
MAX_BANNER = 4096  # bytes of a TCP reply kept for matching
MAX_WAIT = 5.0  # seconds a TCP template may wait for its reply
MAX_TEMPLATE_BYTES = 64 * 1024
MAX_TEMPLATES_PER_DIR = 500
MAX_JSON_DEPTH_ERRORS = (ValueError, RecursionError)  # hostile JSON: bad or absurdly nested
CONTROL_PREFIX = "/iotbaseline-control-"
ID = r"^[a-z0-9]+(-[a-z0-9]+)*$"
HEADER_NAME = r"^[A-Za-z0-9-]{1,64}$"
FORBIDDEN_HEADERS = {"content-length", "transfer-encoding", "host", "connection"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ------------------------------------------------------------------ matchers


class _Matcher(_Strict):
    negative: bool = False  # the matcher holds when its test does NOT


class StatusMatcher(_Matcher):
    """The HTTP status is one of ``status``."""

    type: Literal["status"]
    status: list[Annotated[int, Field(ge=100, le=599)]] = Field(min_length=1, max_length=16)


Part = Literal["body", "header", "all", "banner"]


class _PartMatcher(_Matcher):
    """Reads one part of the reply: the body, the headers (one, if ``header`` names it), both
    (``all``), or a TCP banner."""

    part: Part = "body"
    header: str | None = Field(default=None, pattern=HEADER_NAME)
    case_insensitive: bool = Field(default=False, alias="case-insensitive")

    @model_validator(mode="after")
    def _header_only_with_part_header(self) -> _PartMatcher:
        if self.header is not None and self.part != "header":
            raise ValueError("'header' narrows part: header only")
        return self


class WordMatcher(_PartMatcher):
    """Plain substrings: every one (``condition: and``) or any one (``or``)."""

    type: Literal["word"]
    words: list[Annotated[str, Field(min_length=1, max_length=200)]] = \
        Field(min_length=1, max_length=16)
    condition: Literal["and", "or"] = "or"


class VersionMatcher(_PartMatcher):
    """The dotted number right after ``after`` ("RomPager/", "dropbear_") is below ``below``
    (and at least ``at-least``): an old release named in a banner."""

    type: Literal["version"]
    after: str = Field(min_length=1, max_length=64)
    below: str = Field(pattern=r"^\d{1,6}(\.\d{1,6}){0,4}$")
    at_least: str | None = Field(default=None, alias="at-least",
                                 pattern=r"^\d{1,6}(\.\d{1,6}){0,4}$")


class JsonCondition(_Strict):
    path: str = Field(min_length=1, max_length=200,
                      pattern=r"^[A-Za-z0-9_@$-]+(\.[A-Za-z0-9_@$-]+){0,15}$")
    equals: str | int | bool | None = None  # unset: the key only has to be present


class JsonMatcher(_Matcher):
    """The body is JSON with every path present (and equal to ``equals`` where given).

    A path is dot-separated keys; a number indexes a list ("0.step")."""

    type: Literal["json"]
    all: list[JsonCondition] = Field(min_length=1, max_length=16)


Matcher = Annotated[StatusMatcher | WordMatcher | VersionMatcher | JsonMatcher,
                    Field(discriminator="type")]


class Extractor(_Strict):
    """A fact for the finding: the text between ``after`` and ``until`` in a part, or a JSON
    value at ``json``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    part: Part = "body"
    header: str | None = Field(default=None, pattern=HEADER_NAME)
    after: str | None = Field(default=None, min_length=1, max_length=64)
    until: list[Annotated[str, Field(min_length=1, max_length=8)]] = \
        Field(default_factory=lambda: ["\n", "\r", "<", "\"", "&"], max_length=8)
    json_path: str | None = Field(default=None, alias="json",
                                  pattern=r"^[A-Za-z0-9_@$-]+(\.[A-Za-z0-9_@$-]+){0,15}$")
    max_length: int = Field(default=64, ge=1, le=256, alias="max-length")

    @model_validator(mode="after")
    def _one_source(self) -> Extractor:
        if (self.after is None) == (self.json_path is None):
            raise ValueError("give exactly one of 'after' and 'json'")
        return self


class _Exchange(_Strict):
    matchers_condition: Literal["and", "or"] = Field(default="and", alias="matchers-condition")
    matchers: list[Matcher] = Field(min_length=1, max_length=16)
    extractors: list[Extractor] = Field(default_factory=list, max_length=8)
    redact: list[Extractor] = Field(default_factory=list, max_length=4)  # secrets in the reply


class HttpSpec(_Exchange):
    """GET or HEAD of each path in turn until one matches; redirects are not followed unless
    asked (a login redirect is not the exposed page)."""

    method: Literal["GET", "HEAD"] = "GET"
    paths: list[Annotated[str, Field(pattern=r"^/[\x21-\x7e]{0,255}$")]] = \
        Field(min_length=1, max_length=8)
    headers: dict[str, Annotated[str, Field(max_length=256, pattern=r"^[^\r\n]*$")]] = \
        Field(default_factory=dict, max_length=8)
    redirects: bool = False
    control: bool = True  # run the matchers against a random path first

    @field_validator("headers")
    @classmethod
    def _safe_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if not re.match(HEADER_NAME, name):
                raise ValueError(f"bad header name {name!r}")
            if name.lower() in FORBIDDEN_HEADERS:
                raise ValueError(f"header {name!r} is set by the scanner")
        return headers

    @model_validator(mode="after")
    def _parts(self) -> HttpSpec:
        if any(getattr(item, "part", "body") == "banner"
               for item in (*self.matchers, *self.extractors, *self.redact)):
            raise ValueError("part: banner is for tcp templates")
        if not self.control and any(
                getattr(matcher, "part", "header") != "header" for matcher in self.matchers):
            raise ValueError("control: false is only for header (banner) matchers: a page "
                             "matcher must be checked against a catch-all server")
        return self


class TcpSpec(_Exchange):
    """Connect, send ``send`` (may be empty: the server speaks first), read up to ``read``
    bytes for up to ``wait`` seconds (a greeting ends at its first line)."""

    send: str = Field(default="", max_length=512)
    read: int = Field(default=1024, ge=1, le=MAX_BANNER)
    wait: float = Field(default=3.0, gt=0, le=MAX_WAIT)

    @model_validator(mode="after")
    def _parts(self) -> TcpSpec:
        if any(getattr(item, "part", "banner") != "banner" or isinstance(item, StatusMatcher)
               for item in (*self.matchers, *self.extractors, *self.redact)):
            raise ValueError("tcp templates read only part: banner")
        return self


class Template(_Strict):
    id: str = Field(pattern=ID, max_length=64)
    title: str = Field(min_length=5, max_length=120)  # the secure condition
    description: str = Field(min_length=20, max_length=1200)
    finding: str = Field(min_length=20, max_length=300)  # the failed condition, one sentence
    severity: Severity
    confidence: Confidence = Confidence.CONFIRMED
    intrusiveness: Literal["safe", "intrusive"] = "safe"
    protocols: list[str] = Field(default_factory=list, max_length=8)
    categories: list[Annotated[str, Field(pattern=ID)]] = Field(default_factory=list,
                                                                 max_length=8)
    references: list[Annotated[str, Field(pattern=r"^https?://\S+$")]] = \
        Field(min_length=1, max_length=8)
    remediation: str = Field(min_length=20, max_length=1200)
    http: HttpSpec | None = None
    tcp: TcpSpec | None = None

    @model_validator(mode="after")
    def _one_request(self) -> Template:
        if (self.http is None) == (self.tcp is None):
            raise ValueError("give exactly one of 'http' and 'tcp'")
        if self.tcp is not None and not self.protocols:
            raise ValueError("a tcp template names the protocols it reads (ssh, ftp, …)")
        return self

    @property
    def spec(self) -> HttpSpec | TcpSpec:
        return cast(HttpSpec | TcpSpec, self.http or self.tcp)

    def metadata(self) -> ProbeMetadata:
        return ProbeMetadata(
            check_id=self.id, title=self.title, description=self.description.strip(),
            severity=self.severity,
            intrusiveness=Intrusiveness.SAFE if self.intrusiveness == "safe"
            else Intrusiveness.INTRUSIVE,
            protocols=tuple(self.protocols or ["http"]), remediation=self.remediation.strip(),
            references=tuple(self.references), categories=tuple(self.categories))


# ------------------------------------------------------------------ matching (pure)


@dataclass(frozen=True)
class Reply:
    """What a request got back, as the matchers see it (a TCP banner has no status)."""

    status: int | None
    headers: Mapping[str, str]
    body: bytes

    def part(self, part: Part, header: str | None = None) -> str:
        if part in ("body", "banner"):
            return self.body.decode("utf-8", "replace")
        if header is not None:
            return self.headers.get(header.lower(), "")
        head = "\n".join(f"{name}: {value}" for name, value in self.headers.items())
        return head if part == "header" else f"{head}\n\n{self.body.decode('utf-8', 'replace')}"


def parse_version(text: str) -> tuple[int, ...] | None:
    """The dotted number text starts with ("2015.71" of "2015.71 rest"), or None."""
    numbers = []
    for piece in text[:40].split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits or len(digits) > 6:
            break
        numbers.append(int(digits))
        if len(digits) < len(piece):
            break
    return tuple(numbers) if numbers else None


def _json_value(document: Any, path: str) -> tuple[bool, Any]:
    """(found, value) for a dot path; numbers index lists."""
    node = document
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False, None
    return True, node


def _json_document(reply: Reply) -> tuple[bool, Any]:
    try:
        return True, json.loads(reply.body)
    except MAX_JSON_DEPTH_ERRORS:
        return False, None


def _test(matcher: StatusMatcher | WordMatcher | VersionMatcher | JsonMatcher,
          reply: Reply) -> bool:
    if isinstance(matcher, StatusMatcher):
        return reply.status in matcher.status
    if isinstance(matcher, JsonMatcher):
        parsed, document = _json_document(reply)
        if not parsed:
            return False
        for condition in matcher.all:
            found, value = _json_value(document, condition.path)
            wanted = "equals" in condition.model_fields_set
            if not found or (wanted and (value != condition.equals
                                         or type(value) is not type(condition.equals))):
                return False
        return True
    text = reply.part(matcher.part, matcher.header)
    if isinstance(matcher, WordMatcher):
        words = matcher.words
        if matcher.case_insensitive:
            text, words = text.lower(), [word.lower() for word in words]
        hits = [word in text for word in words]
        return all(hits) if matcher.condition == "and" else any(hits)
    haystack = text.lower() if matcher.case_insensitive else text
    marker = matcher.after.lower() if matcher.case_insensitive else matcher.after
    at = haystack.find(marker)
    version = parse_version(text[at + len(marker):]) if at >= 0 else None
    if version is None:
        return False
    below = parse_version(matcher.below)
    floor = parse_version(matcher.at_least) if matcher.at_least else None
    return below is not None and version < below and (floor is None or version >= floor)


def matches(spec: HttpSpec | TcpSpec, reply: Reply) -> bool:
    """The template's verdict on one reply: its matchers, each negated if asked, combined."""
    results = [_test(matcher, reply) != matcher.negative for matcher in spec.matchers]
    return all(results) if spec.matchers_condition == "and" else any(results)


def extract(extractors: Sequence[Extractor], reply: Reply) -> dict[str, str]:
    """Each extractor's value, when the reply has it, capped in length."""
    found: dict[str, str] = {}
    for extractor in extractors:
        if extractor.json_path is not None:
            parsed, document = _json_document(reply)
            present, value = _json_value(document, extractor.json_path) if parsed \
                else (False, None)
            if present and isinstance(value, str | int | float | bool):
                found[extractor.name] = str(value)[:extractor.max_length]
            continue
        text = reply.part(extractor.part, extractor.header)
        marker = cast(str, extractor.after)
        at = text.find(marker)
        if at < 0:
            continue
        rest = text[at + len(marker):at + len(marker) + extractor.max_length]
        for stop in extractor.until:
            rest = rest.split(stop, 1)[0]
        if rest.strip():
            found[extractor.name] = rest.strip()
    return found


# ------------------------------------------------------------------ collection


def _control_path(path: str) -> str:
    """A path no server has, with the extension of ``path`` (a server may answer by suffix)."""
    last = path.split("?", 1)[0].rsplit("/", 1)[-1]
    suffix = last.rsplit(".", 1)[-1] if "." in last else ""
    suffix = suffix if suffix.isalnum() and len(suffix) <= 8 else ""
    return f"{CONTROL_PREFIX}{secrets.token_hex(8)}" + (f".{suffix}" if suffix else "")


async def _http_reply(ctx: ProbeContext, method: str, path: str, headers: Mapping[str, str],
                      redirects: bool) -> Reply:
    response = await ctx.http(method, path, headers=headers, follow_redirects=redirects,
                              max_body=MAX_BODY)
    return Reply(response.status, dict(response.headers), response.body)


async def _shared_reply(ctx: ProbeContext, spec: HttpSpec | TcpSpec, key: str,
                        fetch: Callable[[ProbeContext], Awaitable[Reply]]) -> Reply:
    """One exchange per service for every template that asks for the same one.

    A template that names secrets (``redact``) gets its own collection, redacted before any
    check copies its exchanges: a shared copy made earlier or by another check would otherwise
    keep the password the finding proves exposed."""
    if spec.redact:
        key += f" redacted for {spec.model_dump_json()}"

    async def collect(shared_ctx: ProbeContext) -> Reply:
        reply = await fetch(shared_ctx)
        if spec.redact and matches(spec, reply):
            _redact_recorded(shared_ctx, list(extract(spec.redact, reply).values()))
        return reply

    return await ctx.shared(key, collect)


async def _shared_http(ctx: ProbeContext, spec: HttpSpec, path: str) -> Reply:
    headers = dict(sorted(spec.headers.items()))
    key = f"declarative-http {spec.method} {path} {json.dumps(headers)} {spec.redirects}"
    return await _shared_reply(ctx, spec, key, lambda shared_ctx: _http_reply(
        shared_ctx, spec.method, path, headers, spec.redirects))


async def _shared_control(ctx: ProbeContext, spec: HttpSpec, path: str) -> tuple[str, Reply]:
    """The catch-all control, made once per service, method and suffix."""
    sample = _control_path(path)
    suffix = sample.split(".", 1)[1] if "." in sample else ""
    key = f"declarative-control {spec.method} .{suffix}"

    async def collect(shared_ctx: ProbeContext) -> tuple[str, Reply]:
        return sample, await _http_reply(shared_ctx, spec.method, sample, {}, False)

    return await ctx.shared(key, collect)


async def _tcp_reply(ctx: ProbeContext, spec: TcpSpec) -> Reply:
    wait = min(spec.wait, ctx.network.limits.read_timeout)
    async with await ctx.connect() as conn:
        if spec.send:
            await conn.send(spec.send.encode("utf-8"))
        text = await conn.recv_until(lambda data: b"\n" in data and not spec.send,
                                     max_bytes=spec.read, timeout=wait)
    if not text:
        raise ConnectionError(f"no reply within {wait:.1f} s: nothing to judge")
    return Reply(None, {}, text[:spec.read])


async def _shared_tcp(ctx: ProbeContext, spec: TcpSpec) -> Reply:
    key = f"declarative-tcp {spec.send!r} {spec.read} {spec.wait}"
    return await _shared_reply(ctx, spec, key, lambda shared_ctx: _tcp_reply(shared_ctx, spec))


def _redact_recorded(ctx: ProbeContext, values: Sequence[str]) -> None:
    """Secrets the reply itself holds (a password in a leaked config) leave the evidence: the
    finding proves they are exposed without repeating them."""
    if ctx.settings.show_secrets:
        return
    for value in values:
        ctx.secret(value)
        escaped = escape_bytes(value.encode("utf-8"))
        ctx.transcript.exchanges[:] = [
            exchange.model_copy(update={"data": exchange.data.replace(escaped, REDACTED)})
            if escaped in exchange.data else exchange for exchange in ctx.transcript.exchanges]


def _judge(spec: HttpSpec | TcpSpec, reply: Reply) -> dict[str, str] | None:
    """The extracted facts when the reply matches, else None."""
    return extract(spec.extractors, reply) if matches(spec, reply) else None


class TemplateCheck(Probe):
    """Runs one template; the registry makes a subclass per template (metadata is per class)."""

    template: ClassVar[Template]

    async def collect(self, ctx: ProbeContext) -> Facts:
        spec = self.template.spec
        if isinstance(spec, TcpSpec):
            reply = await _shared_tcp(ctx, spec)
            extracted = _judge(spec, reply)
            return {"tried": [{"request": "banner" + (" after " + repr(spec.send)
                                                      if spec.send else ""),
                               "verdict": "match" if extracted is not None else "no match",
                               "extracted": extracted or {}}]}
        tried: list[dict[str, Any]] = []
        for path in spec.paths:
            if ctx.time_left() <= 0:
                break
            if spec.control:
                control_path, control = await _shared_control(ctx, spec, path)
                if matches(spec, control):
                    ctx.note(f"{spec.method} {control_path} (a path that cannot exist) matched "
                             f"too: a catch-all server; {path} is not judged")
                    tried.append({"request": f"{spec.method} {path}", "verdict": "catch-all",
                                  "control": f"{control_path}: HTTP {control.status}"})
                    continue
            reply = await _shared_http(ctx, spec, path)
            extracted = _judge(spec, reply)
            tried.append({"request": f"{spec.method} {path}", "status": reply.status,
                          "verdict": "match" if extracted is not None else "no match",
                          "extracted": extracted or {}})
            if extracted is not None:
                break
        if tried and all(entry["verdict"] == "catch-all" for entry in tried):
            raise NotApplicable("every path's random-path control matched: a catch-all server")
        return {"tried": tried}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        matched = next((entry for entry in facts.get("tried", [])
                        if entry.get("verdict") == "match"), None)
        if matched is None:
            return []
        extracted: dict[str, str] = matched.get("extracted") or {}
        shown = ", ".join(f"{name} {value}" for name, value in extracted.items())
        return [Observation(
            summary=f"{self.template.finding} ({matched['request']} on port {target.port}"
                    f"{'; ' + shown if shown else ''}).",
            confidence=self.template.confidence, key=str(matched["request"]),
            facts={"request": str(matched["request"]),
                   **({"status": str(matched["status"])} if matched.get("status") else {}),
                   **extracted})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {str(entry["request"])[:64]: str(entry.get("verdict"))
                + (f" (HTTP {entry['status']})" if entry.get("status") else "")
                for entry in facts.get("tried", [])}


# ------------------------------------------------------------------ loading


def load_template(text: str, where: str) -> Template:
    """One template from YAML text; errors name the file, line and field."""
    template = validate(Template, parse_yaml(text, where), text, where)
    stem = where.rsplit("/", 1)[-1].removesuffix(".yaml")
    if stem != template.id:
        raise DataFileError(f"{where}: file name must be the template id ({template.id}.yaml)")
    return template


def check_class(template: Template) -> type[TemplateCheck]:
    """The probe class for a template: metadata is class data in the plugin contract."""
    name = "Template_" + template.id.replace("-", "_")
    return cast(type[TemplateCheck], type(name, (TemplateCheck,), {
        "metadata": template.metadata(), "template": template, "__module__": __name__}))


def _from_traversable(resource: Traversable, where: str) -> type[Probe]:
    data = resource.read_bytes()
    if len(data) > MAX_TEMPLATE_BYTES:
        raise DataFileError(f"{where}: larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataFileError(f"{where}: not UTF-8 text") from None
    return check_class(load_template(text, where))


def _from_path(path: Path) -> type[Probe]:
    return check_class(load_template(read_text(path, MAX_TEMPLATE_BYTES), str(path)))


# (where it comes from, a loader of the Probe class): the registry calls the loader, so one
# broken template is one load error, not a lost provider.
ProvidedProbe = tuple[str, Callable[[], type[Probe]]]


def builtin_templates() -> Iterator[ProvidedProbe]:
    """The shipped templates, found through the package (the entry point's provider)."""
    folder = files("probes").joinpath("templates")
    for resource in sorted(folder.iterdir(), key=lambda item: item.name):
        if resource.name.endswith(".yaml"):
            where = f"probes/templates/{resource.name}"
            yield where, partial(_from_traversable, resource, where)


def templates_in(folder: Path) -> Iterator[ProvidedProbe]:
    """A user's template folder: every *.yaml in it (not recursive), at most a few hundred."""
    if not folder.is_dir():
        raise DataFileError(f"{folder}: not a folder of templates")
    paths = sorted(folder.glob("*.yaml"))
    if len(paths) > MAX_TEMPLATES_PER_DIR:
        raise DataFileError(f"{folder}: more than {MAX_TEMPLATES_PER_DIR} templates")
    for path in paths:
        yield str(path), partial(_from_path, path)
