/* pymodule.c - the built-in Python module `erlang`: Atom, Pid, Term, the
 * exception classes and send().  Single interpreter: the types live in PY. */
#include <pthread.h>
#include <string.h>

#include "convert.h"
#include "workers.h"

/* ------------------------------------------------------------ Atom */

static PyObject *atom_repr(PyObject *self)
{
    PyObject *text = PyUnicode_Type.tp_repr(self);
    PyObject *r = text ? PyUnicode_FromFormat("Atom(%U)", text) : NULL;
    Py_XDECREF(text);
    return r;
}

static PyType_Slot atom_slots[] = {
    {Py_tp_repr, atom_repr},
    {Py_tp_doc, "An Erlang atom: a str that converts back to the same atom.\n"
                "Only atoms that already exist in the VM convert back."},
    {0, NULL},
};

static PyType_Spec atom_spec = {"erlang.Atom", 0, 0,
                                Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, atom_slots};

/* ------------------------------------------------------------ Pid */

typedef struct {
    PyObject_HEAD
    ErlNifPid pid;
} pid_object;

static PyObject *pid_repr(PyObject *self)
{
    char text[64];
    enif_snprintf(text, sizeof text, "<erlang.Pid %T>", enif_make_pid(NULL, &((pid_object *)self)->pid));
    return PyUnicode_FromString(text);
}

static Py_hash_t pid_hash(PyObject *self)
{
    Py_hash_t h = (Py_hash_t)enif_hash(ERL_NIF_INTERNAL_HASH, enif_make_pid(NULL, &((pid_object *)self)->pid), 0);
    return h == -1 ? -2 : h;
}

static PyObject *pid_richcompare(PyObject *a, PyObject *b, int op)
{
    ErlNifPid pb;
    if (!erlpy_pid_check(b, &pb) || (op != Py_EQ && op != Py_NE))
        Py_RETURN_NOTIMPLEMENTED;
    int eq = enif_compare_pids(&((pid_object *)a)->pid, &pb) == 0;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyType_Slot pid_slots[] = {
    {Py_tp_repr, pid_repr},
    {Py_tp_hash, pid_hash},
    {Py_tp_richcompare, pid_richcompare},
    {Py_tp_doc, "An Erlang process identifier; erlang.send(pid, term) sends to it."},
    {0, NULL},
};

static PyType_Spec pid_spec = {"erlang.Pid", sizeof(pid_object), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
                                   Py_TPFLAGS_DISALLOW_INSTANTIATION,
                               pid_slots};

PyObject *erlpy_pid_new(const ErlNifPid *pid)
{
    pid_object *self = PyObject_New(pid_object, (PyTypeObject *)PY.pid_type);
    if (self)
        self->pid = *pid;
    return (PyObject *)self;
}

int erlpy_pid_check(PyObject *obj, ErlNifPid *pid)
{
    if (!PyObject_TypeCheck(obj, (PyTypeObject *)PY.pid_type))
        return 0;
    *pid = ((pid_object *)obj)->pid;
    return 1;
}

/* ------------------------------------------------------------ Term */

/* Any Erlang term without a Python counterpart (references, funs, ports,
 * improper lists), kept in an environment of its own so it round-trips. */
typedef struct {
    PyObject_HEAD
    ErlNifEnv *env;
    ERL_NIF_TERM term;
} term_object;

static void term_dealloc(PyObject *self)
{
    term_object *t = (term_object *)self;
    PyTypeObject *type = Py_TYPE(self);
    if (t->env)
        enif_free_env(t->env);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *term_repr(PyObject *self)
{
    char text[256];
    enif_snprintf(text, sizeof text, "<erlang.Term %T>", ((term_object *)self)->term);
    return PyUnicode_FromString(text);
}

static Py_hash_t term_hash(PyObject *self)
{
    Py_hash_t h = (Py_hash_t)enif_hash(ERL_NIF_PHASH2, ((term_object *)self)->term, 0);
    return h == -1 ? -2 : h;
}

static PyObject *term_richcompare(PyObject *a, PyObject *b, int op)
{
    if (!PyObject_TypeCheck(b, (PyTypeObject *)PY.term_type) || (op != Py_EQ && op != Py_NE))
        Py_RETURN_NOTIMPLEMENTED;
    int eq = enif_compare(((term_object *)a)->term, ((term_object *)b)->term) == 0;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyType_Slot term_slots[] = {
    {Py_tp_dealloc, term_dealloc},
    {Py_tp_repr, term_repr},
    {Py_tp_hash, term_hash},
    {Py_tp_richcompare, term_richcompare},
    {Py_tp_doc, "An Erlang term with no Python counterpart (reference, fun, port, ...).\n"
                "Opaque: it converts back to the same term."},
    {0, NULL},
};

static PyType_Spec term_spec = {"erlang.Term", sizeof(term_object), 0,
                                Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
                                    Py_TPFLAGS_DISALLOW_INSTANTIATION,
                                term_slots};

PyObject *erlpy_term_new(ErlNifEnv *env, ERL_NIF_TERM term)
{
    term_object *self = PyObject_New(term_object, (PyTypeObject *)PY.term_type);
    if (!self)
        return NULL;
    self->env = enif_alloc_env();
    if (!self->env) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    (void)env; /* enif_make_copy reads any term, whatever env holds it */
    self->term = enif_make_copy(self->env, term);
    return (PyObject *)self;
}

int erlpy_term_check(PyObject *obj, ErlNifEnv *env, ERL_NIF_TERM *out)
{
    if (!PyObject_TypeCheck(obj, (PyTypeObject *)PY.term_type))
        return 0;
    *out = enif_make_copy(env, ((term_object *)obj)->term);
    return 1;
}

/* ------------------------------------------------------------ send */

/* The local process that forwards sends to pids of other nodes (a NIF can
 * send to local pids only): py_nodes_server, which sets it when it starts.
 * Guarded by forwarder_lock, a leaf lock held only to copy it. */
static pthread_mutex_t forwarder_lock = PTHREAD_MUTEX_INITIALIZER;
static ErlNifPid forwarder;
static int has_forwarder;

void erlpy_set_forwarder(const ErlNifPid *pid)
{
    pthread_mutex_lock(&forwarder_lock);
    forwarder = *pid;
    has_forwarder = 1;
    pthread_mutex_unlock(&forwarder_lock);
}

/* The pid to send to, with msg made ready in msg_env: a local pid as it
 * is; a pid of another node (an erlang.Term) through the forwarder, as
 * {erlpy_forward, Pid, Msg}.  0 with a Python exception otherwise. */
static int send_target(PyObject *to, ErlNifEnv *msg_env, ERL_NIF_TERM *msg, ErlNifPid *pid)
{
    if (erlpy_pid_check(to, pid))
        return 1;
    ERL_NIF_TERM remote;
    if (!erlpy_term_check(to, msg_env, &remote) || !enif_is_pid(msg_env, remote)) {
        PyErr_Format(PyExc_TypeError, "send() argument 1 must be erlang.Pid, not %.100s",
                     Py_TYPE(to)->tp_name);
        return 0;
    }
    pthread_mutex_lock(&forwarder_lock);
    int ok = has_forwarder;
    *pid = forwarder;
    pthread_mutex_unlock(&forwarder_lock);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "send(): no forwarder for pids of other nodes (erlpy not started)");
        return 0;
    }
    *msg = enif_make_tuple3(msg_env, enif_make_atom(msg_env, "erlpy_forward"), remote, *msg);
    return 1;
}

static PyObject *erlang_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    ErlNifPid pid;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "send expected 2 arguments, got %zd", nargs);
        return NULL;
    }
    ErlNifEnv *msg_env = enif_alloc_env();
    if (!msg_env)
        return PyErr_NoMemory();
    ERL_NIF_TERM msg;
    PyObject *result = NULL;
    if (erlpy_from_py(msg_env, args[1], &msg) == CONV_OK && send_target(args[0], msg_env, &msg, &pid)) {
        enif_send(NULL, &pid, msg_env, msg); /* like Erlang: sending to a dead pid is fine */
        result = Py_NewRef(Py_None);
    }
    enif_free_env(msg_env);
    return result;
}

