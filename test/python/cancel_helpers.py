"""Python side of test/py_cancel_SUITE.erl (not shipped: lives under test/)."""
import threading
import weakref

import erlang

events = []  # what happened, in order: (what, tag)
_stuck = threading.Event()
_refs = []


def _note(what, tag, pid=None):
    events.append((what, tag))
    if pid is not None:  # the test may have no free worker to ask with
        erlang.send(pid, (erlang.Atom(what), tag))


def read_all(buf, tag, pid=None):
    """Reads a buffer to its end; records how the read ended."""
    _note("reading", tag, pid)
    try:
        return len(buf.read())
    except erlang.CallTimeout:
        events.append(("interrupted", tag))
        raise


def spin(tag):
    """A CPU-bound loop that never ends by itself."""
    events.append(("spinning", tag))
    try:
        n = 0
        while True:
            n += 1
    except erlang.CallTimeout:
        events.append(("interrupted", tag))
        raise


def record(tag):
    events.append(("ran", tag))
    return tag


def seen(what):
    return [tag for (w, tag) in events if w == what]


class StuckDel:
    """An object whose __del__ does not return until unstick()."""

    def __del__(self):
        events.append(("del_started", None))
        _stuck.wait()
        events.append(("del_returned", None))


def make_stuck():
    _stuck.clear()
    return StuckDel()


def unstick():
    _stuck.set()
    return True


class Tracked:
    def __init__(self, size):
        self.payload = bytearray(size)


def make_tracked(size):
    obj = Tracked(size)
    _refs.append(weakref.ref(obj))
    return obj


def tracked_alive():
    return sum(1 for r in _refs if r() is not None)


def wsgi_read_body(environ, start_response):
    """A WSGI app that reads its whole body before answering."""
    events.append(("reading", b"wsgi"))
    try:
        body = environ["wsgi.input"].read()
    except erlang.CallTimeout:
        events.append(("interrupted", b"wsgi"))
        raise
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
