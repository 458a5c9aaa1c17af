"""Runs ASGI 3.0 apps for py_asgi (src/py_asgi.erl): one event loop per
context, serving many requests at once.

serve() is a job that never returns while the loop runs: it takes no other
job, so Erlang hands it work through an inbox (erlang._Inbox,
c_src/asgi_inbox.c) that wakes the loop through the eventfd its buffer
readers use (erlpy_aio).  What comes in, as Erlang terms:

    (request, Rid, Conn, App, Sid, Scope, Input)   a new HTTP request
    (credit, Rid)          Erlang wrote every chunk sent so far: send() resumes
    (disconnect, Rid)      the client left: receive() says http.disconnect
    (cancel, Rid)          the request timed out or was given up: cancel its task
    (down, Pid)            a connection process died: cancel its tasks
    (lifespan, Phase, Sid, App, ReplyTo, Ref)      startup / shutdown of a server
    (stop,)                end the loop

What goes out to the connection process:

    (asgi_response, Rid, Status, Headers, Body, MoreBody, Blocked)
                           the start with the first body chunk
    (asgi_body, Rid, Body, MoreBody, Blocked)      each later chunk
    (asgi_done, Rid, Result)   the app returned (ok) or raised
                           ((python, Type, Message, Traceback)) before its
                           response was complete

Blocked is True when send() waits for a credit: more than WINDOW bytes are
in flight.  Once a response is complete the request is detached: the task
may run on (background tasks) and its receive() says http.disconnect.
"""
import asyncio
import http
import traceback
import urllib.parse

import erlang
import erlpy_aio
from erlpy_wsgi import load_app

WINDOW = 256 * 1024
CHUNK_COST = 2048    # a message costs memory too: tiny chunks count as this much
READ_SIZE = 1 << 16  # the most one http.request event carries (bigger bytes objects cost page faults)

RESPONSE = erlang.Atom("asgi_response")
BODY = erlang.Atom("asgi_body")
DONE = erlang.Atom("asgi_done")
LOG = erlang.Atom("asgi_log")
OK = erlang.Atom("ok")
ERROR = erlang.Atom("error")
PYTHON = erlang.Atom("python")
CANCELLED = erlang.Atom("cancelled")

_DISCONNECT = {"type": "http.disconnect"}
_POLL = erlang._Waker.poll
_STATUS = {}
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def interface(spec):
    """'asgi' or 'wsgi' for an app, by uvicorn's rule: a coroutine function,
    or an object whose __call__ is one, is ASGI."""
    app = load_app(spec) if isinstance(spec, (bytes, str)) else spec
    if isinstance(app, type):
        asgi = hasattr(app, "__await__")
    elif asyncio.iscoroutinefunction(app):
        asgi = True
    else:
        asgi = asyncio.iscoroutinefunction(getattr(app, "__call__", None))
    return "asgi" if asgi else "wsgi"


def _app(spec):
    return load_app(spec) if isinstance(spec, (bytes, str)) else spec


