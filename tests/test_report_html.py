"""The HTML report: golden output, hostile device strings rendered inert, a self-contained page
(CSP, no external loads, no script), and a real headless-Chromium screenshot and PDF print.

Regenerate the golden file after an intended change with ``UPDATE_GOLDEN=1 pytest
tests/test_report_html.py``; set ``REPORT_SCREENSHOT=/path.png`` to keep the screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

import reports.verdicts
from reports.compliance import load_frameworks
from reports.renderers.html import EVIDENCE_LIMIT, RENDERER, cell, clip, neutralise, render
from tests.report_fixtures import HOSTILE, hostile_result, sample_result

GOLDEN = Path(__file__).parent / "golden" / "report-sample.html"
CSP = ('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
       "style-src 'unsafe-inline'; img-src data:\">")
ISO = "iso-iec-27402-2023"
ISO_CLAUSES = ["5.1.1", "5.1.2", "5.1.3", "5.2.1", "5.2.2", "5.2.3", "5.2.4", "5.2.5", "5.2.6",
               "5.2.7", "5.2.8"]
CHROMIUM = Path("/usr/bin/chromium")
FAIL_RED = bytes.fromhex("b42318")  # the FAIL cell background in the template


@pytest.fixture(scope="module")
def sample_html() -> str:
    return render(sample_result())


@pytest.fixture(scope="module")
def hostile_html() -> str:
    return render(hostile_result())


class _Page(HTMLParser):
    """Every start tag with its attributes, the text of <style>, and the matrix rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self.matrix_rows: list[list[str]] = []
        self._in_style = False
        self._matrix_depth = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self._in_style = tag == "style"
        if tag == "table" and "matrix" in (attributes.get("class") or "").split():
            self._matrix_depth = 1
        elif self._matrix_depth and tag == "tr":
            self.matrix_rows.append([])
        elif self._matrix_depth and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        elif self._matrix_depth and tag in ("td", "th") and self._cell is not None:
            self.matrix_rows[-1].append(" ".join(" ".join(self._cell).split()))
            self._cell = None
        elif self._matrix_depth and tag == "table":
            self._matrix_depth = 0

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _text(html: str) -> str:
    """The visible text of the body, whitespace collapsed (tags dropped, entities decoded)."""
    parser = _Text()
    parser.feed(html[html.index("<body>"):])
    parser.close()
    return " ".join("".join(parser.parts).split())


# -- golden and structure

def test_golden_sample(sample_html: str) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(sample_html, encoding="utf-8")
    assert GOLDEN.exists(), "no golden file: run with UPDATE_GOLDEN=1 once"
    assert sample_html == GOLDEN.read_text(encoding="utf-8"), \
        "HTML report changed: review the diff, then regenerate with UPDATE_GOLDEN=1"


def test_render_is_deterministic(sample_html: str) -> None:
    assert render(sample_result()) == sample_html


def test_renderer_entry() -> None:
    assert (RENDERER.name, RENDERER.filename, RENDERER.render) == ("html", "report.html", render)


def test_sections_in_order(sample_html: str) -> None:
    ids = ["top", "summary", "matrix", "inventory", "findings", "clauses", "errors", "method"]
    positions = [sample_html.index(f'id="{section}"') for section in ids]
    assert positions == sorted(positions)
    assert "IoT baseline assessment — ISO/IEC 27402:2023" in sample_html
    assert 'class="incomplete-banner"' not in sample_html


def test_header_and_summary(sample_html: str) -> None:
    text = _text(sample_html)
    for expected in ["00000000-0000-4000-8000-000000000001", "192.0.2.0/28", "192.0.2.9",
                     "2026-11-29 09:00:00 UTC", "2026-11-29 09:01:35 UTC", "COMPLETE",
                     "iotbaseline 0.1.0", "Device verdicts"]:
        assert expected in text, expected
    tiles = dict((label, int(count)) for count, label in re.findall(
        r'<span class="n">(\d+)</span><span class="l">([^<]+)</span>', sample_html))
    assert tiles == {"critical": 1, "high": 1, "medium": 0, "low": 0, "info": 0,
                     "devices scanned": 2, "findings": 2, "probe errors": 1, "check runs": 4}


