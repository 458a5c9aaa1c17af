"""Port baseline for bench/bench_call.erl: the same call, served by a Python
process behind an Erlang port opened with {packet, 4} and binary.

Each request is term_to_binary({Function, A, B}) with Function an atom that
names a function of the operator module (the benchmark sends {add, 1, 2});
the reply is the external term format of {ok, operator.Function(A, B)}, which
the Erlang side decodes with binary_to_term.  Like py:call, the function is
looked up by name on every request.

Only the few term types the benchmark needs are decoded: small tuples, atoms
and integers.  Anything else is answered with {error, badarg}.

Run with /usr/bin/python3 (no third-party packages).
"""
import operator
import os
import struct
import sys

VERSION = 131
SMALL_INTEGER_EXT = 97
INTEGER_EXT = 98
ATOM_EXT = 100
SMALL_TUPLE_EXT = 104
SMALL_BIG_EXT = 110
ATOM_UTF8_EXT = 118
SMALL_ATOM_UTF8_EXT = 119
SMALL_ATOM_EXT = 115

_int32 = struct.Struct(">i")
_uint32 = struct.Struct(">I")
_uint16 = struct.Struct(">H")


def decode(data, pos):
    """Decodes one term at data[pos:]; returns (term, next position)."""
    tag = data[pos]
    if tag == SMALL_INTEGER_EXT:
        return data[pos + 1], pos + 2
    if tag == INTEGER_EXT:
        return _int32.unpack_from(data, pos + 1)[0], pos + 5
    if tag in (ATOM_EXT, ATOM_UTF8_EXT):
        n = _uint16.unpack_from(data, pos + 1)[0]
        return data[pos + 3:pos + 3 + n].decode(), pos + 3 + n
    if tag in (SMALL_ATOM_UTF8_EXT, SMALL_ATOM_EXT):
        n = data[pos + 1]
        return data[pos + 2:pos + 2 + n].decode(), pos + 2 + n
    if tag == SMALL_TUPLE_EXT:
        items, pos = [], pos + 2
        for _ in range(data[pos - 1]):
            item, pos = decode(data, pos)
            items.append(item)
        return tuple(items), pos
    if tag == SMALL_BIG_EXT:
        n, sign = data[pos + 1], data[pos + 2]
        value = int.from_bytes(data[pos + 3:pos + 3 + n], "little")
        return (-value if sign else value), pos + 3 + n
    raise ValueError("unsupported term tag %d" % tag)


def encode_int(value):
    if 0 <= value < 256:
        return bytes((SMALL_INTEGER_EXT, value))
    if -(1 << 31) <= value < (1 << 31):
        return bytes((INTEGER_EXT,)) + _int32.pack(value)
    magnitude = abs(value)
    digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
    return bytes((SMALL_BIG_EXT, len(digits), value < 0)) + digits


OK_TUPLE = bytes((VERSION, SMALL_TUPLE_EXT, 2, SMALL_ATOM_UTF8_EXT, 2)) + b"ok"
ERROR_BADARG = (bytes((VERSION, SMALL_TUPLE_EXT, 2, SMALL_ATOM_UTF8_EXT, 5)) + b"error"
                + bytes((SMALL_ATOM_UTF8_EXT, 6)) + b"badarg")


def handle(request):
    try:
        if request[0] != VERSION:
            raise ValueError("not an external term")
        (name, a, b), _ = decode(request, 1)
        return OK_TUPLE + encode_int(getattr(operator, name)(a, b))
    except (ValueError, TypeError, AttributeError, IndexError, struct.error):
        return ERROR_BADARG


def read_exactly(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None  # the port was closed
        chunks.append(chunk)
        n -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(answer):
    """Answers {packet, 4} requests from stdin on stdout, each with
    answer(request) (bytes), until stdin closes."""
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    while True:
        header = read_exactly(fd_in, 4)
        if header is None:
            return
        request = read_exactly(fd_in, _uint32.unpack(header)[0])
        if request is None:
            return
        reply = answer(request)
        write_all(fd_out, _uint32.pack(len(reply)) + reply)


def main():
    serve(handle)


if __name__ == "__main__":
    main()
