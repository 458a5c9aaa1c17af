"""A worker node's sys.stdout and sys.stderr, sent to the front node.

A worker node (docs/nodes.md) is a detached OS process: what Python prints
there would be lost.  install() replaces sys.stdout and sys.stderr with
writers that send each completed line (or what flush() finds) to
erlpy_python_log, which writes it to the node's `user`: OTP's peer relays
that to the front node's standard output, where a gunicorn worker's prints
would go.  Sending never blocks.  Before erlpy_python_log has registered
(or after it stopped), text goes to the original stream.
"""
import io
import sys

import erlang
import erlpy_logging

_TAG = erlang.Atom("erlpy_python_stdio")


class _Relay(io.TextIOBase):
    def __init__(self, name, original):
        super().__init__()
        self._name = name
        self._original = original
        self._pending = []

    @property
    def name(self):
        return self._name

    @property
    def encoding(self):
        return "utf-8"

    @property
    def buffer(self):
        """For code that writes bytes (sys.stdout.buffer.write): decoded
        as UTF-8 and sent as text."""
        return _BytesRelay(self)

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        self._pending.append(s)
        if "\n" in s:
            self.flush()
        return len(s)

    def flush(self):
        # Taken and replaced in one step: a thread writing meanwhile adds to
        # the one list or the other, never to a list already joined.
        pending, self._pending = self._pending, []
        if not pending:
            return
        text = "".join(pending)
        pid = erlpy_logging.receiver()
        if pid is None:
            self._original.write(text)
            self._original.flush()
        else:
            erlang.send(pid, (_TAG, text))


class _BytesRelay(io.RawIOBase):
    def __init__(self, text):
        super().__init__()
        self._text = text

    def writable(self):
        return True

    def write(self, b):
        data = bytes(b)
        self._text.write(data.decode("utf-8", "replace"))
        return len(data)

    def flush(self):
        self._text.flush()


def install():
    """Sends this interpreter's stdout and stderr to the front node (once)."""
    if not isinstance(sys.stdout, _Relay):
        sys.stdout = _Relay("<stdout>", sys.stdout)
    if not isinstance(sys.stderr, _Relay):
        sys.stderr = _Relay("<stderr>", sys.stderr)
