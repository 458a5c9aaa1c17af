"""Runs one PEP 3333 request for py_wsgi (src/py_wsgi.erl).

The Erlang side builds the CGI part of the environ and owns the socket. Here
the app runs; the response goes back to the Erlang process as messages:

    (wsgi_headers, Rid, Status, [(Name, Value)], Bytes)
                                                    the headers with the first chunk
                                                    (b'' for an empty body)
    (wsgi_body, Rid, Bytes)                         each later non-empty chunk
    (wsgi_log, Rid, Text)                           what the app writes to wsgi.errors
    (wsgi_blocking, Rid, N)                         before the first write() call: from
                                                    now on this thread may wait for Erlang;
                                                    N chunks were sent before it

A body that is a list or tuple of at most WINDOW bytes (all of it produced
already) comes back in the job's reply instead, as (done, Status, Headers,
Bytes): one message for the whole response.

A response is advanced in steps, each a job on the worker thread that called
the app (thread-affine libraries such as sqlite3 refuse other threads): run()
calls the app and iterates its body while at most WINDOW bytes are in flight,
then returns (more, Token, Context) instead of waiting; Erlang hands what it
received to the socket and calls step(Token) on py:context(Context) for the
next window.  Between two steps the thread serves other work.  A finished
response returns ok; the body's close() runs on that thread exactly once,
whatever ends the response (its end, an exception, close(Token) when the
client left, close_orphan() when the Erlang process died: see _Token).

Flow control: chunks from the body iterable are never waited for (a step
ends once WINDOW bytes are out, and Erlang starts the next step when it has
handed them all to the socket).  Once the app calls the write() callable of
start_response, Erlang writes one byte into the `acks` buffer for each later
chunk it has handed to the socket, and write() blocks on `acks` while more
than WINDOW bytes are in flight, so an app using it holds its worker while a
slow client reads.  An app that never calls write() gets no acknowledgement,
so Erlang can keep one `acks` buffer for a connection's requests.
"""
import collections
import contextvars
import importlib
import io
import itertools
import re

import erlang

WINDOW = 256 * 1024
CHUNK_COST = 2048  # a message costs memory too: tiny chunks count as this much

HEADERS = erlang.Atom("wsgi_headers")
BODY = erlang.Atom("wsgi_body")
LOG = erlang.Atom("wsgi_log")
BLOCKING = erlang.Atom("wsgi_blocking")
OK = erlang.Atom("ok")
MORE = erlang.Atom("more")
DONE = erlang.Atom("done")
ORPHAN = erlang.Atom("erlpy_wsgi_orphan")

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
        self.chunks = 0           # chunks sent
        self.step_bytes = 0       # cost sent since the last step began
        self.in_flight = collections.deque()  # costs sent since write() began, not acknowledged
        self.in_flight_bytes = 0
        self.blocking = False

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
        """The write() callable: waits while more than WINDOW bytes are in flight."""
        if not self.blocking:
            # Erlang must now deliver without waiting for this job to end,
            # and acknowledge the chunks from here on.
            erlang.send(self.conn, (BLOCKING, self.rid, self.chunks))
            self.blocking = True
        self.send(data)
        while self.in_flight_bytes > WINDOW:
            self.acks.read(1)  # blocks, GIL released; raises if the client left
            cost = self.in_flight.popleft()
            self.in_flight_bytes -= cost
            self.step_bytes -= cost

    def send(self, data):
        """Sends a body chunk without waiting."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("response body chunks must be bytes, not %s" % type(data).__name__)
        if not data:
            return
        if self.sent:
            erlang.send(self.conn, (BODY, self.rid, bytes(data)))
        else:
            self.send_headers(bytes(data))
        cost = max(len(data), CHUNK_COST)
        self.chunks += 1
        self.step_bytes += cost
        if self.blocking:
            self.in_flight.append(cost)
            self.in_flight_bytes += cost

    def settle(self):
        """At the start of a step Erlang has delivered every chunk sent so
        far, and acknowledged those since write() began: consume those."""
        self.step_bytes = 0
        if self.in_flight:
            self.acks.read(len(self.in_flight))  # all there; raises if the client left
            self.in_flight.clear()
            self.in_flight_bytes = 0


# Responses between two steps, by key.  Only the thread that started a
# response advances or closes it; the dict itself is shared under the GIL.
_suspended = {}
_keys = itertools.count(1)


class _Request:
    """One request across its steps: the body iterable, and the contextvars
    context every step runs in (frameworks keep their request state in
    context variables, and other requests run on the thread between steps)."""

    def __init__(self, response, errors, reaper):
        self.response, self.errors, self.reaper = response, errors, reaper
        self.context = erlang.context()
        self.vars = contextvars.copy_context()
        self.result = self.iterator = None

    def start(self, app, environ):
        try:
            self.result = app(environ, self.response.start_response)
            whole = self.whole()
            if whole is not None:
                return whole
            self.iterator = iter(self.result)
        except BaseException:
            self.close()
            raise
        return self.advance()

    def whole(self):
        """The common case in one message: a body that is a list or tuple
        (every chunk produced already, nothing to stream) of at most WINDOW
        bytes, nothing sent yet, comes back as the job's reply
        (done, Status, Headers, Body) instead of a message before it."""
        result, response = self.result, self.response
        if type(result) not in (list, tuple) or response.sent or len(result) > 64:
            return None
        size = 0
        for chunk in result:
            if type(chunk) is not bytes:
                return None  # send() checks the type, or takes a bytearray
            size += len(chunk)
        if size > WINDOW:
            return None
        if response.status is None:
            raise AssertionError("the application returned a body before calling start_response")
        body = result[0] if len(result) == 1 else b"".join(result)
        response.sent = True
        self.close()
        return (DONE, response.status, response.headers, body)

    def advance(self):
        """Sends body chunks until the window is full (then suspends) or the
        body ends (then closes it)."""
        response = self.response
        try:
            response.settle()
            for chunk in self.iterator:
                response.send(chunk)
                if response.step_bytes > WINDOW:
                    return self.suspend()
            if not response.sent:
                response.send_headers()
        except BaseException:
            self.close()
            raise
        self.close()
        return OK

    def suspend(self):
        self.errors.flush()
        key = next(_keys)  # a new key per suspension: an old token never finds it
        _suspended[key] = self
        return (MORE, _Token(key, self.context, self.reaper), self.context)

    def close(self):
        """Calls the body's close() if it has one: once, whatever calls this."""
        result, self.result, self.iterator = self.result, None, None
        try:
            if hasattr(result, "close"):
                result.close()
        finally:
            self.errors.flush()


