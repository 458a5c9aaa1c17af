/* buffer_type.c - erlang.PyBuffer: the Python side of a py_buffer, a binary
 * file opened for reading (io.BufferedIOBase semantics) over a stream.
 *
 * Waits and big copies happen with the GIL released (Py_BEGIN_ALLOW_THREADS);
 * small reads that can be served at once keep it.  The stream's lock is taken
 * only inside stream.c, so the GIL is never requested while holding it (the
 * readline sink runs under it, on this thread, GIL held: it only allocates).
 *
 * Public CPython API only.  _PyBytes_Resize, despite its underscore, is the
 * documented way to grow or shrink a new bytes object in place (C API
 * reference, "Bytes Objects"; present in 3.11-3.14); its planned successor,
 * PyBytesWriter, arrives only in 3.15. */
#include <limits.h>
#include <string.h>

#include "buffer_nif.h"
#include "convert.h"
#include "workers.h"

/* Copies above this size release the GIL. */
#define NOGIL_COPY 65536

typedef struct {
    PyObject_HEAD
    buffer_t *buf; /* a kept reference to the resource */
} pybuffer_t;

static PyObject *incomplete_read_error; /* erlang.IncompleteReadError(EOFError) */
static PyObject *chunk_view_type;       /* holder of one readview() pin, below */
static PyObject *unsupported_operation; /* io.UnsupportedOperation */

#define STREAM(self) ((self)->buf->stream)

/* ------------------------------------------------------------ helpers */

static int check_open(pybuffer_t *self)
{
    if (stream_reader_closed(STREAM(self))) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed file.");
        return -1;
    }
    return 0;
}

/* Enter a read: open, and no other thread inside one. */
static int enter(pybuffer_t *self)
{
    if (check_open(self) < 0)
        return -1;
    if (stream_reader_enter(STREAM(self)) != STREAM_OK) {
        PyErr_SetString(PyExc_RuntimeError, "concurrent read of an erlang.PyBuffer from another thread");
        return -1;
    }
    return 0;
}

static void leave(pybuffer_t *self)
{
    stream_reader_leave(STREAM(self));
}

/* Sets the Python exception for a failed wait; returns NULL. */
static PyObject *raise_status(pybuffer_t *self, int status)
{
    char reason[64];
    switch (status) {
    case STREAM_EABORTED:
        stream_abort_reason(STREAM(self), reason, sizeof reason);
        if (strcmp(reason, "writer_down") == 0)
            PyErr_SetString(PY.stream_aborted, "the process writing this buffer exited without closing it");
        else
            PyErr_Format(PY.stream_aborted, "the stream was aborted: %s", reason);
        break;
    case STREAM_ESHORT:
        PyErr_SetString(PY.stream_incomplete, "the stream ended before its declared content length");
        break;
    case STREAM_ECLOSED: /* close() from another thread while this one waited */
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed file.");
        break;
    case STREAM_ETIMEDOUT:
        PyErr_SetString(PY.read_timeout, "no data within the buffer's read_timeout");
        break;
    case STREAM_EINTERRUPTED:
        PyErr_SetString(PY.call_timeout, "the Erlang caller's timeout expired");
        break;
    case STREAM_ENOMEM:
        PyErr_NoMemory();
        break;
    default:
        PyErr_Format(PyExc_OSError, "stream error %d", status);
    }
    return NULL;
}

/* Waits (GIL released) until `want` unread bytes or EOF; *avail is set.
 * Returns 0, or -1 with an exception set. */
static int wait_for(pybuffer_t *self, size_t want, size_t *avail)
{
    *avail = stream_unread(STREAM(self));
    if (*avail >= want)
        return 0;
    buffer_reading(self->buf); /* e.g. time for an HTTP "100 Continue" */
    stream_waiter_t w = {-1, NULL, NULL};
    if (self->buf->read_timeout_ms >= 0)
        w.deadline_ms = stream_now_ms() + self->buf->read_timeout_ms;
    int status = worker_stream_wait(STREAM(self), want, &w, avail); /* without the GIL */
    if (status != STREAM_OK) {
        raise_status(self, status);
        return -1;
    }
    return 0;
}

/* Slices of a big copy: the stream lock is held for one slice at a time, so
 * a writer (a NIF call on a scheduler) never waits long for it. */
#define COPY_SLICE (256 * 1024)

static size_t copy_out(pybuffer_t *self, char *dst, size_t n)
{
    size_t got = 0, step;
    if (n < NOGIL_COPY)
        return stream_read(STREAM(self), dst, n);
    Py_BEGIN_ALLOW_THREADS
    do {
        step = stream_read(STREAM(self), dst + got, n - got < COPY_SLICE ? n - got : COPY_SLICE);
        got += step;
    } while (step && got < n);
    Py_END_ALLOW_THREADS
    return got;
}