def _new_loop():
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def loop_kind():
    """The event loop class serve() runs ('uvloop' or 'asyncio')."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def serve(inbox, owner):
    """The loop job (py_asgi submits it to one context): runs until (stop,)."""
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_Runner(loop, inbox, owner).run())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return OK


def _python_error(exc):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = type(exc).__qualname__
    if type(exc).__module__ not in ("builtins", "__main__"):
        name = f"{type(exc).__module__}.{name}"
    return (PYTHON, name, str(exc), tb)


def _status_line(status):
    line = _STATUS.get(status)
    if line is None:
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"ASGI response status must be an int from 100 to 599, not {status!r}")
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS[status] = f"{status} {phrase}".encode("latin-1")
    return line


def _headers(headers):
    out = []
    for name, value in headers:
        name, value = bytes(name), bytes(value)
        # No response splitting: names are tokens, values one line.
        if not name or not _TOKEN.issuperset(name) or b"\r" in value or b"\n" in value or b"\0" in value:
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        out.append((name, value))
    return out


class _Runner:
    """One loop's requests and lifespans."""

    def __init__(self, loop, inbox, owner):
        self.loop = loop
        self.inbox = erlang._Inbox(inbox)
        self.owner = owner
        self.requests = {}  # Rid -> _Request, until its response completes or it is given up
        self.by_conn = {}   # connection Pid -> {Rid}
        self.lifespans = {}  # server id -> _Lifespan
        self.done = loop.create_future()
        self.context = erlang.context()

    async def run(self):
        waker = erlpy_aio._waker(self.loop)
        waker.hooks.append(self.drain)
        self.inbox.attach(waker.c)
        try:
            await self.done
        finally:
            waker.hooks.remove(self.drain)
            for item in self.inbox.close():
                if item[0] == "request":  # never started: its connection answers 503
                    erlang.send(item[2], (DONE, item[1], (ERROR, erlang.Atom("stopped"))))
            tasks = [r.task for r in self.requests.values()]
            tasks += [lf.task for lf in self.lifespans.values()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)

    def log(self, text):
        erlang.send(self.owner, (LOG, text))

    # ------------------------------------------------------------ the inbox

    def drain(self):
        for item in self.inbox.drain():
            try:
                getattr(self, "on_" + item[0])(*item[1:])
            except Exception:
                self.log("ASGI runner: cannot handle %r:\n%s" % (item[0], traceback.format_exc()))

    def on_request(self, rid, conn, app, sid, scope, buf):
        if not isinstance(buf, erlang.PyBuffer):
            buf = None  # none: no body
        req = _Request(self, rid, conn, buf)
        lifespan = self.lifespans.get(sid)
        try:
            scope = req.scope(scope, lifespan.state if lifespan is not None else None)
            app = _app(app)
        except Exception as e:  # the app does not load: the connection answers 500
            erlang.send(conn, (DONE, rid, _python_error(e)))
            return
        self.requests[rid] = req
        self.by_conn.setdefault(conn, set()).add(rid)
        req.task = self.loop.create_task(req.run(app, scope))

    def on_credit(self, rid):
        req = self.requests.get(rid)
        if req is not None:
            req.credited()

    def on_disconnect(self, rid):
        req = self.requests.get(rid)
        if req is not None:
            req.disconnected()

    def on_cancel(self, rid):
        req = self.requests.get(rid)
        if req is not None:
            self.detach(req)
            req.task.cancel()

    def on_down(self, pid):
        for rid in self.by_conn.pop(pid, ()):
            req = self.requests.pop(rid, None)
            if req is not None:
                req.attached = False
                req.task.cancel()

    def on_lifespan(self, phase, sid, app, reply_to, ref):
        if phase == "startup":
            try:
                app = _app(app)
            except Exception as e:
                erlang.send(reply_to, (ref, self.context, (ERROR, "cannot load the app: %s: %s"
                                                            % (type(e).__name__, e))))
                return
            lifespan = self.lifespans[sid] = _Lifespan(self, app)
            step = lifespan.startup()
        else:
            lifespan = self.lifespans.pop(sid, None)
            step = lifespan.shutdown() if lifespan is not None else None

        async def reply():
            result = OK if step is None else await step
            if result is not OK and phase == "startup":
                self.lifespans.pop(sid, None)
            erlang.send(reply_to, (ref, self.context, result))

        self.loop.create_task(reply())

    def on_stop(self):
        if not self.done.done():
            self.done.set_result(None)

    def detach(self, req):
        """The connection no longer waits for this request."""
        if self.requests.pop(req.rid, None) is not None:
            rids = self.by_conn.get(req.conn)
            if rids is not None:
                rids.discard(req.rid)
                if not rids:
                    del self.by_conn[req.conn]
        req.attached = False


