"""HTTP form logins with default credentials, driven by device profiles (data, not code).

Which page, which fields and what success looks like differ per vendor, so they come from
``profiles/devices/*.yaml``; this probe only knows how to submit a form and judge the reply
by the profile's markers. The shared credential flow (``probes.authflow``) supplies the
budget, spacing, lockout detection and the negative control that turns an accept-everything
form into "authentication not enforced" rather than a default credential.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

from probes.api import Facts, Observation, ProbeContext, ProbeMetadata, Target
from probes.authflow import Attempt, CredentialProbe, Outcome, evaluate_attempts
from profiles.devices import (
    DeviceProfile,
    LoginForm,
    Markers,
    load_device_profiles,
    matching_profiles,
    service_matches,
)
from scanner.http import HttpResponse
from scanner.models import Intrusiveness, Severity

OWASP_AUTH = "https://owasp.org/www-project-web-security-testing-guide/latest/4-Web_Application_" \
             "Security_Testing/04-Authentication_Testing/02-Testing_for_Default_Credentials"
ETSI_303645 = "https://www.etsi.org/deliver/etsi_en/303600_303699/303645/02.01.01_60/" \
              "en_303645v020101p.pdf"
THROTTLED = (429, 503)  # the device is refusing us: a lockout sign for the shared flow
SCAN_BYTES = 256 * 1024  # how much of a page is searched for markers and hidden inputs
MAX_COOKIES = 16
# Bounded patterns (no nested quantifiers): an <input …> tag, then its attributes.
_INPUT_TAG = re.compile(rb"<input\b[^>]{0,4096}>", re.IGNORECASE)
_ATTRIBUTE = re.compile(rb"""([A-Za-z_:][-A-Za-z0-9_:.]{0,63})\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""")
# A cookie starts the Set-Cookie value or follows a comma (repeated headers are joined with
# ", "); an Expires date's comma is followed by a day number and a space, never by "name=".
_SET_COOKIE = re.compile(r"(?:^|,)\s*([!#$%&'*+.^_`|~0-9A-Za-z-]{1,128})=([^;,]{0,4096})")


# --- pure helpers (unit-tested without a network) ------------------------------------------

def set_cookies(header: str) -> dict[str, str]:
    """Cookie name -> value from a (joined) Set-Cookie header; cleared cookies are left out."""
    found: dict[str, str] = {}
    for name, value in _SET_COOKIE.findall(header):
        value = value.strip().strip('"')
        if value and value.lower() != "deleted" and len(found) < MAX_COOKIES:
            found[name] = value
    return found


def hidden_value(body: bytes, name: str) -> str | None:
    """The value of the first <input> named ``name`` in ``body``, or None."""
    wanted = name.encode("utf-8", "replace")
    for tag in _INPUT_TAG.finditer(body[:SCAN_BYTES]):
        attributes = {key.lower(): value for key, value in _ATTRIBUTE.findall(tag.group(0))}
        raw = attributes.get(b"name", b"").strip(b"\"'")
        if raw == wanted:
            value = attributes.get(b"value", b"").strip(b"\"'")
            return html.unescape(value.decode("utf-8", "replace"))[:1024]
    return None


def _holds(markers: Markers, response: HttpResponse, body: str) -> tuple[bool, list[str]]:
    """Whether every set marker holds, and the markers that did (for the evidence)."""
    seen: list[str] = []
    if markers.status:
        if response.status not in markers.status:
            return False, seen
        seen.append(f"status {response.status}")
    for text in markers.contains:
        if text.lower() not in body:
            return False, seen
        seen.append(f"body contains {text!r}")
    for text in markers.not_contains:
        if text.lower() in body:
            return False, seen
        seen.append(f"body lacks {text!r}")
    location = response.header("location").lower()
    for text in markers.redirect_contains:
        if text.lower() not in location:
            return False, seen
        seen.append(f"redirect to …{text}…")
    if markers.set_cookie:
        cookies = {name.lower() for name in set_cookies(response.header("set-cookie"))}
        named = [name for name in markers.set_cookie if name.lower() in cookies]
        if not named:
            return False, seen
        seen.append(f"cookie {named[0]} set")
    return True, seen


def judge(form: LoginForm, response: HttpResponse) -> Attempt:
    """SUCCESS when every success marker holds and the failure markers (if any) do not."""
    if response.status in THROTTLED:
        raise ConnectionError(f"HTTP {response.status}: the device is throttling logins")
    if response.status == 404:
        return Attempt(Outcome.NOT_OFFERED, f"HTTP 404 for {form.action.split('?')[0]}: "
                                            "this device does not have the profile's form")
    body = response.body[:SCAN_BYTES].decode("utf-8", "replace").lower()
    failed, why_failed = _holds(form.failure, response, body) if form.failure.is_set() \
        else (False, [])
    if failed:
        return Attempt(Outcome.FAILURE, f"HTTP {response.status}; refused ("
                                        f"{', '.join(why_failed)})")
    succeeded, why = _holds(form.success, response, body)
    if succeeded:
        return Attempt(Outcome.SUCCESS, f"HTTP {response.status}; {', '.join(why)}")
    return Attempt(Outcome.FAILURE, f"HTTP {response.status}; success markers not seen")


def form_fields(form: LoginForm, username: str, password: str,
                token: str | None) -> list[tuple[str, str]]:
    fields = list(form.extra_fields.items())
    if form.csrf_field is not None and token is not None:
        fields.append((form.csrf_field, token))
    if form.username_field is not None:
        fields.append((form.username_field, username))
    fields.append((form.password_field, password))
    return fields


# --- I/O -----------------------------------------------------------------------------------

async def submit(ctx: ProbeContext, form: LoginForm, username: str,
                 password: str) -> Attempt:
    """One login through ``form``: load its page (cookies, CSRF token), submit, judge."""
    encoded = {quote_plus(password), quote(password, safe="")} - {password}
    for value in encoded:
        ctx.secret(value)
    # The transcript redacts secrets in endpoints too: GET logins carry them in the URL.
    cookies: dict[str, str] = {}
    token: str | None = None
    if form.page is not None:
        page = await ctx.http("GET", form.page)
        if page.status in THROTTLED:
            raise ConnectionError(f"HTTP {page.status} for the login page: throttled")
        if page.status == 404:
            return Attempt(Outcome.NOT_OFFERED, f"HTTP 404 for the login page {form.page}")
        cookies = set_cookies(page.header("set-cookie"))
        if form.csrf_field is not None:
            token = hidden_value(page.body, form.csrf_field)
            if token is None:
                return Attempt(Outcome.NOT_OFFERED, f"the login page has no "
                                                    f"{form.csrf_field!r} field")
    body = urlencode(form_fields(form, username, password, token))
    headers: dict[str, str] = dict(form.headers)
    if cookies:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    if form.method == "GET":
        path = f"{form.action}{'&' if '?' in form.action else '?'}{body}"
        response = await ctx.http("GET", path, headers=headers, follow_redirects=False)
    else:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        response = await ctx.http("POST", form.action, headers=headers,
                                   data=body.encode("ascii"), follow_redirects=False)
    return judge(form, response)


class HttpFormDefaultCredentials(CredentialProbe):
    credential_protocol = "http"
    metadata = ProbeMetadata(
        check_id="http-form-default-credentials",
        title="The web login form does not accept default credentials",
        description="Most IoT web interfaces log in through an HTML form or a JSON login API; "
                    "a factory password published in manuals and attack tools lets anyone on "
                    "the network take over the device. The form, its fields and what success "
                    "looks like come from the matching device profile.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.AUTH_ATTEMPT,
        protocols=("http",),
        remediation="Force a unique password at first setup, remove factory defaults, and "
                    "keep the web interface off untrusted networks.",
        references=(OWASP_AUTH, ETSI_303645),
        categories=("default-credentials",),
    )

    def __init__(self, profiles: Sequence[DeviceProfile] | None = None) -> None:
        # None: the built-in device profiles (entry points instantiate without arguments).
        self._profiles = tuple(profiles) if profiles is not None else None

    @property
    def profiles(self) -> tuple[DeviceProfile, ...]:
        return self._profiles if self._profiles is not None else load_device_profiles()

    def choose(self, target: Target) -> tuple[DeviceProfile, int, LoginForm] | None:
        """The login form to use: from profiles matching this service's own title or Server
        header first, then from profiles matching the device; the first form of the first."""
        matched = [p for p in matching_profiles(self.profiles, target.device) if p.login_forms]
        matched.sort(key=lambda profile: not service_matches(profile, target.service))
        if not matched:
            return None
        return matched[0], 0, matched[0].login_forms[0]

    def applies_to(self, target: Target) -> bool:
        # Basic/Digest-protected interfaces belong to http-default-credentials.
        return super().applies_to(target) and \
            target.service.details.get("auth") not in ("basic", "digest") and \
            self.choose(target) is not None

    async def collect(self, ctx: ProbeContext) -> Facts:
        chosen = self.choose(ctx.target)
        if chosen is None:
            return {"candidates": 0, "attempts": [], "success": None, "lockout": None,
                    "control": None}
        profile, index, form = chosen
        ctx.note(f"device profile {profile.id}, login form {index + 1}: {form.method} "
                 f"{form.action.split('?')[0]} (source: {form.source[:200]})")
        facts = await super().collect(ctx)
        facts.update(profile=profile.id, form_index=index,
                     form=f"{form.method} {form.action.split('?')[0]}",
                     form_source=form.source)
        return facts

    async def attempt(self, ctx: ProbeContext, username: str, password: str) -> Attempt:
        chosen = self.choose(ctx.target)
        if chosen is None:
            return Attempt(Outcome.NOT_OFFERED, "no device profile with a login form matches")
        return await submit(ctx, chosen[2], username, password)

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        extra: dict[str, Any] = {"device_profile": facts.get("profile"),
                                 "login_form": facts.get("form"),
                                 "form_source": facts.get("form_source")}
        shown = {key: str(value) for key, value in extra.items() if value}
        return [replace(observation, facts={**observation.facts, **shown})
                for observation in evaluate_attempts(target, facts)]

    def summarize(self, facts: Facts) -> dict[str, str]:
        summary = super().summarize(facts)
        if facts.get("profile"):
            summary["form"] = f"{facts['profile']}: {facts.get('form', '')}"
        if facts.get("password_login"):
            summary["form_offered"] = str(facts["password_login"])
        return summary
