"""The WSGI app of the soak and slow-client benchmarks (bench/soak.py,
bench/bench_slow.py). Every server in them (erlpy, gunicorn, uWSGI) serves it.

    GET /                     -> "Hello, World!" (with Content-Length)
    POST or PUT /upload       -> reads wsgi.input in 64 KiB chunks to EOF and
                                 answers "BYTES SHA256HEX"
    GET /stream?size=N&chunk=C -> N bytes of pattern() without Content-Length
                                 (chunked on HTTP/1.1), C bytes per item
    GET /stats                -> JSON counters: requests, uploads, aborted
                                 (reads that raised: client gone or too slow),
                                 streams opened and closed (close() called)

The stream is a class with close(), not a generator: its close() counts even
when the server closes it before the first item, so at rest
streams_opened == streams_closed tells that the server closed every one.
"""
import hashlib
import json
import threading

CHUNK = 64 * 1024
HELLO = b"Hello, World!"
PATTERN = bytes(range(256)) * 256  # 64 KiB

_lock = threading.Lock()
_stats = {"requests": 0, "uploads": 0, "aborted": 0, "streams_opened": 0, "streams_closed": 0}


def count(key):
    with _lock:
        _stats[key] += 1


def pattern(offset, size):
    """size bytes of the stream's content starting at offset."""
    start = offset % len(PATTERN)
    out = PATTERN[start:start + size]
    while len(out) < size:
        out += PATTERN[:size - len(out)]
    return out


class Stream:
    def __init__(self, size, chunk):
        self.left, self.chunk, self.sent = size, chunk, 0
        count("streams_opened")

    def __iter__(self):
        return self

    def __next__(self):
        if self.left <= 0:
            raise StopIteration
        n = min(self.chunk, self.left)
        data = pattern(self.sent, n)
        self.left -= n
        self.sent += n
        return data

    def close(self):
        count("streams_closed")


def query(environ):
    out = {}
    for part in environ.get("QUERY_STRING", "").split("&"):
        k, _, v = part.partition("=")
        out[k] = v
    return out


def answer(start_response, status, body, ctype="text/plain"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    count("requests")
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "/")
    if path == "/" and method in ("GET", "HEAD"):
        return answer(start_response, "200 OK", HELLO)
    if path == "/upload" and method in ("POST", "PUT"):
        read, digest, total = environ["wsgi.input"].read, hashlib.sha256(), 0
        try:
            while True:
                block = read(CHUNK)
                if not block:
                    break
                digest.update(block)
                total += len(block)
        except (ConnectionError, OSError, IOError):
            # The client went away or was too slow: expected here, so not an
            # app error in the server's log. The answer goes nowhere.
            count("aborted")
            return answer(start_response, "400 Bad Request", b"aborted\n")
        count("uploads")
        return answer(start_response, "200 OK", b"%d %s" % (total, digest.hexdigest().encode()))
    if path == "/stream" and method == "GET":
        q = query(environ)
        size = int(q.get("size") or 1 << 20)
        chunk = max(1, int(q.get("chunk") or CHUNK))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Stream(size, chunk)
    if path == "/stats":
        with _lock:
            body = json.dumps(_stats).encode()
        return answer(start_response, "200 OK", body, "application/json")
    return answer(start_response, "404 Not Found", b"not found\n")


application = app
