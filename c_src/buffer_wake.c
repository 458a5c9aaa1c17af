/* buffer_wake.c - wakes an event loop when a py_buffer it waits on becomes
 * readable: erlang._Waker, one per loop, owns an eventfd that the loop
 * watches (loop.add_reader).  A coroutine that must wait registers with the
 * stream (stream_notify_ready); the writer's thread, wherever it runs and
 * without the GIL, moves the registration onto the waker's ready list and
 * writes the eventfd.  The loop then drains the list (python/erlpy_aio.py).
 * Nothing polls, and 10,000 waiting readers cost one fd and no thread.
 *
 * Ownership of a registration (wake_reg_t): the stream holds it while it is
 * pending; when it fires, the waker's ready list; drain() or a withdrawal
 * (stream_cancel_ready returning it) frees it.  Each registration counts a
 * reference to its waker, so a waker outlives what may still fire into it.
 *
 * Lock order: stream lock -> waker lock (the ready callback runs under the
 * stream lock).  The waker lock is a leaf; no stream function is called
 * while holding it. */
#include <stdatomic.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "asgi_inbox.h"
#include "buffer_nif.h"

typedef struct wake_reg wake_reg_t;

struct waker {
    pthread_mutex_t lock;  /* leaf; guards ready and closed */
    atomic_uint refs;      /* the Python object's + one per registration */
    int fd;                /* eventfd; set once, closed with the last reference */
    wake_reg_t *ready;     /* guarded by lock: fired, not drained yet */
    int closed;            /* guarded by lock: the Python object is gone */
};

struct wake_reg {
    wake_reg_t *next;      /* guarded by the waker lock once fired */
    waker_t *waker;        /* a counted reference */
    unsigned long long token;
};

typedef struct {
    PyObject_HEAD
    waker_t *w;
} waker_object;

static PyObject *waker_type; /* erlang._Waker; set once at module creation (GIL) */

static void waker_unref(waker_t *w)
{
    if (atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    close(w->fd);
    pthread_mutex_destroy(&w->lock);
    PyMem_RawFree(w);
}

static void reg_free(wake_reg_t *r)
{
    waker_t *w = r->waker;
    PyMem_RawFree(r);
    waker_unref(w);
}

/* The stream's ready callback: under the stream lock, any thread, no GIL. */
static void reg_fire(void *ctx)
{
    wake_reg_t *r = ctx;
    waker_t *w = r->waker;
    pthread_mutex_lock(&w->lock);
    if (w->closed) {
        pthread_mutex_unlock(&w->lock);
        reg_free(r); /* nobody will drain it */
        return;
    }
    int first = w->ready == NULL;
    r->next = w->ready;
    w->ready = r;
    if (first) { /* one write per batch: the loop drains the whole list */
        uint64_t one = 1;
        ssize_t n = write(w->fd, &one, sizeof one);
        (void)n; /* cannot fail short of a counter at 2^64 - 2 */
    }
    pthread_mutex_unlock(&w->lock);
}

/* ------------------------------------------------------------ erlang._Waker */

static PyObject *waker_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if ((kw && PyDict_GET_SIZE(kw)) || PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "_Waker() takes no arguments");
        return NULL;
    }
    waker_t *w = PyMem_RawCalloc(1, sizeof *w);
    if (!w)
        return PyErr_NoMemory();
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->fd < 0) {
        PyMem_RawFree(w);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (pthread_mutex_init(&w->lock, NULL) != 0) {
        close(w->fd);
        PyMem_RawFree(w);
        return PyErr_NoMemory();
    }
    atomic_init(&w->refs, 1);
    waker_object *self = (waker_object *)type->tp_alloc(type, 0);
    if (!self) {
        waker_unref(w);
        return NULL;
    }
    self->w = w;
    return (PyObject *)self;
}