/* n unread bytes (all available now) as a new bytes object. */
static PyObject *take_bytes(pybuffer_t *self, size_t n)
{
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!bytes || !n)
        return bytes;
    /* Fewer bytes than were there only if another thread closed or moved
     * the buffer while the GIL was released for the copy. */
    size_t got = copy_out(self, PyBytes_AS_STRING(bytes), n);
    if (got < n) {
        Py_DECREF(bytes);
        if (check_open(self) == 0)
            PyErr_SetString(PyExc_RuntimeError, "erlang.PyBuffer moved by another thread during a read");
        return NULL;
    }
    return bytes;
}

/* size argument: None or an int; negative means "all". */
static int parse_size(PyObject *const *args, Py_ssize_t nargs, const char *fname, Py_ssize_t *size)
{
    *size = -1;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s expected at most 1 argument, got %zd", fname, nargs);
        return -1;
    }
    if (nargs == 0 || args[0] == Py_None)
        return 0;
    if (!PyIndex_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "argument should be integer or None, not '%.200s'",
                     Py_TYPE(args[0])->tp_name);
        return -1;
    }
    *size = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    return *size == -1 && PyErr_Occurred() ? -1 : 0;
}

/* ------------------------------------------------------------ reads */

/* A read that consumed `consumed` bytes failed: put the position back, so
 * that a timeout or a short stream loses nothing (possible while consumed
 * bytes are kept, i.e. keep_consumed; after an abort nothing is left). */
static void unconsume(pybuffer_t *self, size_t consumed)
{
    if (consumed && stream_seekable(STREAM(self)))
        (void)stream_seek(STREAM(self), stream_tell(STREAM(self)) - consumed);
}

/* The most a reader may wait for at once (see buffer_t.wait_cap). */
static size_t wait_cap(pybuffer_t *self)
{
    return self->buf->wait_cap;
}

/* Reads n bytes into dst, fewer only at EOF, consuming them as they arrive.
 * Returns the count, or -1 with an exception set. */
static Py_ssize_t fill(pybuffer_t *self, char *dst, size_t n)
{
    size_t have = 0, avail, cap = wait_cap(self);
    while (have < n) {
        size_t want = n - have < cap ? n - have : cap;
        if (wait_for(self, want, &avail) < 0) {
            unconsume(self, have);
            return -1;
        }
        if (avail == 0) /* EOF */
            break;
        have += copy_out(self, dst + have, avail < n - have ? avail : n - have);
    }
    return (Py_ssize_t)have;
}

/* acc + part (both consumed; either may be NULL on entry for "nothing"). */
static PyObject *join(PyObject *acc, PyObject *part)
{
    if (!acc || !part) {
        Py_XDECREF(acc);
        return part;
    }
    PyBytes_ConcatAndDel(&acc, part);
    return acc;
}

/* Everything up to EOF, consumed as it arrives (so a writer held back by
 * max_unread keeps going). */
static PyObject *read_all(pybuffer_t *self)
{
    PyObject *result = PyBytes_FromStringAndSize(NULL, 0);
    size_t have = 0, avail;
    while (result) {
        if (wait_for(self, 1, &avail) < 0) {
            unconsume(self, have);
            Py_CLEAR(result);
            break;
        }
        if (avail == 0) /* EOF */
            break;
        if (_PyBytes_Resize(&result, (Py_ssize_t)(have + avail)) < 0)
            break;
        have += copy_out(self, PyBytes_AS_STRING(result) + have, avail);
    }
    return result;
}

/* Up to n bytes: blocks for n (block_all) or for at least one (read1). */
static PyObject *read_some(pybuffer_t *self, Py_ssize_t n, int block_all)
{
    if (n < 0)
        return block_all ? read_all(self) : NULL;
    if (n == 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    size_t avail = stream_unread(STREAM(self));
    if (!block_all || avail >= (size_t)n) {
        if (wait_for(self, 1, &avail) < 0)
            return NULL;
        return take_bytes(self, avail < (size_t)n ? avail : (size_t)n);
    }
    /* A size is a bound, not a promise (a lying Content-Length, read(maxsize)):
     * past 1 MiB the result grows with the data. */
    size_t first = (size_t)n < (1 << 20) ? (size_t)n : (1 << 20);
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)first);
    size_t have = 0;
    while (bytes && have < (size_t)n) {
        size_t room = (size_t)PyBytes_GET_SIZE(bytes) - have;
        if (room == 0) {
            size_t grow = (size_t)n - have < have ? (size_t)n - have : have;
            if (_PyBytes_Resize(&bytes, (Py_ssize_t)(have + grow)) < 0)
                break;
            continue;
        }
        Py_ssize_t got = fill(self, PyBytes_AS_STRING(bytes) + have, room);
        if (got < 0) {
            unconsume(self, have);
            Py_CLEAR(bytes);
        } else {
            have += (size_t)got;
            if ((size_t)got < room) /* EOF */
                break;
        }
    }
    if (bytes && have < (size_t)PyBytes_GET_SIZE(bytes))
        _PyBytes_Resize(&bytes, (Py_ssize_t)have);
    return bytes;
}