class _Request:
    """receive() and send() of one HTTP request."""

    __slots__ = ("runner", "rid", "conn", "buf", "reader", "task", "attached", "head", "started",
                 "complete", "gone", "body_done", "ended", "in_flight", "credit")

    def __init__(self, runner, rid, conn, buf):
        self.runner, self.rid, self.conn, self.buf = runner, rid, conn, buf
        self.reader = None     # an erlpy_aio.BufferReader, made when a read must wait
        self.task = None
        self.attached = True   # the connection process waits for this request
        self.head = None       # (status line, headers) until the first body chunk
        self.started = False
        self.complete = False  # the whole response was handed to the connection
        self.gone = False      # the client left
        self.body_done = False  # no buffer (None): a request without a body
        self.ended = None      # an asyncio.Event, made when a receive() waits past the body
        self.in_flight = 0
        self.credit = None     # a future while send() waits for a credit

    def scope(self, parts, state):
        method, raw_path, query, version, headers, client, server, scheme, root_path = parts
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version.decode("ascii"),
            "method": method.decode("ascii"),
            "scheme": scheme.decode("ascii"),
            "path": urllib.parse.unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": root_path.decode("utf-8", "replace"),
            "headers": headers,
            "client": (client[0].decode("latin-1"), client[1]),
            "server": (server[0].decode("ascii"), server[1]),
            "state": dict(state) if state is not None else {},
        }

    async def run(self, app, scope):
        try:
            await app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            self.finished(CANCELLED)
            raise
        except BaseException as e:
            self.finished(_python_error(e))
            if not isinstance(e, Exception):
                raise
        else:
            self.finished(OK)

    def finished(self, result):
        """The app returned or raised: tell the connection, unless the
        response was complete (then only an error is worth a log line)."""
        runner = self.runner
        if self.attached:
            runner.detach(self)
            erlang.send(self.conn, (DONE, self.rid, result))
        elif isinstance(result, tuple):
            runner.log("ASGI app raised after its response was sent:\n" + result[3])

    async def receive(self):
        if self.complete or self.gone:
            return _DISCONNECT
        if self.buf is None and not self.body_done:
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self.body_done:
            try:
                n = _POLL(self.buf, 1)  # what is there now: no reader, no waiting
                if n is not None:
                    data = self.buf.read_nonblock(min(n, READ_SIZE))
                else:
                    if self.reader is None:
                        self.reader = erlpy_aio.BufferReader(self.buf)
                    data = await self.reader.read(READ_SIZE)
            except (erlang.StreamAborted, erlang.ReadTimeout, ValueError):
                # The body is cut short (the client left, or it broke a
                # limit: the connection answers that if it can).
                self.body_done = True
                return _DISCONNECT
            more = bool(data) and not self.buf.at_eof()
            self.body_done = not more
            return {"type": "http.request", "body": data, "more_body": more}
        # Past the body: wait until the client leaves or the response is complete.
        if self.ended is None:
            self.ended = asyncio.Event()
        await self.ended.wait()
        return _DISCONNECT

    async def send(self, message):
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.head = (_status_line(message["status"]), _headers(message.get("headers", ())))
            self.started = True
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message type {kind!r}")
        if not self.started:
            raise RuntimeError("http.response.body sent before http.response.start")
        if self.complete:
            raise RuntimeError("http.response.body sent after the response was complete")
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if not isinstance(body, bytes):
            body = bytes(body)
        if not more:
            self.complete = True
        if self.gone or not self.attached:
            return
        cost = len(body) + CHUNK_COST
        blocked = more and self.in_flight + cost > WINDOW
        if self.head is not None:
            status, headers = self.head
            self.head = None
            erlang.send(self.conn, (RESPONSE, self.rid, status, headers, body, more, blocked))
        else:
            erlang.send(self.conn, (BODY, self.rid, body, more, blocked))
        if not more:
            # The connection finishes the response; the task may run on.
            self.runner.detach(self)
            self.wake()
            return
        self.in_flight += cost
        if blocked:
            self.credit = self.runner.loop.create_future()
            try:
                await self.credit
            finally:
                self.credit = None

    def credited(self):
        self.in_flight = 0
        if self.credit is not None and not self.credit.done():
            self.credit.set_result(None)

    def disconnected(self):
        self.gone = True
        self.wake()

    def wake(self):
        """receive() past the body, and send() waiting for a credit, return."""
        if self.ended is not None:
            self.ended.set()
        if self.credit is not None and not self.credit.done():
            self.credit.set_result(None)


class _Lifespan:
    """The lifespan protocol for one server on this loop."""

    SCOPE_ASGI = {"version": "3.0", "spec_version": "2.0"}

    def __init__(self, runner, app):
        self.runner, self.app = runner, app
        self.state = {}
        self.events = asyncio.Queue()
        self.started = runner.loop.create_future()
        self.stopped = runner.loop.create_future()
        self.supported = True
        self.task = runner.loop.create_task(self.main())

    async def main(self):
        scope = {"type": "lifespan", "asgi": dict(self.SCOPE_ASGI), "state": self.state}
        try:
            await self.app(scope, self.events.get, self.send)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            if not self.started.done():
                # As uvicorn's `lifespan auto`: an app that raises before
                # answering startup does not do lifespan; serve it anyway.
                self.supported = False
                self.started.set_result(OK)
            else:
                self.runner.log("ASGI lifespan raised:\n" + _python_error(e)[3])
                self.settle(self.stopped, OK)
        finally:
            self.settle(self.started, OK)
            self.settle(self.stopped, OK)

    @staticmethod
    def settle(fut, result):
        if not fut.done():
            fut.set_result(result)

    async def send(self, message):
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.settle(self.started, OK)
        elif kind == "lifespan.startup.failed":
            self.settle(self.started, (ERROR, str(message.get("message", ""))))
        elif kind == "lifespan.shutdown.complete":
            self.settle(self.stopped, OK)
        elif kind == "lifespan.shutdown.failed":
            self.settle(self.stopped, (ERROR, str(message.get("message", ""))))
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message type {kind!r}")

    async def startup(self):
        await self.events.put({"type": "lifespan.startup"})
        return await self.started

    async def shutdown(self):
        if self.supported and not self.task.done():
            await self.events.put({"type": "lifespan.shutdown"})
            return await self.stopped
        return OK
