"""A Quart app for py_asgi_SUITE (Debian's python3-quart)."""
import asyncio
import hashlib

from quart import Quart, jsonify, request

app = Quart(__name__)
app.config["MAX_CONTENT_LENGTH"] = 64 << 20
events = []


@app.before_serving
async def started():
    events.append("before_serving")


@app.after_serving
async def stopped():
    events.append("after_serving")


@app.route("/hello")
async def hello():
    return "Hello from Quart"


@app.route("/json", methods=["POST"])
async def json_echo():
    data = await request.get_json()
    return jsonify(got=data)


@app.route("/form", methods=["POST"])
async def form():
    fields = await request.form
    files = await request.files
    out = dict(fields)
    for name, f in files.items():
        data = f.read()
        out[name] = {"filename": f.filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return jsonify(out)


@app.route("/streaming")
async def streaming():
    async def gen():
        for i in range(100):
            yield b"chunk %d\n" % i
            await asyncio.sleep(0)
    return gen(), 200, {"Content-Type": "text/plain"}
