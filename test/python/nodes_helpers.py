"""Python side of test/py_nodes_SUITE.erl."""
import hashlib
import mmap
import os
import sys
import time

import erlang


def flag_file(path):
    """A one-byte shared flag (a mapped file), set by one node, read by another."""
    with open(path, "wb") as f:
        f.write(b"\0\0")


def hold_gil_until_flag(path, bound=60.0):
    """Holds this interpreter's GIL (a pure-Python spin, no switching, no
    blocking call) until another process sets the flag (byte 0).  True if it
    was set: that other process ran Python meanwhile, so it has a GIL of its
    own.  Byte 1 says the spin has started."""
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 2)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    m[1] = 1
    try:
        deadline = time.monotonic() + bound
        n = 0
        while m[0] == 0:
            n += 1
            if n % 1000000 == 0 and time.monotonic() > deadline:
                return False
        return True
    finally:
        sys.setswitchinterval(old)
        m.close()


def flag(path, i):
    with open(path, "rb") as f:
        return f.read()[i]


def set_flag(path):
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 2)
        m[0] = 1
        m.close()
    return os.getpid()


def sha256_of(buf, size=65536):
    """Reads the buffer to its end in pieces; the digest, the bytes, and this
    process's peak RSS growth seen meanwhile."""
    h = hashlib.sha256()
    n = 0
    start = _rss()
    peak = 0
    while True:
        data = buf.read1(size)
        if not data:
            break
        h.update(data)
        n += len(data)
        if n % (1 << 20) < size:
            peak = max(peak, _rss() - start)
    return h.hexdigest().encode(), n, peak


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


FINISHED = []


def sleep_noting(seconds, key):
    """Sleeps; notes in FINISHED how it ended (a cancel raises CallTimeout,
    between two short sleeps: it does not interrupt a sleep)."""
    FINISHED.append((key, b"started"))
    try:
        for _ in range(seconds * 20):
            time.sleep(0.05)
        FINISHED.append((key, b"slept"))
    except BaseException as e:
        FINISHED.append((key, type(e).__name__.encode()))
        raise


def finished(key):
    return [how for k, how in FINISHED if k == key]


def close_and_wait(buf, done):
    """Closes the relayed buffer (its reader), then waits for `done` to end,
    so the call is still running while the writer writes."""
    buf.read(1)
    buf.close()
    return done.read()
