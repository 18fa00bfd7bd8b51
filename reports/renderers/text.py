"""Device text made visible and bounded, shared by every text renderer.

Devices choose their banners and names: control, format, line-separator and surrogate
characters (ANSI/OSC escapes, NUL, bidi overrides) become visible escapes such as \\x1b or
\\u202e, and long strings are cut with a note pointing at report.json, which keeps them whole.
"""

from __future__ import annotations

import unicodedata

_INVISIBLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_NONCHARACTERS = {0xFFFE, 0xFFFF}


def visible(text: str, keep: str = "") -> str:
    """Every invisible character as an escape, except those in ``keep`` (e.g. newline)."""
    out = []
    for char in text:
        code = ord(char)
        if char in keep or (unicodedata.category(char) not in _INVISIBLE
                            and code not in _NONCHARACTERS):
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


def cap(text: str, limit: int) -> str:
    """At most ``limit`` characters, saying how many more report.json holds."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit} more characters in report.json]"
