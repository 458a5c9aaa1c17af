"""WSGI apps for test/erlpy_http_slow_SUITE.erl (not shipped): responses
that span many steps, bodies whose close() is counted with the thread it
ran on, sqlite3 used while iterating, and a request that holds its worker."""
import hashlib
import sqlite3
import threading

events = []  # (what, key, thread ident) for the suite to inspect
_gates = {}


def gate(name):
    return _gates.setdefault(name, threading.Event())


def hold(key):
    """A call that holds its worker until gate(key) is set (py_gate in the
    suite); short waits, so that a cancel's CallTimeout gets in."""
    events.append(("held", key.decode(), threading.get_ident()))
    while not gate(key.decode()).wait(0.02):
        pass
    return key


def count(what, key=None):
    what, key = [v.decode() if isinstance(v, bytes) else v for v in (what, key)]
    return sum(1 for e in events if e[0] == what and (key is None or e[1] == key))


def same_thread(key):
    """Whether the body of request `key` was created and closed on one thread."""
    threads = {e[2] for e in events if e[1] == key and e[0] in ("started", "closed")}
    return len(threads) == 1 and count("closed", key) == 1


class Body:
    """n chunks of size bytes; raises after `fail_after` chunks if set."""

    def __init__(self, key, n, size, fail_after=None):
        self.key, self.n, self.size, self.fail_after = key, n, size, fail_after
        events.append(("started", key, threading.get_ident()))

    def __iter__(self):
        chunk = b"x" * self.size
        for i in range(self.n):
            if i == self.fail_after:
                raise RuntimeError("boom mid-response")
            yield chunk

    def close(self):
        events.append(("closed", self.key, threading.get_ident()))


def _query(environ):
    return dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)


def app(environ, start_response):
    path, q = environ["PATH_INFO"], _query(environ)
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [b"Hello, World!"]
    if path == "/sha256":
        data = environ["wsgi.input"].read()
        events.append(("body", len(data), threading.get_ident()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()]
    if path == "/body":
        # /body?key=K&n=N&size=S[&fail=F]: a closeable body of N chunks.
        fail = int(q["fail"]) if "fail" in q else None
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Body(q["key"], int(q["n"]), int(q.get("size", 65536)), fail)
    if path == "/endless":
        # 64 KiB chunks, 4 GiB in all: a client reading slowly never gets far.
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Body(q.get("key", "endless"), 65536, 65536)
    if path == "/sqlite":
        return sqlite_app(environ, start_response, q)
    if path == "/drip":
        # One byte, then the next once the suite opens the gate `key`.
        start_response("200 OK", [("Content-Type", "text/plain")])
        def drip():
            yield b"a"
            gate(q["key"]).wait(60)
            yield b"b"
        return drip()
    if path == "/write-big":
        # n chunks of 64 KiB through the write() callable, which waits for
        # the client while more than the window is in flight.
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for _ in range(int(q["n"])):
            write(b"w" * 65536)
            events.append(("wrote", q.get("key", ""), threading.get_ident()))
        return []
    if path == "/block":
        events.append(("blocked", q["key"], threading.get_ident()))
        gate(q["key"]).wait(60)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [q["key"].encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"nope"]


class Rows:
    """Rows read from a sqlite3 connection while the response is iterated:
    sqlite3 refuses a connection used on another thread."""

    def __init__(self, key, rows):
        self.key = key
        self.db = sqlite3.connect(":memory:")
        self.db.execute("create table t (i integer, pad text)")
        self.db.executemany("insert into t values (?, ?)", ((i, "p" * 1000) for i in range(rows)))
        events.append(("started", key, threading.get_ident()))

    def __iter__(self):
        for i, pad in self.db.execute("select i, pad from t order by i"):
            yield b"%d %s\n" % (i, pad.encode())

    def close(self):
        self.db.close()
        events.append(("closed", self.key, threading.get_ident()))


def sqlite_app(environ, start_response, q):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Rows(q["key"], int(q["rows"]))