def test_incomplete_banner() -> None:
    result = sample_result()
    meta = result.meta.model_copy(update={
        "complete": False, "stop_reason": "interrupted", "finished_at": None,
        "interrupted_reason": "SIGINT after 95 s"})
    html = render(result.model_copy(update={"meta": meta}))
    assert 'class="incomplete-banner"' in html
    text = _text(html)
    assert "INCOMPLETE SCAN" in text and "interrupted" in text and "SIGINT after 95 s" in text


def test_matrix_has_every_iso_clause_and_verdict_words(sample_html: str) -> None:
    rows = _parse(sample_html).matrix_rows
    header, body = rows[0], rows[1:]
    assert header[1].startswith("192.0.2.5") and header[2].startswith("192.0.2.7")
    by_clause = {row[0].split()[0]: row[1:] for row in body}
    framework = next(f for f in load_frameworks() if f.id == ISO)
    assert [c.id for c in framework.clauses] == ISO_CLAUSES
    assert list(by_clause)[:len(ISO_CLAUSES)] == ISO_CLAUSES
    expected = {(v.clause, v.device): v.verdict for v in sample_result().verdicts}
    words = {"FAIL", "PASS", "INCONCLUSIVE", "MANUAL", "NOT APPLICABLE"}
    for clause in ISO_CLAUSES:
        for index, device in enumerate(["192.0.2.5", "192.0.2.7"]):
            shown = by_clause[clause][index].removesuffix(" †")
            assert shown in words
            assert shown == expected[(clause, device)].value.replace("_", " ")
    assert by_clause["5.1.3"][0] == "FAIL †"  # answered by the assessor
    assert by_clause["Device"] == ["FAIL", "INCONCLUSIVE"]  # the device verdict row


def test_findings_grouped_and_ordered(sample_html: str) -> None:
    critical = sample_html.index('id="f-1"')
    assert sample_html.index("telnet-default-credentials", critical) < \
        sample_html.index('id="f-2"')
    assert sample_html.index(">CRITICAL<") < sample_html.index(">HIGH<", critical)
    assert '<a class="ref" href="https://www.rfc-editor.org/rfc/rfc854" ' \
           'rel="noreferrer noopener">' in sample_html
    text = _text(sample_html)
    for expected in ["Change the default password.", "negative_control", "← received",
                     "→ sent", "tcp://192.0.2.5:23", "5.2.2, 5.2.5, 5.2.6"]:
        assert expected in text, expected


def test_clause_details_answers_and_questions(sample_html: str) -> None:
    text = _text(sample_html)
    assert "No disclosure policy is published." in text and "A. Assessor" in text
    iso = next(f for f in load_frameworks() if f.id == ISO)
    for clause in iso.clauses:  # 5.1.1 etc. are MANUAL on both devices: questions shown
        for question in clause.questions:
            assert " ".join(question.split()) in text, clause.id


def test_probe_errors_and_methodology(sample_html: str) -> None:
    text = _text(sample_html)
    assert "TimeoutError: probe budget of 30.0 s used up" in text
    assert "no counterexample found" in text
    assert "our own paraphrase" in text and "copyrighted" in text
    assert "ARP skipped: raw sockets need root or CAP_NET_RAW" in text
    for probe in sample_result().meta.probes:
        assert probe in text


def test_verdict_rules_copied_from_verdicts_module(sample_html: str) -> None:
    """The methodology repeats the rules of reports/verdicts.py word for word."""
    doc = reports.verdicts.__doc__ or ""
    rules = re.findall(r"^- (.+?)(?=^- |^\S|\Z)", doc.split("Rules", 1)[1], re.S | re.M)
    assert len(rules) == 4
    text = _text(sample_html).lower()
    for rule in rules:
        assert " ".join(rule.split()).lower() in text, rule


