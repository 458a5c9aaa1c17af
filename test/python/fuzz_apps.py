"""The WSGI app behind test/erlpy_http_fuzz_SUITE.erl (not shipped): it
reads the whole request body, then answers with each response framing the
server has, so every request the fuzzer makes gets a full exchange."""
import hashlib


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    path = environ["PATH_INFO"]
    digest = hashlib.sha256(body).hexdigest().encode()
    if path == "/stream":  # no Content-Length: chunked (or close-delimited)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d " % len(body), digest]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(digest)))])
    return [digest]