/* The runner's thread: a response is advanced by jobs sent back to it. */
static PyObject *erlang_context(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLong(worker_context());
}

static PyMethodDef erlang_methods[] = {
    {"send", (PyCFunction)(void (*)(void))erlang_send, METH_FASTCALL,
     "send($module, pid, term, /)\n--\n\nSend term to an Erlang process, from any thread."},
    {"context", erlang_context, METH_NOARGS,
     "context($module, /)\n--\n\nThe number of the erlpy context (worker) running this thread, "
     "as py:context(N) takes it; 0 on any other thread."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef erlang_module = {
    PyModuleDef_HEAD_INIT, "erlang",
    "The Erlang VM hosting this interpreter (erlpy).", -1, erlang_methods,
    NULL, NULL, NULL, NULL,
};

/* Adds an exception class `erlang.<name>` deriving from base. */
static PyObject *add_exception(PyObject *module, const char *name, PyObject *base, const char *doc)
{
    char qualified[64];
    snprintf(qualified, sizeof qualified, "erlang.%s", name);
    PyObject *exc = PyErr_NewExceptionWithDoc(qualified, doc, base, NULL);
    if (exc && PyModule_AddObjectRef(module, name, exc) < 0)
        Py_CLEAR(exc);
    return exc;
}

static PyObject *add_type(PyObject *module, PyType_Spec *spec, PyObject *base)
{
    PyObject *type = PyType_FromSpecWithBases(spec, base);
    if (type && PyModule_AddObjectRef(module, strchr(spec->name, '.') + 1, type) < 0)
        Py_CLEAR(type);
    return type;
}

PyMODINIT_FUNC erlpy_pymodule_init(void)
{
    PyObject *m = PyModule_Create(&erlang_module);
    if (!m)
        return NULL;
    if (!(PY.atom_type = add_type(m, &atom_spec, (PyObject *)&PyUnicode_Type)) ||
        !(PY.pid_type = add_type(m, &pid_spec, NULL)) ||
        !(PY.term_type = add_type(m, &term_spec, NULL)) ||
        !(PY.call_timeout = add_exception(m, "CallTimeout", PyExc_TimeoutError,
                                          "The Erlang caller's timeout expired; the call is abandoned.")) ||
        !(PY.too_deep = add_exception(m, "TermTooDeep", PyExc_RecursionError,
                                      "A term is nested too deeply to convert.")) ||
        !(PY.stream_aborted = add_exception(m, "StreamAborted", PyExc_ConnectionError,
                                            "The buffer's writer aborted the stream or went away.")) ||
        !(PY.stream_incomplete = add_exception(m, "StreamIncomplete", PY.stream_aborted,
                                               "The stream ended before its declared length.")) ||
        !(PY.read_timeout = add_exception(m, "ReadTimeout", PyExc_TimeoutError,
                                          "A read waited longer than the buffer's read_timeout.")) ||
        !(PY.line_too_long = add_exception(m, "LineTooLong", PyExc_ValueError,
                                           "A line is longer than the buffer's line_limit.")) ||
        erlpy_buffer_type_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