# -- hostile input

def test_hostile_has_no_script_or_raw_controls(hostile_html: str) -> None:
    assert "<script" not in hostile_html.lower()
    assert "<script>alert(1)</script>" not in hostile_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile_html
    for raw in ("\x1b", "\x00", "\x07", "\u202e", "\u202c", "\x9b"):
        assert raw not in hostile_html, repr(raw)
    controls = {c for c in hostile_html if (ord(c) < 0x20 and c not in "\n\t")
                or 0x7F <= ord(c) < 0xA0 or 0x202A <= ord(c) <= 0x202E
                or 0x2066 <= ord(c) <= 0x2069}
    assert not controls
    assert r"\x1b]0;pwned\x07\x1b[31mRED\x1b[0m" in hostile_html  # visible escapes
    assert r"\x00NUL" in hostile_html and r"\u202eevil\u202c" in hostile_html


def test_hostile_formula_text_is_escaped(hostile_html: str) -> None:
    assert "=cmd|&#39; /C calc&#39;!A0" in hostile_html
    assert "=HYPERLINK(&#34;http://x&#34;)" in hostile_html
    assert "+&lt;script&gt;" in hostile_html  # the manufacturer "+…" cell


def test_hostile_size_and_caps(hostile_html: str) -> None:
    assert len(hostile_html.encode("utf-8")) < 1_000_000
    longest_run = max(len(run) for run in re.findall("A+", hostile_html))
    assert longest_run <= EVIDENCE_LIMIT  # the 64 KiB banner is capped everywhere
    assert "more characters not shown" in hostile_html
    assert "overflow-wrap: anywhere" in hostile_html
    assert "<details><summary>Traceback</summary>" in hostile_html


@pytest.mark.parametrize("which", ["sample", "hostile"])
def test_self_contained(which: str, sample_html: str, hostile_html: str) -> None:
    html = sample_html if which == "sample" else hostile_html
    assert CSP in html and html.count("Content-Security-Policy") == 1
    page = _parse(html)
    references = {r for f in (sample_result() if which == "sample" else hostile_result()).findings
                  for r in f.references}
    for tag, attributes in page.tags:
        assert tag not in {"script", "link", "img", "iframe", "object", "embed", "form", "base",
                           "video", "audio", "source", "svg", "input", "button"}, tag
        assert not {"src", "srcset", "action", "formaction", "poster", "background", "style",
                    "data", "ping"} & set(attributes), (tag, attributes)
        assert not any(name.startswith("on") for name in attributes), (tag, attributes)
        if tag == "meta" and attributes.get("http-equiv"):
            assert attributes["http-equiv"] == "Content-Security-Policy"
        href = attributes.get("href")
        if href is not None and not href.startswith("#"):
            # only our own reference links leave the page, and without a referrer
            assert tag == "a" and href in references, href
            assert re.match(r"https?://", href) and "noreferrer" in (attributes["rel"] or "")
    styles = "".join(page.styles)
    assert "url(" not in styles and "@import" not in styles and "@font-face" not in styles


@pytest.mark.parametrize("which", ["sample", "hostile"])
def test_internal_links_resolve(which: str, sample_html: str, hostile_html: str) -> None:
    page = _parse(sample_html if which == "sample" else hostile_html)
    ids = [attributes["id"] for _, attributes in page.tags if attributes.get("id")]
    assert len(ids) == len(set(ids))
    targets = {(attributes["href"] or "")[1:] for tag, attributes in page.tags
               if (attributes.get("href") or "").startswith("#")}
    assert targets and targets <= set(ids), targets - set(ids)


