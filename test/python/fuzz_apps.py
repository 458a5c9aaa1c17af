"""The WSGI app behind test/erlpy_http_fuzz_SUITE.erl (not shipped): it
reads the whole request body, then answers with each response framing the
server has, so every request the fuzzer makes gets a full exchange; on
/respond it answers with the status and headers the request asks for."""
import hashlib


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/respond":
        return respond(environ, start_response)
    body = environ["wsgi.input"].read()
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


def respond(environ, start_response):
    """Answers as the request body says (UTF-8): the status line, then one
    "name<TAB>value" line per header, an empty line, then the body chunks
    separated by NUL: so the fuzzer can send whatever headers an app
    might, and see what the server makes of them."""
    text = environ["wsgi.input"].read().decode()
    head, _, body = text.partition("\n\n")
    status, *lines = head.split("\n")
    headers = [tuple(line.split("\t", 1)) for line in lines]
    start_response(status, headers)
    return [chunk.encode("latin-1") for chunk in body.split("\0") if chunk]