static PyObject *pb_read(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n;
    if (parse_size(args, nargs, "read", &n) < 0 || enter(self) < 0)
        return NULL;
    PyObject *r = read_some(self, n, 1);
    leave(self);
    return r;
}

static PyObject *pb_readall(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    if (enter(self) < 0)
        return NULL;
    PyObject *r = read_all(self);
    leave(self);
    return r;
}

static PyObject *pb_read1(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n;
    if (parse_size(args, nargs, "read1", &n) < 0 || enter(self) < 0)
        return NULL;
    PyObject *r;
    size_t avail;
    if (n >= 0)
        r = read_some(self, n, 0);
    else
        r = wait_for(self, 1, &avail) < 0 ? NULL : take_bytes(self, avail);
    leave(self);
    return r;
}

static PyObject *pb_read_nonblock(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n;
    if (parse_size(args, nargs, "read_nonblock", &n) < 0 || enter(self) < 0)
        return NULL;
    size_t avail = stream_unread(STREAM(self));
    PyObject *r = take_bytes(self, n >= 0 && (size_t)n < avail ? (size_t)n : avail);
    leave(self);
    return r;
}

static PyObject *pb_peek(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n;
    if (parse_size(args, nargs, "peek", &n) < 0 || enter(self) < 0)
        return NULL;
    size_t avail;
    PyObject *r = NULL;
    if (wait_for(self, 1, &avail) == 0) {
        size_t len = n > 0 && (size_t)n < avail ? (size_t)n : avail;
        r = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
        if (r)
            stream_peek(STREAM(self), PyBytes_AS_STRING(r), len, 0);
    }
    leave(self);
    return r;
}

/* readinto / readinto1: fill a writable buffer. */
static PyObject *read_into(pybuffer_t *self, PyObject *arg, int block_all)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        /* io's wording and type (BytesIO, BufferedReader), not BufferError */
        PyErr_Format(PyExc_TypeError, "%s() argument must be read-write bytes-like object, not %.200s",
                     block_all ? "readinto" : "readinto1", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    PyObject *r = NULL;
    if (enter(self) == 0) {
        size_t want = (size_t)view.len, avail;
        if (block_all) {
            Py_ssize_t got = fill(self, view.buf, want);
            r = got < 0 ? NULL : PyLong_FromSsize_t(got);
        } else if (want == 0 || wait_for(self, 1, &avail) == 0) {
            r = PyLong_FromSize_t(want ? copy_out(self, view.buf, avail < want ? avail : want) : 0);
        }
        leave(self);
    }
    PyBuffer_Release(&view);
    return r;
}

static PyObject *pb_readinto(pybuffer_t *self, PyObject *arg)
{
    return read_into(self, arg, 1);
}

static PyObject *pb_readinto1(pybuffer_t *self, PyObject *arg)
{
    return read_into(self, arg, 0);
}

/* One line, at most `size` bytes (size < 0: no limit but line_limit).
 * line_limit bounds the bytes before the newline, whether or not the newline
 * has arrived yet (the answer must not depend on how the data was chunked);
 * a size <= line_limit stops the read first.  Nothing is consumed on error. */
static PyObject *read_line(pybuffer_t *self, Py_ssize_t size)
{
    size_t line_limit = self->buf->line_limit, cap = wait_cap(self);
    size_t limit = size >= 0 ? (size_t)size : SIZE_MAX;
    PyObject *acc = NULL; /* the line's start, consumed already: the writer waited for us */
    size_t have = 0, searched = 0, avail = stream_unread(STREAM(self));
    for (;;) {
        size_t room = limit - have;
        size_t end = avail < room ? avail : room;
        int64_t nl = stream_find(STREAM(self), "\n", 1, searched, end);
        size_t content = have + (nl >= 0 ? (size_t)nl : end);
        if (line_limit && content > line_limit) {
            unconsume(self, have);
            Py_XDECREF(acc);
            PyErr_Format(PY.line_too_long, "line longer than the buffer's line_limit (%zu bytes)", line_limit);
            return NULL;
        }
        if (nl >= 0)
            return join(acc, take_bytes(self, (size_t)nl + 1));
        if (end == room)
            return join(acc, take_bytes(self, room));
        searched = end;
        if (avail >= cap) {
            acc = join(acc, take_bytes(self, avail));
            if (!acc)
                return NULL;
            have += avail;
            avail = searched = 0;
        }
        size_t before = avail;
        if (wait_for(self, avail + 1, &avail) < 0) {
            unconsume(self, have);
            Py_XDECREF(acc);
            return NULL;
        }
        if (avail == before) /* EOF */
            return join(acc, take_bytes(self, avail));
    }
}

/* Lines up to this long take the fast path. */
#define LINE_FAST 65536

/* The sink of stream_read_line: the line's bytes object, made under the
 * stream lock with the GIL held (pymalloc; no lock is waited for). */
