"""Python side of bench/bench_nodes.erl and bench/bench_nodes_wsgi.py.

burn(n) is pure-Python CPU work (it holds the GIL all along); calibrate()
finds the n that takes about `ms` milliseconds here.  app is the WSGI app
of the serving benchmark: GET / says "Hello, World!", GET /burn burns about
BURN_MS of pure Python first (BURN_N iterations, set by the environment
variable ERLPY_BENCH_BURN_N, calibrated by the driver).
"""
import os
import time


def burn(n):
    x = 0
    for i in range(n):
        x += i * i
    return x


def mixed(n):
    """Pure Python of another kind: arithmetic, a dict and str() per step."""
    t = 0
    for i in range(n):
        t += (i * 7) % 13
        d = {"a": i, "b": str(i)}
        t += len(d["b"])
    return t


def best_cpu(name, n, repeat=5):
    """The least thread CPU time, in seconds, of `repeat` runs of name(n)."""
    fn = globals()[name.decode() if isinstance(name, bytes) else name]
    best = None
    for _ in range(repeat):
        t = time.thread_time()
        fn(n)
        took = time.thread_time() - t
        best = took if best is None else min(best, took)
    return best


def calibrate(ms):
    """The n for which burn(n) takes `ms` of this thread's CPU time (not
    wall time: the machine may be busy)."""
    n = 20000
    while True:
        t = time.thread_time()
        burn(n)
        took = time.thread_time() - t
        if took > 0.02:
            return int(n * (ms / 1000.0) / took)
        n *= 2


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def drain(buf, size=65536):
    """Reads the buffer to its end; the bytes read and the peak RSS seen."""
    n = 0
    peak = rss()
    while True:
        data = buf.read1(size)
        if not data:
            return n, peak
        n += len(data)
        if n % (8 << 20) < size:
            peak = max(peak, rss())


HELLO = b"Hello, World!"
BURN_N = int(os.environ.get("ERLPY_BENCH_BURN_N", "25000"))


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/burn":
        burn(BURN_N)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]