def test_lone_surrogates_and_bidi_in_device_text() -> None:
    result = sample_result()
    device = result.devices[0].model_copy(update={
        "hostnames": ["a\ud800b\u2066c\u200fd"], "model": "\x9b31m" + "é" * 10})
    html = render(result.model_copy(update={"devices": [device, *result.devices[1:]]}))
    html.encode("utf-8")  # no lone surrogate left to break the file write
    assert r"a\ud800b\u2066c\u200fd" in html and r"\x9b31m" in html and "é" * 10 in html


def test_only_web_references_become_links() -> None:
    result = sample_result()
    finding = result.findings[0].model_copy(update={
        "references": ["javascript:alert(1)", 'https://x.example/a"b<c', "RFC 854"]})
    html = render(result.model_copy(update={"findings": [finding, *result.findings[1:]]}))
    assert 'href="javascript' not in html and "<li>javascript:alert(1)</li>" in html
    assert 'href="https://x.example/a&#34;b&lt;c" rel="noreferrer noopener"' in html
    assert "<li>RFC 854</li>" in html


def test_neutralise_clip_and_cell() -> None:
    assert neutralise("a\x1b[0m\x00\u202e\ud800\n\t") == r"a\x1b[0m\x00\u202e\ud800\x0a\x09"
    assert neutralise("l1\nl2\t\r", keep_lines=True) == "l1\nl2\t\\x0d"
    assert clip("ab\x1bcd", 4).text == "ab"  # never half an escape
    assert clip("ab\x1bcd", 6) == type(clip("", 1))(r"ab\x1b", 2)
    assert cell("x" * 200, 10) == "x" * 10 + "… [190 more characters not shown]"
    assert cell(HOSTILE, 1000).count("\\x1b") == 3


# -- a real browser

def _chromium(tmp_path: Path, *arguments: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (Debian package: chromium)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars", *arguments],
        check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _add_rows(a: bytes, b: bytes) -> bytes:
    """Bytewise (a + b) mod 256 in one go, with big-integer arithmetic."""
    low, high = int.from_bytes(b"\x7f" * len(a), "big"), int.from_bytes(b"\x80" * len(a), "big")
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(len(a), "big")


def _decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and pixel rows of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, header = 8, [], b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * bpp
    rows, previous = [], bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
        if kind == 0:
            row = line
        elif kind == 2:
            row = _add_rows(line, previous)
        else:
            out = bytearray(line)
            for i in range(stride):
                left = out[i - bpp] if i >= bpp else 0
                up, corner = previous[i], (previous[i - bpp] if i >= bpp else 0)
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + up) >> 1
                else:
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                out[i] = (out[i] + predictor) & 0xFF
            row = bytes(out)
        rows.append(row)
        previous = row
    return width, height, bpp, rows


@pytest.mark.timeout(90)
def test_screenshot_in_headless_chromium(tmp_path: Path) -> None:
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(render(sample_result()), encoding="utf-8")
    _chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2000", page.as_uri())
    if os.environ.get("REPORT_SCREENSHOT"):
        shutil.copyfile(png, os.environ["REPORT_SCREENSHOT"])
    assert png.exists() and png.stat().st_size > 20_000
    width, height, bpp, rows = _decode_png(png.read_bytes())
    assert (width, height) == (1280, 2000)
    colours = Counter(rows[y][x * bpp:x * bpp + 3]
                      for y in range(0, height, 8) for x in range(0, width, 8))
    assert len(colours) > 20, "the screenshot is (nearly) one flat colour"
    assert colours.most_common(1)[0][1] < 0.8 * sum(colours.values())
    assert FAIL_RED in colours, "no FAIL cell painted: the matrix or its CSS did not render"


@pytest.mark.timeout(90)
def test_prints_to_pdf(tmp_path: Path) -> None:
    page, pdf = tmp_path / "report.html", tmp_path / "report.pdf"
    page.write_text(render(sample_result()), encoding="utf-8")
    _chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri())
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", data))
    # header+summary+matrix+inventory, findings (one device), clause details (two devices), the
    # rest: page breaks between devices give at least four pages, and nothing explodes
    assert 4 <= pages <= 20, pages