static void *line_sink(void *ctx, size_t n)
{
    PyObject **out = ctx;
    *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    return *out ? PyBytes_AS_STRING(*out) : NULL;
}

/* The common case in one stream-lock round: the whole line, within size and
 * line_limit, is there already.  Returns it; or NULL with MemoryError; or
 * NULL without an exception when the slow path must decide (no newline yet,
 * too long, closed, busy). */
static PyObject *line_fast(pybuffer_t *self, Py_ssize_t size)
{
    size_t cap = LINE_FAST, n = 0, limit = self->buf->line_limit;
    PyObject *line = NULL;
    if (size >= 0 && (size_t)size < cap)
        cap = (size_t)size;
    if (limit && limit < cap) /* content <= line_limit, plus the newline */
        cap = limit + 1;
    (void)stream_read_line(STREAM(self), '\n', cap, line_sink, &line, &n);
    return line;
}

static PyObject *pb_readline(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n = -1;
    if (nargs && parse_size(args, nargs, "readline", &n) < 0)
        return NULL;
    PyObject *r = line_fast(self, n);
    if (r || PyErr_Occurred() || enter(self) < 0)
        return r;
    r = read_line(self, n);
    leave(self);
    return r;
}

static PyObject *pb_readlines(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t hint;
    if (parse_size(args, nargs, "readlines", &hint) < 0 || enter(self) < 0)
        return NULL;
    PyObject *lines = PyList_New(0);
    Py_ssize_t total = 0;
    while (lines) {
        PyObject *line = read_line(self, -1);
        if (!line || PyBytes_GET_SIZE(line) == 0 || PyList_Append(lines, line) < 0) {
            if (!line || PyErr_Occurred()) {
                unconsume(self, (size_t)total + (line ? (size_t)PyBytes_GET_SIZE(line) : 0));
                Py_CLEAR(lines);
            }
            Py_XDECREF(line);
            break;
        }
        total += PyBytes_GET_SIZE(line);
        Py_DECREF(line);
        if (hint > 0 && total >= hint)
            break;
    }
    leave(self);
    return lines;
}

static PyObject *pb_iternext(pybuffer_t *self)
{
    PyObject *line = line_fast(self, -1);
    if (line || PyErr_Occurred())
        return line;
    if (enter(self) < 0)
        return NULL;
    line = read_line(self, -1);
    leave(self);
    if (line && PyBytes_GET_SIZE(line) == 0)
        Py_CLEAR(line); /* StopIteration */
    return line;
}

static PyObject *pb_iter(pybuffer_t *self)
{
    if (check_open(self) < 0)
        return NULL;
    return Py_NewRef(self);
}

