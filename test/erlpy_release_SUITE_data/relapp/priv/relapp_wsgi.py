import os
import time


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        # Tell the test the request is in flight, then wait for its go.
        run = os.environ["RELAPP_DIR"]
        open(os.path.join(run, "started"), "w").close()
        while not os.path.exists(os.path.join(run, "go")):
            time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served by a release"]
