"""WSGI apps that log, for test/erlpy_python_log_SUITE.erl."""
import logging

log = logging.getLogger("logging_apps")  # no handlers of its own


def app(environ, start_response):
    log.warning("served %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"logged"]