/* readuntil / readexactly: asyncio.StreamReader's contract. */
static PyObject *incomplete(PyObject *partial, Py_ssize_t expected)
{
    if (!partial)
        return NULL;
    PyObject *exc = PyObject_CallFunction(incomplete_read_error, "(On)", partial, expected);
    Py_DECREF(partial);
    if (exc) {
        PyErr_SetObject(incomplete_read_error, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *pb_readexactly(pybuffer_t *self, PyObject *arg)
{
    Py_ssize_t n = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "readexactly size can not be less than zero");
        return NULL;
    }
    if (enter(self) < 0)
        return NULL;
    PyObject *r = PyBytes_FromStringAndSize(NULL, n);
    Py_ssize_t got = r ? fill(self, PyBytes_AS_STRING(r), (size_t)n) : -1;
    if (got < 0) {
        Py_CLEAR(r);
    } else if (got < n) {
        _PyBytes_Resize(&r, got);
        r = incomplete(r, n);
    }
    leave(self);
    return r;
}

/* A separator that begins in the bytes already moved aside (acc) and ends in
 * the unread ones: returns the count of unread bytes up to its end, or 0. */
static size_t straddling(PyObject *acc, const char *needle, size_t nlen, pybuffer_t *self, size_t avail)
{
    if (!acc || nlen < 2 || avail == 0)
        return 0;
    size_t alen = (size_t)PyBytes_GET_SIZE(acc);
    size_t tail = alen < nlen - 1 ? alen : nlen - 1;
    size_t head = avail < nlen - 1 ? avail : nlen - 1;
    char *window = PyMem_Malloc(tail + head);
    if (!window)
        return 0;
    memcpy(window, PyBytes_AS_STRING(acc) + alen - tail, tail);
    stream_peek(STREAM(self), window + tail, head, 0);
    char *hit = memmem(window, tail + head, needle, nlen);
    size_t end = hit && (size_t)(hit - window) < tail ? (size_t)(hit - window) + nlen - tail : 0;
    PyMem_Free(window);
    return end;
}

static PyObject *pb_readuntil(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer sep = {0};
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "readuntil expected at most 1 argument");
        return NULL;
    }
    if (nargs == 1 && PyObject_GetBuffer(args[0], &sep, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *needle = nargs ? sep.buf : "\n";
    size_t nlen = nargs ? (size_t)sep.len : 1;
    PyObject *r = NULL;
    if (nlen == 0) {
        PyErr_SetString(PyExc_ValueError, "Separator should be at least one-byte string");
    } else if (enter(self) == 0) {
        PyObject *acc = NULL; /* consumed already: the writer waited for us */
        size_t have = 0, searched = 0, avail = stream_unread(STREAM(self)), cap = wait_cap(self);
        for (;;) {
            size_t end = straddling(acc, needle, nlen, self, avail);
            if (end) {
                r = join(acc, take_bytes(self, end));
                break;
            }
            int64_t at = stream_find(STREAM(self), needle, nlen, searched, avail);
            if (at >= 0) {
                r = join(acc, take_bytes(self, (size_t)at + nlen));
                break;
            }
            searched = avail >= nlen ? avail - nlen + 1 : 0;
            if (avail >= cap) { /* the writer waits for us: move it all aside */
                acc = join(acc, take_bytes(self, avail));
                have += avail;
                avail = searched = 0;
                if (!acc)
                    break;
            }
            size_t before = avail;
            if (wait_for(self, avail + 1, &avail) < 0) {
                unconsume(self, have);
                Py_CLEAR(acc);
                break;
            }
            if (avail == before) {
                r = incomplete(join(acc, take_bytes(self, avail)), -1);
                break;
            }
        }
        leave(self);
    }
    if (nargs)
        PyBuffer_Release(&sep);
    return r;
}

/* ------------------------------------------------------------ search, state */

static PyObject *pb_find(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "find(sub, start=0, end=None)");
        return NULL;
    }
    Py_ssize_t start = 0, end = PY_SSIZE_T_MAX;
    if (nargs > 1 && args[1] != Py_None &&
        (start = PyNumber_AsSsize_t(args[1], PyExc_OverflowError)) == -1 && PyErr_Occurred())
        return NULL;
    if (nargs > 2 && args[2] != Py_None &&
        (end = PyNumber_AsSsize_t(args[2], PyExc_OverflowError)) == -1 && PyErr_Occurred())
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    Py_buffer sub;
    if (PyObject_GetBuffer(args[0], &sub, PyBUF_SIMPLE) < 0)
        return NULL;
    /* Negative bounds count from the end of the available data, as bytes.find. */
    Py_ssize_t avail = (Py_ssize_t)stream_unread(STREAM(self));
    if (start < 0)
        start = start + avail < 0 ? 0 : start + avail;
    if (end < 0)
        end = end + avail < 0 ? 0 : end + avail;
    int64_t at;
    if (avail < NOGIL_COPY) {
        at = stream_find(STREAM(self), sub.buf, (size_t)sub.len, (size_t)start, (size_t)end);
    } else {
        Py_BEGIN_ALLOW_THREADS
        at = stream_find(STREAM(self), sub.buf, (size_t)sub.len, (size_t)start, (size_t)end);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&sub);
    return PyLong_FromLongLong(at);
}

static PyObject *pb_seek(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long offset;
    int whence = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "seek expected %s %d argument%s, got %zd",
                     nargs < 1 ? "at least" : "at most", nargs < 1 ? 1 : 2,
                     nargs < 1 ? "" : "s", nargs);
        return NULL;
    }
    offset = PyLong_AsLongLong(args[0]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    if (nargs == 2) {
        long w = PyLong_AsLong(args[1]);
        if (w == -1 && PyErr_Occurred())
            return NULL;
        if (w < INT_MIN || w > INT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
            return NULL;
        }
        whence = (int)w;
    }
    if (check_open(self) < 0)
        return NULL;
    if (!stream_seekable(STREAM(self))) {
        PyErr_SetString(unsupported_operation, "seek: this buffer does not keep consumed data");
        return NULL;
    }
    stream_info_t info;
    stream_info(STREAM(self), &info);
    long long pos;
    if (whence == 0) {
        pos = offset;
    } else if (whence == 1) {
        pos = (long long)info.read_pos + offset;
    } else if (whence == 2) {
        if (!info.eof) {
            PyErr_SetString(unsupported_operation, "SEEK_END needs the end of the stream: it is not closed yet");
            return NULL;
        }
        pos = (long long)info.written + offset;
    } else {
        PyErr_Format(PyExc_ValueError, "invalid whence (%d, should be 0, 1 or 2)", whence);
        return NULL;
    }
    if (pos < 0) {
        PyErr_Format(PyExc_ValueError, "negative seek value %lld", pos);
        return NULL;
    }
    if (enter(self) < 0) /* never move the position under a read in progress */
        return NULL;
    int moved = stream_seek(STREAM(self), (uint64_t)pos);
    leave(self);
    if (moved != STREAM_OK) {
        PyErr_Format(PyExc_ValueError, "cannot seek to %lld: not written yet", pos);
        return NULL;
    }
    return PyLong_FromLongLong(pos);
}