static void waker_dealloc(waker_object *self)
{
    PyTypeObject *type = Py_TYPE(self);
    waker_t *w = self->w;
    if (w) {
        pthread_mutex_lock(&w->lock);
        w->closed = 1;
        wake_reg_t *r = w->ready;
        w->ready = NULL;
        pthread_mutex_unlock(&w->lock);
        while (r) {
            wake_reg_t *next = r->next;
            reg_free(r);
            r = next;
        }
        waker_unref(w);
    }
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *waker_fileno(waker_object *self, PyObject *unused)
{
    (void)unused;
    return PyLong_FromLong(self->w->fd);
}

/* poll(buf, want): the unread count if want bytes are there or the stream
 * ended cleanly; None if the caller must wait; the read's exception if the
 * stream was aborted, cut short or closed. */
static PyObject *waker_poll(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    Py_ssize_t want;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "poll(buf, want)");
        return NULL;
    }
    buffer_t *buf = erlpy_pybuffer_get(args[0]);
    if (!buf || ((want = PyNumber_AsSsize_t(args[1], PyExc_OverflowError)) == -1 && PyErr_Occurred()))
        return NULL;
    if (stream_reader_closed(buf->stream)) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed file.");
        return NULL;
    }
    if (stream_reader_enter(buf->stream) != STREAM_OK) {
        PyErr_SetString(PyExc_RuntimeError, "concurrent read of an erlang.PyBuffer from another thread");
        return NULL;
    }
    stream_waiter_t now = {0, NULL, NULL}; /* a deadline already passed: never sleeps */
    size_t avail;
    int status = stream_wait(buf->stream, want < 0 ? 0 : (size_t)want, &now, &avail);
    stream_reader_leave(buf->stream);
    if (status == STREAM_ETIMEDOUT)
        Py_RETURN_NONE;
    if (status != STREAM_OK)
        return erlpy_pybuffer_raise(args[0], status);
    return PyLong_FromSize_t(avail);
}

/* arm(buf, want, token): True if registered (token comes out of drain()
 * once want bytes are there or the stream ends), False if there is no need
 * to wait.  RuntimeError if a registration is already pending. */
static PyObject *waker_arm(waker_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t want;
    unsigned long long token;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "arm(buf, want, token)");
        return NULL;
    }
    buffer_t *buf = erlpy_pybuffer_get(args[0]);
    if (!buf || ((want = PyNumber_AsSsize_t(args[1], PyExc_OverflowError)) == -1 && PyErr_Occurred()))
        return NULL;
    if ((token = PyLong_AsUnsignedLongLong(args[2])) == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    wake_reg_t *r = PyMem_RawMalloc(sizeof *r);
    if (!r)
        return PyErr_NoMemory();
    r->next = NULL;
    r->waker = self->w;
    r->token = token;
    atomic_fetch_add(&self->w->refs, 1);
    buffer_reading(buf); /* e.g. time for an HTTP "100 Continue" */
    int armed = stream_notify_ready(buf->stream, want < 1 ? 1 : (size_t)want, reg_fire, r);
    if (armed == 1)
        Py_RETURN_TRUE;
    reg_free(r);
    if (armed < 0) {
        PyErr_SetString(PyExc_RuntimeError, "another event loop reader is waiting on this erlang.PyBuffer");
        return NULL;
    }
    Py_RETURN_FALSE;
}

/* disarm(buf): withdraws a pending registration (no-op if it fired). */
static PyObject *waker_disarm(waker_object *self, PyObject *arg)
{
    (void)self;
    buffer_t *buf = erlpy_pybuffer_get(arg);
    if (!buf)
        return NULL;
    wake_reg_t *r = stream_cancel_ready(buf->stream);
    if (r)
        reg_free(r);
    Py_RETURN_NONE;
}

/* drain(): the tokens of the registrations that fired since the last
 * drain; resets the eventfd. */
static PyObject *waker_drain(waker_object *self, PyObject *unused)
{
    (void)unused;
    waker_t *w = self->w;
    uint64_t count;
    pthread_mutex_lock(&w->lock);
    /* Read under the lock: a fire after it finds the list empty and writes
     * again, so no wake is lost. */
    ssize_t n = read(w->fd, &count, sizeof count);
    (void)n; /* EAGAIN when nothing was written: fine */
    wake_reg_t *r = w->ready;
    w->ready = NULL;
    pthread_mutex_unlock(&w->lock);
    PyObject *tokens = PyList_New(0);
    while (r) {
        wake_reg_t *next = r->next;
        PyObject *t = tokens ? PyLong_FromUnsignedLongLong(r->token) : NULL;
        if (!t || PyList_Append(tokens, t) < 0)
            Py_CLEAR(tokens);
        Py_XDECREF(t);
        reg_free(r);
        r = next;
    }
    return tokens;
}