class _Token:
    """What Erlang holds between two steps (as an object handle).  If the
    Erlang process dies without finishing or closing the response, the
    handle is dropped, and this asks the reaper (py_wsgi's process) to
    run close_orphan() on the response's own thread."""

    __slots__ = ("key", "context", "reaper")

    def __init__(self, key, context, reaper):
        self.key, self.context, self.reaper = key, context, reaper

    def __del__(self):
        if self.key not in _suspended:
            return  # stepped or closed
        try:
            if self.reaper is not None:
                erlang.send(self.reaper, (ORPHAN, self.context, self.key))
                return
        except Exception:
            pass
        # No reaper to ask: close it here rather than never.
        request = _suspended.pop(self.key, None)
        if request is not None:
            try:
                request.vars.run(request.close)
            except Exception:
                pass


def _take(key):
    request = _suspended.pop(key, None)
    if request is not None and request.context != erlang.context():
        _suspended[key] = request
        raise RuntimeError("response started on context %d, not %d" % (request.context, erlang.context()))
    return request


def step(token):
    """Advances a suspended response by one window: ok or (more, Token, Context)."""
    request = _take(token.key)
    if request is None:
        raise RuntimeError("this response has finished or been closed")
    return request.vars.run(request.advance)


def close(token):
    """The client is gone: closes a suspended response."""
    return close_orphan(token.key)


def close_orphan(key):
    """Closes a suspended response whose Erlang process died."""
    request = _take(key)
    if request is not None:
        request.vars.run(request.close)
    return OK


def run(app, environ, conn, rid, acks, reaper=None):
    """Runs app for one request on this thread. Returns ok, (done, Status,
    Headers, Body) for a whole small response (see _Request.whole), or (more,
    Token, Context): call step(Token) on that context for the rest.  Raises on an
    app error (then Erlang answers 500 if nothing was sent yet, else closes
    the connection)."""
    if isinstance(app, (bytes, str)):
        app = load_app(app)
    environ = {k.decode() if isinstance(k, bytes) else k: v.decode("latin-1") if isinstance(v, bytes) else v
               for k, v in environ.items()}
    if environ.get("wsgi.input") is None:
        # No body (Erlang made no buffer for it): an empty file.
        environ["wsgi.input"] = io.BytesIO()
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
    request = _Request(Response(conn, rid, acks), errors, reaper)
    return request.vars.run(request.start, app, environ)