static PyObject *pb_tell(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(stream_tell(STREAM(self)));
}

static PyObject *pb_readable_amount(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    return PyLong_FromSize_t(stream_unread(STREAM(self)));
}

static PyObject *pb_at_eof(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(stream_at_eof(STREAM(self)));
}

static PyObject *pb_true(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *pb_false(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyObject *pb_seekable(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    return PyBool_FromLong(stream_seekable(STREAM(self)));
}

static PyObject *pb_unsupported(pybuffer_t *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyErr_SetString(unsupported_operation, "erlang.PyBuffer is read-only and has no file descriptor");
    return NULL;
}

static PyObject *pb_flush(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *pb_close(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    stream_reader_close(STREAM(self));
    Py_RETURN_NONE;
}

static PyObject *pb_enter(pybuffer_t *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    return Py_NewRef(self);
}

static PyObject *pb_exit(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return pb_close(self, NULL);
}

static PyObject *pb_get_closed(pybuffer_t *self, void *closure)
{
    (void)closure;
    stream_info_t info;
    stream_info(STREAM(self), &info);
    return PyBool_FromLong(info.reader_closed);
}

static PyObject *pb_get_mode(pybuffer_t *self, void *closure)
{
    (void)self;
    (void)closure;
    return PyUnicode_FromString("rb");
}

static Py_ssize_t pb_len(pybuffer_t *self)
{
    return (Py_ssize_t)stream_unread(STREAM(self));
}

static PyObject *pb_repr(pybuffer_t *self)
{
    stream_info_t i;
    stream_info(STREAM(self), &i);
    const char *state = i.aborted ? "aborted" : i.reader_closed ? "closed" : i.eof ? "eof" : "open";
    return PyUnicode_FromFormat("<erlang.PyBuffer %s written=%llu pos=%llu unread=%llu>", state,
                                (unsigned long long)i.written, (unsigned long long)i.read_pos,
                                (unsigned long long)i.unread);
}

/* ------------------------------------------------------------ buffer protocol */

static int pb_getbuffer(pybuffer_t *self, Py_buffer *view, int flags)
{
    if (check_open(self) < 0)
        return -1;
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "erlang.PyBuffer is read-only");
        view->obj = NULL;
        return -1;
    }
    const void *ptr;
    size_t len;
    stream_pin_t *pin;
    int status = stream_pin_unread(STREAM(self), &ptr, &len, &pin);
    if (status != STREAM_OK) {
        raise_status(self, status);
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, (void *)ptr, (Py_ssize_t)len, 1, flags) < 0) {
        stream_unpin(STREAM(self), pin);
        return -1;
    }
    view->internal = pin;
    return 0;
}

static void pb_releasebuffer(pybuffer_t *self, Py_buffer *view)
{
    stream_unpin(STREAM(self), view->internal);
}

/* ------------------------------------------------------------ readview */

/* What a readview() memoryview exports: bytes pinned in the stream, the pin
 * dropped when the last view of them is released.  It keeps the resource
 * (so the stream) alive until then.  Not reachable from Python by name. */
typedef struct {
    PyObject_HEAD
    buffer_t *buf;      /* a kept reference, or NULL before the pin */
    stream_pin_t *pin;
    const void *ptr;
    size_t len;
} chunk_view_t;

static int cv_getbuffer(chunk_view_t *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, (void *)self->ptr, (Py_ssize_t)self->len, 1, flags);
}

