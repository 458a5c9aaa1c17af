"""WSGI apps for test/erlpy_http_headers_SUITE.erl (not shipped): apps that
send what PEP 3333 forbids or constrains (hop-by-hop fields, their own
Date, text beyond ISO-8859-1), so the server's header rules can be seen.
Not wrapped in wsgiref.validate: it rejects hop-by-hop fields itself."""
import json

served = []          # the paths served, for the suite to inspect

HOP_BY_HOP = [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"),
              ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Trailer", "X-T"),
              ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
              ("Proxy-Authenticate", "Basic")]
APP_DATE = "Tue, 15 Nov 1994 08:12:31 GMT"


def app(environ, start_response):
    path = environ["PATH_INFO"]
    served.append(path)
    if path == "/hop":            # no length: the server frames it (chunked)
        start_response("200 OK", HOP_BY_HOP + [("X-Kept", "yes")])
        return [b"hop", b"-by-hop"]
    if path == "/hop-length":
        start_response("200 OK", HOP_BY_HOP + [("Content-Length", "3")])
        return [b"hop"]
    if path == "/close":
        start_response("200 OK", [("Connection", "close"), ("Content-Length", "7")])
        return [b"closing"]
    if path == "/date":           # twice: only the first goes out
        start_response("200 OK", [("Date", APP_DATE), ("date", "Wed, 16 Nov 1994 08:12:31 GMT"),
                                  ("Content-Length", "4")])
        return [b"date"]
    if path == "/latin1":
        start_response("200 Tr\u00e8s bien", [("X-Name", "caf\u00e9"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/above-latin1-value":
        start_response("200 OK", [("X-Name", "snow \u2603")])
        return [b"never sent"]
    if path == "/above-latin1-status":
        start_response("200 \u2603", [])
        return [b"never sent"]
    if path == "/two-lengths":    # the same value twice: sent once
        start_response("200 OK", [("Content-Length", "5"), ("content-length", " 5")])
        return [b"hello"]
    if path == "/no-content":     # a 204 has neither Content-Length nor body
        start_response("204 No Content", [("Content-Length", "4")])
        return [b"body"]
    if path == "/environ":
        body = json.dumps({k: environ.get(k) for k in ("SERVER_NAME", "SERVER_PORT", "HTTP_HOST")})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]
    if path == "/raise":
        raise RuntimeError("the app failed")
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]


_flask = None


def flask_app(environ, start_response):
    """Werkzeug's send_file(conditional=True) sets its own Date. Flask is
    imported on first use: the other apps work without it."""
    global _flask
    if _flask is None:
        import io
        import flask
        _flask = flask.Flask(__name__)
        _flask.add_url_rule("/file", "file", lambda: flask.send_file(
            io.BytesIO(b"data"), mimetype="text/plain", conditional=True, last_modified=0))
    return _flask(environ, start_response)
