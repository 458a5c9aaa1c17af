"""Python side of test/py_SUITE.erl (not shipped: lives under test/)."""
import threading
import time
import weakref

import erlang

_events = {}
_refs = []


def block(name):
    """Blocks its worker until release(name)."""
    ev = _events.setdefault(name, threading.Event())
    ev.wait()
    return name


def release(name):
    _events.setdefault(name, threading.Event()).set()
    return True


def thread_ident():
    return threading.get_ident()


timeouts_seen = []


def spin_until_interrupted(tag):
    """Sleeps in short steps for ever; records the CallTimeout it gets."""
    try:
        while True:
            time.sleep(0.005)
    except erlang.CallTimeout:
        timeouts_seen.append(tag)
        raise


class Tracked:
    """An object whose death Erlang can observe."""

    def __init__(self, value):
        self.value = value


def make_tracked(value):
    obj = Tracked(value)
    _refs.append(weakref.ref(obj))
    return obj


def tracked_alive():
    return sum(1 for r in _refs if r() is not None)


def value_of(obj):
    return obj.value


def send_from_thread(pid, term):
    t = threading.Thread(target=erlang.send, args=(pid, term))
    t.start()
    t.join()
    return True


def raise_named(name):
    """Raises an exception whose class name is fresh Python data."""
    cls = type(name.decode(), (Exception,), {})
    raise cls("boom")


def nested_list(depth):
    v = []
    for _ in range(depth):
        v = [v]
    return v


def kwargs_echo(*args, **kwargs):
    return [list(args), kwargs]


def identity(x):
    return x


def deep_send_small_stack(pid, depth):
    """erlang.send of a deeply nested list from a thread with a 512 KiB stack:
    returns the exception's class name ('' if it was sent)."""
    out = []

    def run():
        v = []
        for _ in range(depth):
            v = [v]
        try:
            erlang.send(pid, v)
            out.append("")
        except Exception as e:  # the conversion must refuse, not crash
            out.append(type(e).__name__)

    old = threading.stack_size(512 * 1024)
    try:
        t = threading.Thread(target=run)
        t.start()
        t.join()
    finally:
        threading.stack_size(old)
    return out[0]
