"""WSGI apps for test/erlpy_http_SUITE.erl (not shipped). The apps are
wrapped in wsgiref.validate.validator, the standard library's PEP 3333
checker: a violation raises AssertionError and fails the request."""
import hashlib
import json
import threading
import time
from wsgiref.validate import validator

events = []          # what apps saw, for the suite to inspect
_gates = {}


def gate(name):
    return _gates.setdefault(name, threading.Event())


def _raw(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [b"Hello, World!"]
    if path == "/environ":
        keys = ["REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "HTTP_X_TEST",
                "CONTENT_TYPE", "wsgi.url_scheme"]
        body = json.dumps({k: environ.get(k) for k in keys}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/header":
        # The environ value named by the query string, e.g. /header?HTTP_X_A
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ.get(environ["QUERY_STRING"], "-").encode("latin-1")]
    if path in ("/sha256", "/late-sha256"):
        if path == "/late-sha256":  # slow to start reading: /late-sha256?SECONDS
            time.sleep(float(environ["QUERY_STRING"]))
        inp, h, n = environ["wsgi.input"], hashlib.sha256(), 0
        try:
            while chunk := inp.read(65536):
                h.update(chunk)
                n += len(chunk)
        except ConnectionError as e:
            events.append(("read_error", type(e).__name__))
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{n} {h.hexdigest()}".encode()]
    if path == "/input-probe":
        # readline, read(N), read(5), readlines on wsgi.input, in that order
        # (the validator allows read() with a size only).
        inp = environ["wsgi.input"]
        seen = [inp.readline(), inp.read(65536), inp.read(5), b"".join(inp.readlines())]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([s.decode("latin-1") for s in seen]).encode()]
    if path == "/lines":
        lines = environ["wsgi.input"].readlines()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(len(lines)).encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        n = int(environ["QUERY_STRING"] or 3)
        return (b"%d\n" % i for i in range(n))
    if path == "/big":
        # 64 MiB streamed in 1 MiB chunks: a slow client must hold the app back.
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        def gen():
            for i in range(64):
                events.append(("big_chunk", i))
                yield bytes([i % 256]) * (1 << 20)
        return gen()
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"from write() ")
        return [b"and iterable"]
    if path == "/slow":
        gate("slow").wait(30)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"slow"]
    if path == "/boom":
        raise RuntimeError("boom before start_response")
    if path == "/boom-late":
        start_response("200 OK", [("Content-Type", "text/plain")])
        def gen():
            yield b"partial"
            raise RuntimeError("boom after the headers")
        return gen()
    if path == "/closing":
        class Body:
            def __iter__(self):
                yield b"x"
            def close(self):
                events.append(("closed", True))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()
    if path == "/errors":
        environ["wsgi.errors"].write("a line for the logger\n")
        start_response("204 No Content", [])
        return []
    if path == "/file":
        import io
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"file body " * 1000), 4096)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"nope"]


def unchecked(environ, start_response):
    """Apps the validator would stop before the server sees what they do."""
    path = environ["PATH_INFO"]
    if path == "/bad-length":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "abc")])
        return [b"body"]
    if path == "/split":
        start_response("200 OK", [("X-A", "v\r\nSet-Cookie: evil=1")])
        return [b"body"]
    if path == "/tiny":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"x" for _ in range(int(environ["QUERY_STRING"] or 10)))
    if path == "/whole":
        # Bodies that come back in the job's reply (a list or tuple up to
        # the window) and some that do not; each answers its parts joined.
        kind = environ["QUERY_STRING"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        environ["wsgi.errors"].write("whole %s\n" % kind)
        return {"list": [b"a", b"b", b"c"], "tuple": (b"one", b"-two"), "empty": [],
                "one": [b"single"], "bytearray": [b"x", bytearray(b"y")],
                "big": [b"x" * 200000, b"y" * 200000],
                "mixed": [b"p", memoryview(b"q")]}[kind]
    if path == "/whole-no-start":
        return [b"never started"]
    start_response("404 Not Found", [])
    return [b""]


app = validator(_raw)


def make_flask_app():
    import flask

    f = flask.Flask("erlpy_test")

    @f.post("/json")
    def json_body():
        data = flask.request.get_json()
        return flask.jsonify(sum=sum(data["numbers"]), name=data["name"])

    @f.post("/form")
    def form():
        up = flask.request.files["file"]
        content = up.read()
        return flask.jsonify(field=flask.request.form["field"], filename=up.filename,
                             size=len(content), sha256=hashlib.sha256(content).hexdigest())

    @f.post("/stream-upload")
    def stream_upload():
        h, n = hashlib.sha256(), 0
        while chunk := flask.request.stream.read(65536):
            h.update(chunk)
            n += len(chunk)
        return f"{n} {h.hexdigest()}"

    @f.get("/url")
    def url():
        # What an unchanged app builds behind a proxy: scheme, host, mount point.
        return f"{flask.url_for('url', _external=True)} {flask.request.remote_addr}"

    @f.get("/streamed")
    def streamed():
        def gen():
            for i in range(5):
                yield f"part {i}\n"
        return flask.Response(flask.stream_with_context(gen()), mimetype="text/plain")

    # Werkzeug calls wsgi.input.read() without a size when the server sets
    # wsgi.input_terminated, which PEP 3333 allows ("A server should allow
    # read() to be called without an argument") but the validator's input
    # wrapper rejects.  So between the validator (which sees the server's
    # environ as it is) and Flask, the flag is hidden: werkzeug then reads
    # with sizes, up to CONTENT_LENGTH.
    def hide_terminated(environ, start_response):
        environ = dict(environ)
        environ.pop("wsgi.input_terminated", None)
        return f.wsgi_app(environ, start_response)

    return validator(hide_terminated)


_flask_app = None


def __getattr__(name):
    # flask_app is made on first use, so this module imports on a Python
    # without Flask (the Flask tests are skipped there).
    global _flask_app
    if name == "flask_app":
        if _flask_app is None:
            _flask_app = make_flask_app()
        return _flask_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
