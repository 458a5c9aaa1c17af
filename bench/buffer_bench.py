"""Python side of bench/bench_buffer.erl (see docs/performance.md).

Imported by the embedded interpreter (bench_buffer puts bench/ on sys.path
through the `python_path' app env), where every function below is called with
py:call and times itself with time.perf_counter_ns around the work only.

Run as a script with /usr/bin/python3 it is one of the baselines:

    python3 buffer_bench.py port-reader   the port baseline: an 8-byte
        big-endian byte count on stdin, then that many bytes read with
        sys.stdin.buffer.read(65536); replies b"ok <count>\\n" on stdout
    python3 buffer_bench.py memmove TOTAL PIECE   the memcpy baseline used
        when gcc is missing: ctypes.memmove of TOTAL bytes in PIECE pieces
        from one TOTAL-byte source into one preallocated PIECE-byte buffer;
        prints the nanoseconds taken
"""
import io
import sys
import time

_now = time.perf_counter_ns


# ------------------------------------------------------------ streaming consumers
#
# Each one consumes a PyBuffer to EOF while Erlang is still writing it and
# returns (bytes consumed, ns from the call's start to EOF, extra), extra
# being a count that depends on the consumer.

def consume_read(buf, size=65536):
    """The plain file loop: read(size) until b''.  extra: reads that
    returned fewer than size bytes (only the last one should)."""
    read = buf.read
    total = short = 0
    t0 = _now()
    while True:
        b = read(size)
        n = len(b)
        if not n:
            break
        total += n
        if n != size:
            short += 1
    return total, _now() - t0, short


def consume_readinto(buf, size=65536):
    """readinto() into one preallocated bytearray: no allocation per read.
    extra: reads that returned fewer than size bytes."""
    scratch = bytearray(size)
    readinto = buf.readinto
    total = short = 0
    t0 = _now()
    while True:
        n = readinto(scratch)
        if not n:
            break
        total += n
        if n != size:
            short += 1
    return total, _now() - t0, short


def consume_view(buf):
    """Zero-copy consumption: a memoryview of whatever is unread, touched
    with len() and released, then seek() past it (so the buffer must keep
    consumed data: seekable()).  peek(1) is the blocking wait for more
    (it copies one byte); b'' from it is EOF.

    A view of unread bytes that span more than one written chunk makes the
    stream merge them into one block (a copy, see docs/buffer.md, Views).
    The writer's chunks are 64 KiB, and this loop only ever stops at chunk
    boundaries, so a view longer than 64 KiB was merged.  extra: bytes that
    went through such a merge."""
    seek = buf.seek
    amount = buf.readable_amount
    peek = buf.peek
    total = merged = 0
    t0 = _now()
    while True:
        if not amount() and not peek(1):
            break
        with memoryview(buf) as view:
            n = len(view)
        seek(n, 1)
        total += n
        if n > 65536:
            merged += n
    return total, _now() - t0, merged


def consume_readview(buf):
    """Zero-copy consumption without keep_consumed: readview() takes the
    next unread bytes as a memoryview of the chunk they lie in (no merge)
    and moves past them; the view is touched with len() and released.  An
    empty view is EOF.  extra: views taken."""
    readview = buf.readview
    total = views = 0
    t0 = _now()
    while True:
        with readview() as view:
            n = len(view)
        if not n:
            break
        total += n
        views += 1
    return total, _now() - t0, views


# ------------------------------------------------------------ readline

_kept = {}


def keep_bytes(name, data):
    """Keeps a bytes object between calls (the Erlang side sends it once)."""
    _kept[name] = data
    return len(data)


def drop_bytes(name):
    _kept.pop(name, None)
    return True


def readline_pybuffer(buf):
    """From the start of a closed buffer (keep_consumed: seek(0) rewinds it
    for the next round), readline() until b''.  Returns (lines, bytes, ns)."""
    buf.seek(0)
    readline = buf.readline
    lines = total = 0
    t0 = _now()
    while True:
        line = readline()
        if not line:
            break
        lines += 1
        total += len(line)
    return lines, total, _now() - t0


def readline_bytesio(name):
    """The same loop over io.BytesIO of the same bytes."""
    f = io.BytesIO(_kept[name])
    readline = f.readline
    lines = total = 0
    t0 = _now()
    while True:
        line = readline()
        if not line:
            break
        lines += 1
        total += len(line)
    return lines, total, _now() - t0


def iterate_pybuffer(buf):
    """`for line in buf` (tp_iternext) over the same closed buffer."""
    buf.seek(0)
    lines = total = 0
    t0 = _now()
    for line in buf:
        lines += 1
        total += len(line)
    return lines, total, _now() - t0


def iterate_bytesio(name):
    f = io.BytesIO(_kept[name])
    lines = total = 0
    t0 = _now()
    for line in f:
        lines += 1
        total += len(line)
    return lines, total, _now() - t0


# ------------------------------------------------------------ find

def snapshot(name, buf):
    """A bytes copy of the buffer's unread bytes (peek() does not consume),
    kept under name for find_bytes: the very bytes PyBuffer.find searches."""
    data = buf.peek()
    _kept[name] = data
    return len(data)


def find_pybuffer(buf, needle):
    t0 = _now()
    at = buf.find(needle)
    return at, _now() - t0


def find_bytes(name, needle):
    data = _kept[name]
    t0 = _now()
    at = data.find(needle)
    return at, _now() - t0


_memmem = None


def find_memmem(name, needle):
    """glibc memmem (what PyBuffer.find calls per chunk) on the same bytes
    object, through ctypes: no copy, one call."""
    global _memmem
    import ctypes
    if _memmem is None:
        _memmem = ctypes.CDLL(None).memmem
        _memmem.restype = ctypes.c_void_p
        _memmem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    data = _kept[name]
    base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    t0 = _now()
    p = _memmem(base, len(data), needle, len(needle))
    ns = _now() - t0
    return (-1 if p is None else p - base), ns


# ------------------------------------------------------------ baselines (scripts)

def port_reader():
    """Reads an 8-byte count, then that many bytes in read(65536) calls, from
    stdin (a pipe from the Erlang port); answers b"ok <count>\\n"."""
    stdin = sys.stdin.buffer
    out = sys.stdout.buffer
    while True:
        head = stdin.read(8)
        if len(head) < 8:
            return
        want = int.from_bytes(head, "big")
        read = stdin.read
        got = 0
        while got < want:
            b = read(min(65536, want - got))
            if not b:
                break
            got += len(b)
        out.write(b"ok %d\n" % got)
        out.flush()


def memmove(total, piece):
    import ctypes
    src = bytearray(b"\x5a") * total
    dst = bytearray(piece)
    s = (ctypes.c_char * total).from_buffer(src)
    d = (ctypes.c_char * piece).from_buffer(dst)
    base, move = ctypes.addressof(s), ctypes.memmove
    daddr = ctypes.addressof(d)
    t0 = _now()
    for off in range(0, total, piece):
        move(daddr, base + off, piece)
    print(_now() - t0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["port-reader"]:
        port_reader()
    elif sys.argv[1:2] == ["memmove"]:
        memmove(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(__doc__)
