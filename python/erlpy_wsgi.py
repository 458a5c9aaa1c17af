"""Runs one PEP 3333 request for py_wsgi (src/py_wsgi.erl).

The Erlang side builds the CGI part of the environ and owns the socket. Here
the app runs; the response goes back to the Erlang process as messages:

    (wsgi_headers, Rid, Status, [(Name, Value)], Bytes)
                                                    the headers with the first chunk
                                                    (b'' for an empty body)
    (wsgi_body, Rid, Bytes)                         each later non-empty chunk
    (wsgi_log, Rid, Text)                           what the app writes to wsgi.errors

Flow control: Erlang writes one byte into the `acks` buffer for each body
chunk it has handed to the socket; we keep at most WINDOW bytes in flight, so a
slow client never makes the server hold a large response.
"""
import collections
import importlib
import re

import erlang

WINDOW = 256 * 1024
CHUNK_COST = 2048  # a message costs memory too: tiny chunks count as this much

HEADERS = erlang.Atom("wsgi_headers")
BODY = erlang.Atom("wsgi_body")
LOG = erlang.Atom("wsgi_log")

_apps = {}
_STATUS = re.compile(r"[2-5][0-9][0-9] [^\r\n\0]*\Z")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BAD_VALUE = re.compile(rb"[\r\n\0]")


def load_app(spec):
    """'package.module:callable' (callable may be dotted) -> the WSGI app."""
    if isinstance(spec, bytes):
        spec = spec.decode()
    app = _apps.get(spec)
    if app is None:
        module_name, _, attr = spec.partition(":")
        app = importlib.import_module(module_name)
        for part in (attr or "application").split("."):
            app = getattr(app, part)
        _apps[spec] = app
    return app


class ErrorStream:
    """wsgi.errors: lines go to the Erlang logger."""

    def __init__(self, conn, rid):
        self._conn, self._rid, self._pending = conn, rid, []

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("wsgi.errors.write() argument must be str, not %s" % type(s).__name__)
        self._pending.append(s)
        if "\n" in s:
            self.flush()
        return len(s)

    def writelines(self, seq):
        for s in seq:
            self.write(s)

    def flush(self):
        if self._pending:
            erlang.send(self._conn, (LOG, self._rid, "".join(self._pending)))
            self._pending = []


class FileWrapper:
    """wsgi.file_wrapper: iterates a file in blocks and closes it."""

    def __init__(self, filelike, blksize=65536):
        self.filelike, self.blksize = filelike, blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read, size = self.filelike.read, self.blksize
        while True:
            block = read(size)
            if not block:
                return
            yield block


def _latin1(text, what, name):
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("response %s %r has a character above U+00FF: "
                         "PEP 3333 allows ISO-8859-1 only" % (what, name)) from None


class Response:
    """start_response, write() and the body stream of one request."""

    def __init__(self, conn, rid, acks):
        self.conn, self.rid, self.acks = conn, rid, acks
        self.status = None
        self.headers = None
        self.sent = False
        self.in_flight = collections.deque()
        self.in_flight_bytes = 0

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if not isinstance(status, str):
            raise TypeError("status must be str")
        if not _STATUS.match(status):
            raise ValueError("status must be 'NNN Reason' with NNN from 200 to 599: %r" % status)
        # PEP 3333: the status and headers are ISO-8859-1 text, and go out
        # as those bytes; a character above U+00FF has no byte.
        status = _latin1(status, "status", status)
        encoded = []
        for name, value in headers:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("header names and values must be str")
            n, v = _latin1(name, "header", name), _latin1(value, "header", name)
            # No response splitting: names are tokens, values one line.
            if not _TOKEN.match(n) or _BAD_VALUE.search(v):
                raise ValueError("invalid response header %r: %r" % (name, value))
            encoded.append((n, v))
        self.status, self.headers = status, encoded
        return self.write

    def send_headers(self, first=b""):
        if self.status is None:
            raise AssertionError("the application returned a body before calling start_response")
        # One message for the headers and the first chunk: most responses
        # are a single chunk.
        erlang.send(self.conn, (HEADERS, self.rid, self.status, self.headers, first))
        self.sent = True

    def write(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("response body chunks must be bytes, not %s" % type(data).__name__)
        if not data:
            return
        if self.sent:
            erlang.send(self.conn, (BODY, self.rid, bytes(data)))
        else:
            self.send_headers(bytes(data))
        cost = max(len(data), CHUNK_COST)
        self.in_flight.append(cost)
        self.in_flight_bytes += cost
        while self.in_flight_bytes > WINDOW:
            self.acks.read(1)  # blocks, GIL released; raises if the client left
            self.in_flight_bytes -= self.in_flight.popleft()


def run(app, environ, conn, rid, acks):
    """Runs app for one request. Returns 'ok', or raises (then Erlang answers
    500 if nothing was sent yet, else closes the connection)."""
    if isinstance(app, (bytes, str)):
        app = load_app(app)
    environ = {k.decode() if isinstance(k, bytes) else k: v.decode("latin-1") if isinstance(v, bytes) else v
               for k, v in environ.items()}
    errors = ErrorStream(conn, rid)
    environ.update({
        "wsgi.version": (1, 0),
        "wsgi.errors": errors,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    })
    response = Response(conn, rid, acks)
    result = app(environ, response.start_response)
    try:
        for chunk in result:
            response.write(chunk)
        if not response.sent:
            response.send_headers()
    finally:
        if hasattr(result, "close"):
            result.close()
        errors.flush()
    return erlang.Atom("ok")