/* params(buf): (read_timeout seconds or None, the most one wait may ask
 * for or None, line_limit or None). */
static PyObject *waker_params(PyObject *self, PyObject *arg)
{
    (void)self;
    buffer_t *buf = erlpy_pybuffer_get(arg);
    if (!buf)
        return NULL;
    PyObject *t = buf->read_timeout_ms >= 0 ? PyFloat_FromDouble((double)buf->read_timeout_ms / 1000.0)
                                            : Py_NewRef(Py_None);
    PyObject *c = buf->wait_cap != SIZE_MAX ? PyLong_FromSize_t(buf->wait_cap) : Py_NewRef(Py_None);
    PyObject *l = buf->line_limit ? PyLong_FromSize_t(buf->line_limit) : Py_NewRef(Py_None);
    PyObject *r = t && c && l ? PyTuple_Pack(3, t, c, l) : NULL;
    Py_XDECREF(t);
    Py_XDECREF(c);
    Py_XDECREF(l);
    return r;
}

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL

static PyMethodDef waker_methods[] = {
    {"fileno", (PyCFunction)waker_fileno, METH_NOARGS, "The eventfd the event loop watches."},
    {"poll", (PyCFunction)(void (*)(void))waker_poll, METH_FASTCALL | METH_STATIC, "poll(buf, want): unread count, or None when the caller must wait."},
    {"arm", FASTCALL(waker_arm), "arm(buf, want, token): register a wake-up; False if not needed."},
    {"disarm", (PyCFunction)waker_disarm, METH_O, "disarm(buf): withdraw a pending registration."},
    {"drain", (PyCFunction)waker_drain, METH_NOARGS, "drain(): tokens of the registrations that fired."},
    {"params", (PyCFunction)waker_params, METH_O | METH_STATIC, "params(buf): (read_timeout, wait_cap, line_limit)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot waker_slots[] = {
    {Py_tp_new, waker_new},
    {Py_tp_dealloc, waker_dealloc},
    {Py_tp_methods, waker_methods},
    {Py_tp_doc, "Private: wakes one event loop for erlang.PyBuffer.async_reader (python/erlpy_aio.py)."},
    {0, NULL},
};

static PyType_Spec waker_spec = {"erlang._Waker", sizeof(waker_object), 0,
                                 Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, waker_slots};

int erlpy_waker_type_init(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&waker_spec);
    if (!type)
        return -1;
    int rc = PyModule_AddObjectRef(module, "_Waker", type);
    if (rc == 0)
        waker_type = type; /* the module keeps it alive */
    Py_DECREF(type);
    return rc == 0 ? erlpy_inbox_type_init(module) : rc;
}

waker_t *erlpy_waker_acquire(PyObject *obj)
{
    if (!waker_type || !PyObject_TypeCheck(obj, (PyTypeObject *)waker_type)) {
        PyErr_SetString(PyExc_TypeError, "expected an erlang._Waker");
        return NULL;
    }
    waker_t *w = ((waker_object *)obj)->w;
    atomic_fetch_add(&w->refs, 1);
    return w;
}

int erlpy_waker_fd(const waker_t *w)
{
    return w->fd;
}

void erlpy_waker_release(waker_t *w)
{
    waker_unref(w);
}

/* PyBuffer.async_reader(limit=65536): erlpy_aio.BufferReader(self, ...). */
PyObject *erlpy_pybuffer_async_reader(PyObject *self, PyObject *args, PyObject *kw)
{
    PyObject *mod = PyImport_ImportModule("erlpy_aio");
    PyObject *cls = mod ? PyObject_GetAttrString(mod, "BufferReader") : NULL;
    Py_XDECREF(mod);
    if (!cls)
        return NULL;
    PyObject *head = PyTuple_Pack(1, self);
    PyObject *all = head ? PySequence_Concat(head, args) : NULL;
    PyObject *r = all ? PyObject_Call(cls, all, kw) : NULL;
    Py_XDECREF(head);
    Py_XDECREF(all);
    Py_DECREF(cls);
    return r;
}
