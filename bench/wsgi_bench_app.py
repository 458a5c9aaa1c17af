"""The WSGI app of the server benchmark (bench/bench_wsgi.py).

Every server in the benchmark (erlpy, gunicorn, uWSGI) serves this same file.

    GET /                          -> "Hello, World!" (with Content-Length)
    POST /echo                     -> reads wsgi.input to EOF and answers it
    POST or PUT /upload            -> reads wsgi.input in 64 KiB chunks to EOF
                                      and answers the number of bytes read
    POST or PUT /upload?api=uwsgi  -> the same through uWSGI's own API,
                                      uwsgi.chunked_read(): uWSGI 2.0 gives
                                      wsgi.input no bytes for a chunked body

The upload handler reads to EOF, never CONTENT_LENGTH bytes only, so it also
works for chunked request bodies (servers that set wsgi.input_terminated, or
that de-chunk the body before the app sees it).
"""

CHUNK = 64 * 1024
HELLO = b"Hello, World!"


def app(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "/")
    if path == "/" and method in ("GET", "HEAD"):
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(HELLO)))])
        return [HELLO]
    if path == "/echo" and method == "POST":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/upload" and method in ("POST", "PUT"):
        if environ.get("QUERY_STRING") == "api=uwsgi":
            total = uwsgi_chunked_body()
        else:
            read = environ["wsgi.input"].read
            total = 0
            while True:
                block = read(CHUNK)
                if not block:
                    break
                total += len(block)
        body = str(total).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    body = b"not found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def uwsgi_chunked_body():
    """uWSGI 2.0 only: its wsgi.input is empty for a chunked body, which its
    own API reads one HTTP chunk at a time (b"" after the last one)."""
    import uwsgi  # the module uWSGI provides to the apps it runs
    total = 0
    while True:
        block = uwsgi.chunked_read(30)
        if not block:
            return total
        total += len(block)


application = app
