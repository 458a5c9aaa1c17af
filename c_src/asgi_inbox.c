/* asgi_inbox.c - an event loop's inbox: the way Erlang processes hand work
 * (a new request, a credit, a disconnect, a cancel, a stop) to an asyncio
 * loop that runs for ever in a worker thread and so takes no more jobs.
 *
 * inbox_push (a NIF, on the caller's scheduler, no GIL) copies the term
 * into the inbox's environment under the inbox lock and, when the queue was
 * empty, writes the eventfd of the loop's erlang._Waker (buffer_wake.c), so
 * one descriptor wakes the loop for buffer reads and for new work alike.
 * The loop (python/erlpy_asgi.py) then calls _Inbox.drain(), which swaps the
 * environment out under the lock and converts the terms with the GIL and
 * without the lock.  A push may also monitor the caller: its death queues
 * {down, Pid}, so the loop cancels what that process was waiting for.
 *
 * Lock: the inbox lock guards every mutable field; a leaf (nothing else is
 * taken under it; write() on the eventfd never blocks).  The waker is held
 * by a counted reference, so its eventfd stays open while the inbox may
 * write it. */
#include <string.h>
#include <unistd.h>

#include "asgi_inbox.h"
#include "buffer_nif.h"
#include "convert.h"

typedef struct {
    pthread_mutex_t lock; /* a leaf; guards the fields below */
    ErlNifEnv *env;       /* guarded by lock: holds items */
    ERL_NIF_TERM items;   /* guarded by lock: queued terms, newest first */
    size_t count;         /* guarded by lock: length of items */
    waker_t *waker;       /* guarded by lock: counted; NULL until attached */
    int closed;           /* guarded by lock: the loop is gone, pushes fail */
} inbox_t;

static ErlNifResourceType *INBOX_RT;

static void inbox_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    inbox_t *in = obj;
    if (!in->env) /* inbox_new failed half way */
        return;
    enif_free_env(in->env);
    if (in->waker)
        erlpy_waker_release(in->waker);
    pthread_mutex_destroy(&in->lock);
}

/* One eventfd write per batch: the loop drains the whole queue. */
static void wake_locked(inbox_t *in)
{
    if (in->waker && in->count == 1) {
        uint64_t one = 1;
        ssize_t n = write(erlpy_waker_fd(in->waker), &one, sizeof one);
        (void)n; /* EAGAIN only with the counter at 2^64 - 2: still readable */
    }
}

/* Queues a copy of term; 0, or -1 when the inbox is closed. */
static int push(inbox_t *in, ERL_NIF_TERM term)
{
    int rc = 0;
    pthread_mutex_lock(&in->lock);
    if (in->closed) {
        rc = -1;
    } else {
        in->items = enif_make_list_cell(in->env, enif_make_copy(in->env, term), in->items);
        in->count++;
        wake_locked(in);
    }
    pthread_mutex_unlock(&in->lock);
    return rc;
}

/* A process that pushed with `monitor` died: the loop hears {down, Pid}. */
static void inbox_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    (void)env;
    (void)mon;
    ErlNifEnv *tmp = enif_alloc_env();
    if (!tmp)
        return; /* the request's own timeout is then its way out */
    push(obj, enif_make_tuple2(tmp, enif_make_atom(tmp, "down"), enif_make_pid(tmp, pid)));
    enif_free_env(tmp);
}

int inbox_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit init = {.dtor = inbox_dtor, .down = inbox_down};
    INBOX_RT = enif_open_resource_type_x(env, "erlpy_inbox", &init, flags, NULL);
    return INBOX_RT ? 0 : -1;
}

/* ------------------------------------------------------------ NIFs */

/* inbox_new() -> {ok, Inbox} | {error, enomem} */
ERL_NIF_TERM inbox_new_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    inbox_t *in = enif_alloc_resource(INBOX_RT, sizeof *in);
    if (!in)
        return erlpy_make_error(env, ATOMS.enomem);
    memset(in, 0, sizeof *in);
    ErlNifEnv *items_env = enif_alloc_env();
    if (!items_env || pthread_mutex_init(&in->lock, NULL) != 0) {
        if (items_env)
            enif_free_env(items_env);
        enif_release_resource(in);
        return erlpy_make_error(env, ATOMS.enomem);
    }
    in->env = items_env;
    in->items = enif_make_list(in->env, 0);
    ERL_NIF_TERM term = enif_make_resource(env, in);
    enif_release_resource(in);
    return enif_make_tuple2(env, ATOMS.ok, term);
}

/* inbox_push(Inbox, Term, Monitor) -> ok | {error, closed}.  With Monitor
 * true the caller is monitored (once is enough: the caller remembers). */
ERL_NIF_TERM inbox_push_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    inbox_t *in;
    if (!enif_get_resource(env, argv[0], INBOX_RT, (void **)&in) ||
        (!enif_is_identical(argv[2], ATOMS.true_) && !enif_is_identical(argv[2], ATOMS.false_)))
        return enif_make_badarg(env);
    if (enif_is_identical(argv[2], ATOMS.true_)) {
        ErlNifPid self;
        ErlNifMonitor mon;
        enif_self(env, &self);
        if (enif_monitor_process(env, in, &self, &mon) != 0)
            return enif_make_badarg(env); /* cannot happen: the caller runs this */
    }
    return push(in, argv[1]) == 0 ? ATOMS.ok : erlpy_make_error(env, ATOMS.closed);
}