static void cv_dealloc(chunk_view_t *self)
{
    PyTypeObject *type = Py_TYPE(self);
    if (self->buf) {
        stream_unpin(self->buf->stream, self->pin);
        enif_release_resource(self->buf);
    }
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyType_Slot cv_slots[] = {
    {Py_tp_dealloc, cv_dealloc},
    {Py_bf_getbuffer, cv_getbuffer},
    {Py_tp_doc, "Bytes of an erlang.PyBuffer held for readview()'s memoryviews."},
    {0, NULL},
};

static PyType_Spec cv_spec = {"erlang.PyBufferChunk", sizeof(chunk_view_t), 0,
                              Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
                                  Py_TPFLAGS_DISALLOW_INSTANTIATION,
                              cv_slots};

/* Up to size bytes (all of the chunk if negative) as they lie in one written
 * chunk, consumed, as a read-only memoryview: no copy, no merge.  Blocks for
 * one byte as read1(); an empty view at EOF. */
static PyObject *pb_readview(pybuffer_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n;
    size_t avail;
    if (parse_size(args, nargs, "readview", &n) < 0 || enter(self) < 0)
        return NULL;
    PyObject *r = NULL;
    chunk_view_t *cv = NULL;
    if (n != 0 && wait_for(self, 1, &avail) < 0)
        goto done;
    /* the holder first: once bytes are consumed nothing else may fail but
     * the memoryview itself */
    if (!(cv = PyObject_New(chunk_view_t, (PyTypeObject *)chunk_view_type)))
        goto done;
    cv->buf = NULL;
    cv->pin = NULL;
    int status = stream_read_pinned(STREAM(self), n < 0 ? SIZE_MAX : (size_t)n, &cv->ptr, &cv->len, &cv->pin);
    if (status != STREAM_OK) {
        raise_status(self, status);
        goto done;
    }
    enif_keep_resource(self->buf);
    cv->buf = self->buf;
    if (!(r = PyMemoryView_FromObject((PyObject *)cv)))
        unconsume(self, cv->len);
done:
    Py_XDECREF(cv);
    leave(self);
    return r;
}

/* ------------------------------------------------------------ the type */

static void pb_dealloc(pybuffer_t *self)
{
    PyTypeObject *type = Py_TYPE(self);
    if (self->buf)
        enif_release_resource(self->buf);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL

static PyMethodDef pb_methods[] = {
    {"read", FASTCALL(pb_read), "read($self, size=-1, /)\n--\n\nRead size bytes (all to EOF if negative or None), blocking until they are there."},
    {"read1", FASTCALL(pb_read1), "read1($self, size=-1, /)\n--\n\nRead what is available (at least one byte unless EOF), at most size."},
    {"readinto", (PyCFunction)pb_readinto, METH_O, "readinto($self, buffer, /)\n--\n\nFill buffer, blocking until full or EOF; return the count."},
    {"readinto1", (PyCFunction)pb_readinto1, METH_O, "readinto1($self, buffer, /)\n--\n\nCopy what is available into buffer; return the count."},
    {"readall", (PyCFunction)pb_readall, METH_NOARGS, "readall($self, /)\n--\n\nRead to EOF."},
    {"peek", FASTCALL(pb_peek), "peek($self, size=0, /)\n--\n\nReturn available bytes (at most size if positive) without consuming them."},
    {"readline", FASTCALL(pb_readline), "readline($self, size=-1, /)\n--\n\nRead one line, at most size bytes; line_limit applies."},
    {"readlines", FASTCALL(pb_readlines), "readlines($self, hint=-1, /)\n--\n\nRead lines until EOF or hint bytes."},
    {"read_nonblock", FASTCALL(pb_read_nonblock), "read_nonblock($self, size=-1, /)\n--\n\nRead what is available now, never blocking."},
    {"readable_amount", (PyCFunction)pb_readable_amount, METH_NOARGS, "readable_amount($self, /)\n--\n\nBytes readable without blocking."},
    {"at_eof", (PyCFunction)pb_at_eof, METH_NOARGS, "at_eof($self, /)\n--\n\nTrue when closed by the writer and all read."},
    {"readuntil", FASTCALL(pb_readuntil), "readuntil($self, separator=b'\\n', /)\n--\n\nRead up to and including separator; IncompleteReadError on EOF first."},
    {"readexactly", (PyCFunction)pb_readexactly, METH_O, "readexactly($self, n, /)\n--\n\nRead exactly n bytes; IncompleteReadError on EOF first."},
    {"readview", FASTCALL(pb_readview), "readview($self, size=-1, /)\n--\n\nTake up to size bytes as they lie in one written chunk, without copying, as a read-only memoryview; blocks as read1(); an empty view at EOF."},
    {"find", FASTCALL(pb_find), "find($self, sub, start=0, end=None, /)\n--\n\nIndex of sub in the unread bytes available now, relative to the read position, or -1."},
    {"seek", FASTCALL(pb_seek), "seek($self, offset, whence=0, /)\n--\n\nMove the read position; positions count from the first byte written."},
    {"tell", (PyCFunction)pb_tell, METH_NOARGS, "tell($self, /)\n--\n\nThe read position."},
    {"readable", (PyCFunction)pb_true, METH_NOARGS, "readable($self, /)\n--\n\nTrue."},
    {"writable", (PyCFunction)pb_false, METH_NOARGS, "writable($self, /)\n--\n\nFalse."},
    {"seekable", (PyCFunction)pb_seekable, METH_NOARGS, "seekable($self, /)\n--\n\nTrue when consumed data is kept."},
    {"isatty", (PyCFunction)pb_false, METH_NOARGS, "isatty($self, /)\n--\n\nFalse."},
    {"fileno", (PyCFunction)pb_unsupported, METH_NOARGS, "fileno($self, /)\n--\n\nUnsupported."},
    {"write", (PyCFunction)pb_unsupported, METH_O, "write($self, b, /)\n--\n\nUnsupported: written from Erlang."},
    {"flush", (PyCFunction)pb_flush, METH_NOARGS, "flush($self, /)\n--\n\nNothing to flush."},
    {"close", (PyCFunction)pb_close, METH_NOARGS, "close($self, /)\n--\n\nClose for reading; later Erlang writes get {error, closed}."},
    {"async_reader", (PyCFunction)(void (*)(void))erlpy_pybuffer_async_reader, METH_VARARGS | METH_KEYWORDS,
     "async_reader($self, /, limit=65536)\n--\n\nAn asyncio.StreamReader-compatible reader of this buffer (docs/buffer.md)."},
    {"__enter__", (PyCFunction)pb_enter, METH_NOARGS, NULL},
    {"__exit__", FASTCALL(pb_exit), NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pb_getset[] = {
    {"closed", (getter)pb_get_closed, NULL, "True after close().", NULL},
    {"mode", (getter)pb_get_mode, NULL, "'rb'.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot pb_slots[] = {
    {Py_tp_dealloc, pb_dealloc},
    {Py_tp_repr, pb_repr},
    {Py_tp_iter, pb_iter},
    {Py_tp_iternext, pb_iternext},
    {Py_tp_methods, pb_methods},
    {Py_tp_getset, pb_getset},
    {Py_sq_length, pb_len},
    {Py_bf_getbuffer, pb_getbuffer},
    {Py_bf_releasebuffer, pb_releasebuffer},
    {Py_tp_doc, "A stream of bytes written by Erlang (py_buffer), read as a binary file."},
    {0, NULL},
};

static PyType_Spec pb_spec = {"erlang.PyBuffer", sizeof(pybuffer_t), 0,
                              Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
                                  Py_TPFLAGS_DISALLOW_INSTANTIATION,
                              pb_slots};

static const char incomplete_src[] =
    "class IncompleteReadError(EOFError):\n"
    "    '''The stream ended before readexactly()/readuntil() were satisfied.'''\n"
    "    def __init__(self, partial, expected):\n"
    "        r = 'undefined' if expected is None or expected < 0 else repr(expected)\n"
    "        super().__init__(f'{len(partial)} bytes read on a total of {r} expected bytes')\n"
    "        self.partial = partial\n"
    "        self.expected = None if expected is None or expected < 0 else expected\n"
    "    def __reduce__(self):\n"
    "        return type(self), (self.partial, self.expected)\n";

int erlpy_buffer_type_init(PyObject *module)
{
    PyObject *ns = PyDict_New(), *io = NULL, *r = NULL;
    int rc = -1;
    if (!ns || PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0 ||
        PyDict_SetItemString(ns, "__name__", PyUnicode_FromString("erlang")) < 0)
        goto done;
    if (!(r = PyRun_String(incomplete_src, Py_file_input, ns, ns)))
        goto done;
    incomplete_read_error = PyDict_GetItemString(ns, "IncompleteReadError");
    if (!incomplete_read_error || PyModule_AddObjectRef(module, "IncompleteReadError", incomplete_read_error) < 0)
        goto done;
    Py_INCREF(incomplete_read_error);
    if (!(io = PyImport_ImportModule("io")) ||
        !(unsupported_operation = PyObject_GetAttrString(io, "UnsupportedOperation")))
        goto done;
    if (!(chunk_view_type = PyType_FromSpec(&cv_spec)))
        goto done;
    PY.buffer_type = PyType_FromSpec(&pb_spec);
    if (!PY.buffer_type || PyModule_AddObjectRef(module, "PyBuffer", PY.buffer_type) < 0)
        goto done;
    /* isinstance(buf, io.BufferedIOBase) holds, as for any binary reader. */
    Py_XDECREF(r);
    PyObject *base = PyObject_GetAttrString(io, "BufferedIOBase");
    r = base ? PyObject_CallMethod(base, "register", "O", PY.buffer_type) : NULL;
    Py_XDECREF(base);
    rc = r && erlpy_waker_type_init(module) == 0 ? 0 : -1;
done:
    Py_XDECREF(r);
    Py_XDECREF(io);
    Py_XDECREF(ns);
    return rc;
}

/* ------------------------------------------------------------ for buffer_wake.c */

buffer_t *erlpy_pybuffer_get(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, (PyTypeObject *)PY.buffer_type)) {
        PyErr_Format(PyExc_TypeError, "expected an erlang.PyBuffer, not %.200s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return ((pybuffer_t *)obj)->buf;
}

PyObject *erlpy_pybuffer_raise(PyObject *obj, int status)
{
    return raise_status((pybuffer_t *)obj, status);
}

/* ------------------------------------------------------------ conversion hooks */

PyObject *erlpy_buffer_to_py(ErlNifEnv *env, ERL_NIF_TERM term, int *is_buffer)
{
    buffer_t *buf;
    *is_buffer = enif_get_resource(env, term, ERLPY_BUFFER_RT, (void **)&buf);
    if (!*is_buffer)
        return NULL;
    pybuffer_t *self = PyObject_New(pybuffer_t, (PyTypeObject *)PY.buffer_type);
    if (!self)
        return NULL;
    enif_keep_resource(buf);
    self->buf = buf;
    return (PyObject *)self;
}

int erlpy_buffer_from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    if (!PY.buffer_type || !PyObject_TypeCheck(obj, (PyTypeObject *)PY.buffer_type))
        return 0;
    *out = enif_make_resource(env, ((pybuffer_t *)obj)->buf);
    return 1;
}
