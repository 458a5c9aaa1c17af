"""Python side of test/py_buffer_SUITE.erl (not shipped)."""
import hashlib
import random


def sha256_random_reads(buf, seed):
    """Reads buf to EOF with read(n) of random sizes; returns the sha256."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    while True:
        chunk = buf.read(rng.choice([1, 7, 100, 4096, 65536, 300000]))
        if not chunk:
            return h.digest()
        h.update(chunk)


def count_bytes(buf, size):
    n = 0
    while True:
        chunk = buf.read(size)
        if not chunk:
            return n
        n += len(chunk)


_views = []


def hold_view(buf):
    """Takes a memoryview of buf's unread bytes and keeps it."""
    _views.append(memoryview(buf))
    return len(_views[-1])


def held_view():
    mv = _views[-1]
    return bytes(mv), mv.readonly


def release_view():
    _views.pop().release()
