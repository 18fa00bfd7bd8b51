"""Telnet option negotiation (RFC 854/855): refuse every option so the device gets to its prompt.

Devices that negotiate forever cannot hold us: the caller's deadline and byte cap bound the loop.
"""

from __future__ import annotations

import re
import time

from scanner.net import Connection

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240

LOGIN_PROMPT = re.compile(rb"(login|username|user name|user)\s*:\s*$", re.IGNORECASE)
PASSWORD_PROMPT = re.compile(rb"password\s*:\s*$", re.IGNORECASE)
SHELL_PROMPT = re.compile(rb"([#$>%]|\]#|\]\$)\s*$")


def split_negotiation(data: bytes) -> tuple[bytes, bytes, bytes]:
    """Separate text from IAC sequences: (text, our refusals to send back, an incomplete
    sequence at the end that must be joined to the next read)."""
    text = bytearray()
    replies = bytearray()
    index = 0
    while index < len(data):
        command_at = data.find(IAC, index)  # text runs are copied whole, not byte by byte
        if command_at < 0:
            text += data[index:]
            break
        text += data[index:command_at]
        index = command_at
        if index + 1 >= len(data):
            return bytes(text), bytes(replies), data[index:]
        command = data[index + 1]
        if command == IAC:  # escaped 0xFF data byte
            text.append(IAC)
            index += 2
        elif command in (DO, DONT, WILL, WONT):
            if index + 2 >= len(data):
                return bytes(text), bytes(replies), data[index:]
            option = data[index + 2]
            if command == DO:
                replies += bytes((IAC, WONT, option))
            elif command == WILL:
                replies += bytes((IAC, DONT, option))
            index += 3
        elif command == SB:
            end = data.find(bytes((IAC, SE)), index + 2)
            if end < 0:
                return bytes(text), bytes(replies), data[index:][:512]  # bounded tail
            index = end + 2
        else:
            index += 2
    return bytes(text), bytes(replies), b""


def classify_prompt(text: bytes) -> str | None:
    """"login", "password", "shell" or None: what the device's last line asks for."""
    lines = text.replace(b"\x00", b"").splitlines()
    last = lines[-1].strip() if lines else b""
    if LOGIN_PROMPT.search(last):
        return "login"
    if PASSWORD_PROMPT.search(last):
        return "password"
    if last and SHELL_PROMPT.search(last):
        return "shell"
    return None


async def read_until_prompt(conn: Connection, timeout: float, max_bytes: int = 16384,
                            initial: bytes = b"") -> tuple[bytes, str | None]:
    """Answer negotiation and collect text until a prompt, EOF, the deadline or the byte cap."""
    deadline = time.monotonic() + timeout
    text = bytearray()
    pending = initial
    received = len(initial)
    while True:
        if pending:
            chunk_text, replies, pending = split_negotiation(pending)
            text += chunk_text
            if replies:
                await conn.send(replies)
            prompt = classify_prompt(bytes(text))
            if prompt is not None:
                return bytes(text), prompt
        remaining = deadline - time.monotonic()
        if remaining <= 0 or received >= max_bytes:
            return bytes(text), None
        try:
            chunk = await conn.recv(max_bytes - received, timeout=remaining)
        except TimeoutError:
            return bytes(text), None
        if not chunk:
            return bytes(text), None
        received += len(chunk)
        pending += chunk
