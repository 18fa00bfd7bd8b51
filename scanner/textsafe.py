"""Device-supplied text made safe for a terminal: devices choose their banners, and a banner
with ANSI or OSC escape sequences must not repaint, retitle or hijack the tester's terminal."""

from __future__ import annotations


def terminal_safe(text: str, limit: int = 200) -> str:
    out = []
    for char in text[: limit * 2]:
        code = ord(char)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:  # bidi overrides
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    safe = "".join(out)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"
