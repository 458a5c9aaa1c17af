/* erlpy.h - what the NIF's files share: atoms, resource types, the runtime. */
#ifndef ERLPY_H
#define ERLPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

/* Atoms made once in load(); read-only afterwards. */
typedef struct {
    ERL_NIF_TERM ok, error, true_, false_, none, undefined, badarg;
    ERL_NIF_TERM timeout, too_deep, not_started, no_context, enomem;
    ERL_NIF_TERM call, eval, exec, python, cancelled, done, nan, inf, neg_inf;
    ERL_NIF_TERM closed, overflow, aborted, writer_down, wait;
    ERL_NIF_TERM written, read_pos, unread, eof, waiting_readers, memory;
    ERL_NIF_TERM reader_closed, content_length, max_unread, low_watermark;
    ERL_NIF_TERM keep_consumed, line_limit, read_timeout, seekable;
    ERL_NIF_TERM busy, first, next;
} erlpy_atoms_t;
extern erlpy_atoms_t ATOMS;

/* Resource types, opened in load()/upgrade(). */
extern ErlNifResourceType *ERLPY_OBJECT_RT;  /* an opaque Python object handle */
extern ErlNifResourceType *ERLPY_JOB_RT;     /* one queued/running call */
extern ErlNifResourceType *ERLPY_BUFFER_RT;  /* a py_buffer */

/* Python objects of the `erlang` module, set once at interpreter start-up
 * (by the janitor thread, holding the GIL) and never changed afterwards. */
typedef struct {
    PyObject *module;             /* the `erlang` module */
    PyObject *atom_type;          /* erlang.Atom (str subclass) */
    PyObject *pid_type;           /* erlang.Pid */
    PyObject *term_type;          /* erlang.Term: any other Erlang term */
    PyObject *buffer_type;        /* erlang.PyBuffer */
    PyObject *call_timeout;       /* erlang.CallTimeout(TimeoutError) */
    PyObject *stream_aborted;     /* erlang.StreamAborted(ConnectionError) */
    PyObject *stream_incomplete;  /* erlang.StreamIncomplete(StreamAborted) */
    PyObject *read_timeout;       /* erlang.ReadTimeout(TimeoutError) */
    PyObject *line_too_long;      /* erlang.LineTooLong(ValueError) */
    PyObject *too_deep;           /* erlang.TermTooDeep(RecursionError) */
    PyObject *format_exception;   /* traceback.format_exception */
} erlpy_py_t;
extern erlpy_py_t PY;

/* Creates the `erlang` module (pymodule.c); called once, GIL held. */
PyObject *erlpy_pymodule_create(void);
/* Registers erlang.PyBuffer in the module (buffer_type.c); GIL held. */
int erlpy_buffer_type_init(PyObject *module);

/* erlang.Pid and erlang.Term objects (pymodule.c); GIL held. */
PyObject *erlpy_pid_new(const ErlNifPid *pid);
int erlpy_pid_check(PyObject *obj, ErlNifPid *pid);          /* 1 if obj is a Pid */
PyObject *erlpy_term_new(ErlNifEnv *env, ERL_NIF_TERM term);  /* copies the term */
int erlpy_term_check(PyObject *obj, ErlNifEnv *env, ERL_NIF_TERM *out); /* 1 if a Term */

ERL_NIF_TERM erlpy_make_error(ErlNifEnv *env, ERL_NIF_TERM reason);

/* erlang.send's forwarder for pids of other nodes (pymodule.c); any thread. */
void erlpy_set_forwarder(const ErlNifPid *pid);

#endif
