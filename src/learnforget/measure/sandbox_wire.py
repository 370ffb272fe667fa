"""The wire format: how values cross between the sandbox's checker and the program process.

Only plain data can be rebuilt from it: None, bool, int, float, complex, str, bytes, list, tuple,
dict, set, frozenset, range, and an iterator over a list (what the program's generator, ``map``
or ``dict.values()`` yielded). A subclass of one of these travels as the base type; anything else
has no wire form. The decoder trusts nothing it reads.

The runner (``sandbox_child.py``) loads this file by its path, under ``python -I -S``: it must
import only the standard library. The tool imports it as ``learnforget.measure.sandbox_wire`` to
encode the check it hands to the checker.
"""

from __future__ import annotations

import os

WIRE_DEPTH = 100  # deepest nesting of containers
WIRE_LIMIT = 16 << 20  # bytes in one message
KEYS_VIEW, VALUES_VIEW, ITEMS_VIEW = type({}.keys()), type({}.values()), type({}.items())
SEQUENCE_TAGS = ((list, b"L"), (tuple, b"T"), (set, b"S"), (frozenset, b"F"))


class WireError(ValueError):
    """A value without a wire form, or bytes that are not one."""


def encode(value: object) -> bytes:
    """The wire form of ``value``; ``WireError`` where it (or a part of it) has none."""
    out: list[bytes] = []
    encode_into(value, out, 0)
    return b"".join(out)


def encode_into(value: object, out: list[bytes], depth: int) -> None:
    """Append the wire form of ``value`` to ``out``."""
    if depth > WIRE_DEPTH:
        raise WireError(f"nested more than {WIRE_DEPTH} levels deep")
    if value is None or value is True or value is False:
        out.append(b"n" if value is None else b"t" if value else b"f")
    elif isinstance(value, int):
        out.append(b"i%x;" % int.__index__(value))  # hex: no limit on the number of digits
    elif isinstance(value, float):
        out.append(b"d" + float.hex(value).encode() + b";")
    elif isinstance(value, complex):
        out.append(b"c%s,%s;" % (float.hex(value.real).encode(), float.hex(value.imag).encode()))
    elif isinstance(value, (str, bytes, bytearray)):
        data = str.encode(value, "utf-8", "surrogatepass") if isinstance(value, str) else value
        out += [b"s" if isinstance(value, str) else b"b", b"%d:" % len(data), bytes(data)]
    elif isinstance(value, range):
        out.append(b"r%x,%x,%x;" % (value.start, value.stop, value.step))
    elif isinstance(value, dict):
        encode_items(b"D", [part for pair in dict.items(value) for part in pair], out, depth)
    elif isinstance(value, (KEYS_VIEW, ITEMS_VIEW)):
        encode_items(b"S", list(value), out, depth)  # they compare as sets do
    else:
        for kind, tag in SEQUENCE_TAGS:
            if isinstance(value, kind):
                encode_items(tag, list(value), out, depth)
                return
        if not hasattr(type(value), "__next__") and not isinstance(value, VALUES_VIEW):
            raise WireError(f"{type(value).__name__} is not plain data")
        encode_items(b"I", list(value), out, depth)


def encode_items(tag: bytes, items: list, out: list[bytes], depth: int) -> None:
    """Append a container: its tag, the number of items, the items."""
    out.append(tag + b"%d:" % (len(items) // 2 if tag == b"D" else len(items)))
    for item in items:
        encode_into(item, out, depth + 1)


def decode(data: bytes) -> object:
    """The value that ``data`` is the wire form of; ``WireError`` for anything else."""
    try:
        value, end = decode_at(data, 0, 0)
    except (IndexError, TypeError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise WireError(f"not plain data ({type(exc).__name__}: {exc})") from None
    if end != len(data):
        raise WireError("not plain data (bytes after the value)")
    return value


def decode_number(data: bytes, pos: int) -> tuple[list[str], int]:
    """The comma-separated fields up to the next ``;`` and the position after it."""
    end = data.index(b";", pos)
    return data[pos:end].decode("ascii").split(","), end + 1


def decode_count(data: bytes, pos: int) -> tuple[int, int]:
    """A decimal count up to the next ``:``, at most the bytes left."""
    end = data.index(b":", pos, pos + 12)
    count = int(data[pos:end].decode("ascii"))
    if not 0 <= count <= len(data) - end - 1:
        raise ValueError("a count larger than the message")
    return count, end + 1


def decode_at(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    """The value that starts at ``pos`` and the position after it."""
    if depth > WIRE_DEPTH:
        raise ValueError(f"nested more than {WIRE_DEPTH} levels deep")
    tag, pos = data[pos:pos + 1], pos + 1
    if tag in (b"n", b"t", b"f"):
        return {b"n": None, b"t": True, b"f": False}[tag], pos
    if tag in (b"i", b"d", b"c", b"r"):
        fields, pos = decode_number(data, pos)
        if tag == b"i" and len(fields) == 1:
            return int(fields[0], 16), pos
        if tag == b"d" and len(fields) == 1:
            return float.fromhex(fields[0]), pos
        if tag == b"c" and len(fields) == 2:
            return complex(float.fromhex(fields[0]), float.fromhex(fields[1])), pos
        if tag == b"r" and len(fields) == 3:
            return range(*(int(field, 16) for field in fields)), pos
        raise ValueError(f"a malformed number {fields!r}")
    if tag in (b"s", b"b"):
        size, pos = decode_count(data, pos)
        raw = data[pos:pos + size]
        return (raw.decode("utf-8", "surrogatepass") if tag == b"s" else bytes(raw)), pos + size
    if tag not in (b"L", b"T", b"S", b"F", b"D", b"I"):
        raise ValueError(f"an unknown tag {tag!r}")
    count, pos = decode_count(data, pos)
    items = []
    for _ in range(count * 2 if tag == b"D" else count):
        item, pos = decode_at(data, pos, depth + 1)
        items.append(item)
    if tag == b"D":
        return dict(zip(items[::2], items[1::2], strict=True)), pos
    return {b"L": list, b"T": tuple, b"S": set, b"F": frozenset, b"I": iter}[tag](items), pos


class Channel:
    """Messages in the wire format on a pair of pipes, each preceded by its length."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd, self.buffer = read_fd, write_fd, bytearray()

    def send(self, value: object) -> None:
        """Send ``value``; ``WireError`` where it has no wire form or is too large."""
        data = encode(value)
        if len(data) > WIRE_LIMIT:
            raise WireError(f"{len(data)} bytes, more than the {WIRE_LIMIT} a message may have")
        view = memoryview(len(data).to_bytes(8, "big") + data)
        while view:
            view = view[os.write(self.write_fd, view):]

    def receive(self) -> object:
        """The next value; ``EOFError`` once the other end is closed, ``WireError`` for a
        message that is too large or not plain data."""
        size = int.from_bytes(self.read_exactly(8), "big")
        if size > WIRE_LIMIT:
            raise WireError(f"a message of {size} bytes, more than {WIRE_LIMIT}")
        return decode(self.read_exactly(size))

    def read_exactly(self, size: int) -> bytes:
        """``size`` bytes from the pipe (``EOFError`` if it ends first)."""
        while len(self.buffer) < size:
            chunk = os.read(self.read_fd, min(1 << 20, max(65536, size - len(self.buffer))))
            if not chunk:
                raise EOFError("the other end closed the pipe")
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data
