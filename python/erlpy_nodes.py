"""The front half of a py_buffer passed to a worker node (src/py_nodes_buffer.erl).

forward() runs on the node that owns the buffer: it reads the buffer as any
reader would and sends each piece to `proxy`, an Erlang process on this node
that relays it to the worker node.  At most `window` pieces are in flight:
each one the worker node has written into its own buffer comes back as one
byte in `acks`, so memory stays bounded on both nodes and the writer here
feels the worker's backpressure.
"""
import erlang

_DATA = erlang.Atom("data")
_EOF = erlang.Atom("eof")
_ABORT = erlang.Atom("abort")
_WRITER_DOWN = "the process writing this buffer exited"


def forward(buf, proxy, acks, chunk, window):
    inflight = 0
    try:
        while True:
            while inflight >= window:
                got = acks.read1(window)
                if not got:
                    return False
                inflight -= len(got)
            data = buf.read1(chunk)
            if not data:
                erlang.send(proxy, (_EOF,))
                return True
            erlang.send(proxy, (_DATA, data))
            inflight += 1
    except erlang.StreamIncomplete:
        # Closed short: the worker's buffer, of the same declared length,
        # raises the same when it is closed there.
        erlang.send(proxy, (_EOF,))
    except erlang.StreamAborted as e:
        text = str(e)
        if text.startswith(_WRITER_DOWN):
            erlang.send(proxy, (_ABORT, erlang.Atom("writer_down")))
        else:
            # The reason is an atom of this node (py_buffer:abort/2's);
            # an Atom converts only if it exists.
            try:
                erlang.send(proxy, (_ABORT, erlang.Atom(text.rpartition(": ")[2])))
            except ValueError:
                erlang.send(proxy, (_ABORT, erlang.Atom("aborted")))
    return False
