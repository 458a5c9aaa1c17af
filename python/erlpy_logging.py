"""Python's logging, sent to the Erlang logger.

    import logging, erlpy_logging
    logging.getLogger().addHandler(erlpy_logging.Handler())

Each record becomes one `logger` event on the Erlang side: DEBUG -> debug,
INFO -> info, WARNING -> warning, ERROR -> error, CRITICAL -> critical (a
custom level goes to the nearest standard one below it), with the formatted
message (traceback included) as text and the logger name, module, function,
file and line as metadata.

Sending never blocks: a record is one erlang.send to a receiver process
(erlpy_python_log, under erlpy's supervisor), which registers itself here
when erlpy starts.  Before that, or after erlpy stops, records go where
Python's own last resort sends them (stderr, WARNING and above).
"""
import logging

import erlang

_receiver = None  # (Pid, tag Atom) of erlpy_python_log, or None
_stderr = logging.lastResort  # Python's own last resort, our fallback


def set_receiver(pid):
    """Called by erlpy_python_log when it starts (pid) and stops (None)."""
    global _receiver
    _receiver = None if pid is None else (pid, erlang.Atom("erlpy_python_log"))


def receiver():
    """The pid of erlpy_python_log, or None (erlpy_stdio sends there too)."""
    receiver = _receiver
    return None if receiver is None else receiver[0]


class Handler(logging.Handler):
    """A logging.Handler that sends records to the Erlang logger."""

    def emit(self, record):
        receiver = _receiver
        if receiver is None:
            if _stderr is not None and record.levelno >= _stderr.level:
                _stderr.handle(record)
            return
        try:
            text = self.format(record)
            meta = {
                "logger": record.name,
                "level_name": record.levelname,
                "module": record.module,
                "function": record.funcName or "",
                "file": record.pathname,
                "line": record.lineno,
                "thread": record.threadName or "",
            }
            pid, tag = receiver
            erlang.send(pid, (tag, record.levelno, text, meta))
        except Exception:
            self.handleError(record)


def install(level=logging.NOTSET):
    """Makes a Handler Python's last resort, once: records that no configured
    handler takes go to the Erlang logger.  An app's own configuration
    (basicConfig, dictConfig, handlers it adds) still wins, as it would
    under any other server.  Returns the handler."""
    current = logging.lastResort
    if isinstance(current, Handler):
        return current
    handler = Handler(level)
    logging.lastResort = handler
    return handler


def uninstall():
    """Puts Python's own last resort back."""
    if isinstance(logging.lastResort, Handler):
        logging.lastResort = _stderr