/* ------------------------------------------------------------ erlang._Inbox */

typedef struct {
    PyObject_HEAD
    inbox_t *in; /* a kept resource reference */
} inbox_object;

static void close_inbox(inbox_t *in)
{
    pthread_mutex_lock(&in->lock);
    in->closed = 1;
    pthread_mutex_unlock(&in->lock);
}

/* _Inbox(term): the inbox behind the erlang.Term that py_asgi passed. */
static PyObject *inbox_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *term_obj;
    if ((kw && PyDict_GET_SIZE(kw)) || !PyArg_ParseTuple(args, "O:_Inbox", &term_obj))
        return NULL;
    ErlNifEnv *tmp = enif_alloc_env();
    if (!tmp)
        return PyErr_NoMemory();
    ERL_NIF_TERM term;
    inbox_t *in = NULL;
    if (!erlpy_term_check(term_obj, tmp, &term) || !enif_get_resource(tmp, term, INBOX_RT, (void **)&in)) {
        enif_free_env(tmp);
        PyErr_SetString(PyExc_TypeError, "_Inbox() takes an inbox made by py_nif:inbox_new()");
        return NULL;
    }
    enif_keep_resource(in);
    enif_free_env(tmp);
    inbox_object *self = (inbox_object *)type->tp_alloc(type, 0);
    if (!self) {
        enif_release_resource(in);
        return NULL;
    }
    self->in = in;
    return (PyObject *)self;
}

static void inbox_dealloc(inbox_object *self)
{
    PyTypeObject *type = Py_TYPE(self);
    if (self->in) {
        close_inbox(self->in); /* nobody drains it any more */
        enif_release_resource(self->in);
    }
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* attach(waker): pushes wake the loop through this erlang._Waker's eventfd. */
static PyObject *inbox_attach(inbox_object *self, PyObject *arg)
{
    waker_t *w = erlpy_waker_acquire(arg);
    if (!w)
        return NULL;
    inbox_t *in = self->in;
    pthread_mutex_lock(&in->lock);
    waker_t *old = in->waker;
    in->waker = w;
    if (in->count) { /* pushed before the loop was there */
        uint64_t one = 1;
        ssize_t n = write(erlpy_waker_fd(w), &one, sizeof one);
        (void)n;
    }
    pthread_mutex_unlock(&in->lock);
    if (old)
        erlpy_waker_release(old);
    Py_RETURN_NONE;
}

/* Takes the queued terms, oldest first, as Python objects; with `close`
 * the inbox refuses later pushes. */
static PyObject *take(inbox_object *self, int close)
{
    inbox_t *in = self->in;
    ErlNifEnv *fresh = enif_alloc_env();
    if (!fresh)
        return PyErr_NoMemory();
    pthread_mutex_lock(&in->lock);
    ErlNifEnv *env = in->env;
    ERL_NIF_TERM items = in->items;
    size_t count = in->count;
    in->env = fresh;
    in->items = enif_make_list(fresh, 0);
    in->count = 0;
    in->closed |= close;
    pthread_mutex_unlock(&in->lock);
    PyObject *list = PyList_New((Py_ssize_t)count);
    ERL_NIF_TERM head;
    for (Py_ssize_t i = (Py_ssize_t)count - 1; list && enif_get_list_cell(env, items, &head, &items); i--) {
        PyObject *item = erlpy_to_py(env, head);
        if (!item) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, item);
    }
    enif_free_env(env);
    return list;
}

static PyObject *inbox_drain(inbox_object *self, PyObject *unused)
{
    (void)unused;
    return take(self, 0);
}

static PyObject *inbox_close(inbox_object *self, PyObject *unused)
{
    (void)unused;
    return take(self, 1);
}

static PyMethodDef inbox_methods[] = {
    {"attach", (PyCFunction)inbox_attach, METH_O, "attach(waker): wake the loop through this erlang._Waker."},
    {"drain", (PyCFunction)inbox_drain, METH_NOARGS, "drain(): the queued terms, oldest first."},
    {"close", (PyCFunction)inbox_close, METH_NOARGS, "close(): refuse later pushes; the queued terms."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot inbox_slots[] = {
    {Py_tp_new, inbox_new},
    {Py_tp_dealloc, inbox_dealloc},
    {Py_tp_methods, inbox_methods},
    {Py_tp_doc, "Private: the work queue of one ASGI event loop (python/erlpy_asgi.py)."},
    {0, NULL},
};

static PyType_Spec inbox_spec = {"erlang._Inbox", sizeof(inbox_object), 0,
                                 Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, inbox_slots};

int erlpy_inbox_type_init(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&inbox_spec);
    if (!type)
        return -1;
    int rc = PyModule_AddObjectRef(module, "_Inbox", type);
    Py_DECREF(type);
    return rc;
}
