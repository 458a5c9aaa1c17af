/* workers.h - the Python side of erlpy's threads.
 *
 * The janitor (janitor.c) owns the interpreter's main thread, which raises
 * timeouts in workers and never runs Python code, and the reaper threads
 * that drop references released by Erlang destructors.  Worker threads run
 * calls; each is one context (py:context(N)).  Results go back to the caller
 * with enif_send.
 *
 * Lock order: pool lock -> janitor lock, pool lock -> a stream's lock; the
 * janitor and stream locks are leaves; no erlpy lock is held while taking
 * the GIL.
 */
#ifndef ERLPY_WORKERS_H
#define ERLPY_WORKERS_H

#include "erlpy.h"
#include "stream.h"

typedef struct janitor_item janitor_item_t;
typedef struct job job_t;

/* Work for a janitor thread: run(task) is called with the GIL held.
 * Embedded in its owner so posting never allocates. */
typedef struct janitor_task {
    struct janitor_task *next; /* guarded by the janitor lock while queued */
    void (*run)(struct janitor_task *task);
} janitor_task_t;

/* Any thread, no GIL, never blocks or allocates: run(task) on the
 * interrupter thread, which runs no Python code, so it never waits behind a
 * slow __del__ or a stuck call.  run() must only raise exceptions in threads
 * (PyThreadState_SetAsyncExc) or do equally bounded work. */
void janitor_interrupt(janitor_task_t *task);

/* Starts the janitor thread, which initialises Python with `python_path` (a
 * NUL-separated, double-NUL-terminated list of dirs put first on sys.path).
 * Waits for the interpreter; returns 0, or -1 with a message in err. */
int janitor_start(const char *python_path, char *err, size_t errlen);

/* Wraps a new reference to obj (GIL held). */
janitor_item_t *janitor_item_new(PyObject *obj);
PyObject *janitor_item_object(janitor_item_t *item);
/* Any thread, no GIL, never blocks: the janitor drops the reference later. */
void janitor_release(janitor_item_t *item);

/* NIFs (the function table lives in erlpy_nif.c). */
ERL_NIF_TERM workers_start_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM workers_stop_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM workers_submit_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM workers_cancel_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM workers_info_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM workers_gate_new_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM workers_gate_info_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
int workers_job_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags);
int erlpy_object_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags);

/* stream_wait for Python code: called with the GIL, waits without it.  On a
 * worker, a cancel of the running job (timeout, dead caller) ends the wait
 * at once with STREAM_EINTERRUPTED, and the caller raises CallTimeout (the
 * only one the job gets).  Sets w->interrupted and w->arg. */
int worker_stream_wait(stream_t *s, size_t want, stream_waiter_t *w, size_t *avail);

/* The context number (1-based) of the worker running on this thread; 0 on
 * any other thread. */
int worker_context(void);

#endif
