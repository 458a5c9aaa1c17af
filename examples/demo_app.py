"""The WSGI app `make run` serves: try the curl lines in the README."""
import hashlib
import json


def app(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    if path == "/":
        return text(start_response, "Hello, World!\n")
    if path == "/upload" and method in ("POST", "PUT"):
        # Reads the body as it arrives, 64 KiB at a time: memory stays flat
        # whatever the size of the upload.
        body, digest, size = environ["wsgi.input"], hashlib.sha256(), 0
        while chunk := body.read(65536):
            digest.update(chunk)
            size += len(chunk)
        return as_json(start_response, {"bytes": size, "sha256": digest.hexdigest()})
    if path == "/echo" and method == "POST":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", environ.get("CONTENT_TYPE", "application/octet-stream")),
                                  ("Content-Length", str(len(data)))])
        return [data]
    if path == "/stream":
        # A streamed response: chunked transfer-encoding, one line at a time.
        count = int(environ.get("QUERY_STRING", "").partition("n=")[2] or 5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"line {i}\n".encode() for i in range(count))
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


def text(start_response, s):
    data = s.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


def as_json(start_response, obj):
    data = json.dumps(obj).encode() + b"\n"
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
