/* workers.h - the Python side of erlpy's threads.
 *
 * The janitor thread is the interpreter's main thread: it initialises Python,
 * then drops references released by Erlang destructors and raises timeouts in
 * workers.  Worker threads run calls; each is one context (py:context(N)).
 * Results go back to the caller with enif_send.
 *
 * Lock order: pool lock -> job lock is never nested the other way; janitor
 * lock is a leaf; no erlpy lock is held while taking the GIL.
 */
#ifndef ERLPY_WORKERS_H
#define ERLPY_WORKERS_H

#include "erlpy.h"

typedef struct janitor_item janitor_item_t;
typedef struct job job_t;

/* Work for the janitor: run(task) is called on the janitor thread with the
 * GIL held.  Embedded in its owner so posting never allocates. */
typedef struct janitor_task {
    struct janitor_task *next; /* guarded by the janitor lock while queued */
    void (*run)(struct janitor_task *task);
    int urgent;                /* run before the others (timeouts before decrefs,
                                * whose __del__ may take long); set once */
} janitor_task_t;

/* Any thread, no GIL, never blocks or allocates. */
void janitor_post(janitor_task_t *task);

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
int workers_job_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags);
int erlpy_object_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags);

/* For blocking waits on erlpy threads (stream_waiter_t.interrupted): non-zero
 * when the call running on this thread was cancelled (timed out). */
int worker_interrupted(void *unused);

/* The context number (1-based) of the worker running on this thread; 0 on
 * any other thread. */
int worker_context(void);

#endif
