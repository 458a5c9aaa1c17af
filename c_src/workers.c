/* workers.c - Python worker threads, the request queues, and the calls they run.
 *
 * Each worker is one context: jobs sent to context N run in order on worker N.
 * Jobs without a context go to a shared queue that any idle worker takes from.
 * A worker holds the GIL only while running a job; waiting for work happens on
 * its condition variable with the GIL released. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "convert.h"
#include "threads.h"
#include "stream.h"
#include "workers.h"

#define MAX_WORKERS 1024
#define SPIN_NS 50000    /* a worker out of work watches the queues at most this long before sleeping */
#define SPIN_MIN_NS 4000 /* and at least this long, so a quick caller is noticed again */
#define WORKER_STACK (16 << 20) /* deep conversions and Python recursion */

typedef enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_CANCELLED } job_state_t;

/* A job's place at its gate (none without one). */
typedef enum { GATE_NONE, GATE_WAITING, GATE_HOLDING } gate_place_t;

typedef struct worker worker_t;

/* A gate caps the jobs of one kind (an HTTP server's requests) that hold a
 * place at once: queued to run or running.  The others wait in the gate's
 * own queues, oldest first, later steps of admitted work (`next`) before
 * new work (`first`): what has started finishes first.  The thread that
 * frees a place (a finishing worker, a cancel) passes it to the next waiter
 * and queues that job to run, so a waiter costs no Erlang process a
 * wake-up.  A resource: each of its jobs holds a reference.  `cap` and
 * `max_waiting` are set once; the rest is guarded by P.lock. */
typedef struct gate {
    int cap, max_waiting;
    int holding;                     /* jobs holding a place */
    int waiting;                     /* jobs in the two queues below */
    job_t *next_head, *next_tail;    /* `next` jobs */
    job_t *first_head, *first_tail;  /* `first` jobs */
} gate_t;

static ErlNifResourceType *GATE_RT;

/* A job is a resource: the Erlang caller holds it (to cancel), and so does
 * whichever queue, worker or janitor task is handling it.  The job follows
 * its caller: the resource monitors the caller from submit to finish, and the
 * caller's death cancels the job as a timeout does (job_down). */
struct job {
    janitor_task_t interrupt; /* posted when a running job is cancelled */
    job_t *next;              /* queue link, guarded by P.lock */
    ErlNifEnv *env;           /* owns ref, request and the reply */
    ERL_NIF_TERM ref, request;
    ErlNifPid caller;
    ErlNifMonitor monitor;    /* on the caller; set in submit, removed by finish */
    int context;              /* 0 = any worker */
    gate_t *gate;             /* or NULL; a reference kept until the job goes */
    gate_place_t place;       /* at the gate; guarded by P.lock */
    int first;                /* submitted as `first` (which gate queue); set once */
    _Atomic int state;        /* job_state_t; changed under P.lock, read anywhere */
    worker_t *worker;         /* set under P.lock when the job starts */
    int raised;               /* CallTimeout raised in it, by a read or the
                               * interrupter: once is enough; guarded by the GIL */
    stream_t *waiting_on;     /* the stream a read of this job sleeps on, or NULL;
                               * guarded by P.lock (cancel wakes it under P.lock,
                               * so it cannot be freed meanwhile) */
};

struct worker {
    int index;             /* context number, 1-based; set once */
    pthread_cond_t wake;   /* signalled after P.lock is let go (the woken thread
                            * would only block on it); never destroyed while the
                            * pool lives, so a late signal is harmless */
    job_t *head, *tail;    /* this context's queue, guarded by P.lock */
    _Atomic int queued;    /* jobs in it: changed under P.lock, read by the spinner */
    int idle;              /* waiting for work, guarded by P.lock */
    int claimed;           /* woken for the shared queue and counted in
                            * P.looking until it looks; guarded by P.lock */
    unsigned long ident;   /* Python thread ident; set before the first job */
    job_t *current;        /* job being run, guarded by the GIL */
    PyObject *globals;     /* context namespace, guarded by the GIL */
    unsigned generation;   /* P.generation the namespace belongs to (GIL) */
};

/* The pool.  `lock` guards every field.  Lock order: P.lock before the
 * janitor lock and before a stream's lock (a cancel wakes a waiting read
 * while holding it); never held while taking the GIL. */
static struct {
    pthread_mutex_t lock;
    job_t *head, *tail;              /* jobs for any worker */
    _Atomic int queued;              /* jobs in it: changed under P.lock, read by the spinner */
    _Atomic int spinners;            /* workers spinning for work: 0 or 1 */
    _Atomic int64_t spin_ns;         /* how long the next spin may last; written by
                                      * the spinner only (it holds `spinners`) */
    int looking;                     /* workers of the shared queue on their way to
                                      * look at it under the lock (between two jobs,
                                      * or claimed by a wake-up): a job pushed
                                      * meanwhile needs no wake-up, they see it */
    _Atomic int running;             /* jobs being run: changed under P.lock, read by the spinner */
    int cpus;                        /* online CPUs; no spinning on one */
    worker_t *workers[MAX_WORKERS];  /* workers[i] is context i + 1 */
    int count;                       /* threads started; never shrinks */
    int contexts;                    /* contexts of the last start */
    int accepting;                   /* 1 between start and stop */
    unsigned generation;             /* bumped by each start: namespaces reset */
} P = {.lock = PTHREAD_MUTEX_INITIALIZER};

static PyObject *shared_globals;   /* namespace of calls without a context; GIL */
static unsigned shared_generation; /* P.generation it belongs to; GIL */

/* The job this thread is running, read only by this thread. */
static _Thread_local job_t *tls_job;
/* This thread's context number (worker index), 0 off the workers; set once. */
static _Thread_local int tls_context;

int worker_context(void)
{
    return tls_context;
}

/* ------------------------------------------------------------ job resource */

static void job_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    job_t *job = obj;
    if (job->env)
        enif_free_env(job->env);
    if (job->gate)
        enif_release_resource(job->gate);
}

static int job_cancel(ErlNifEnv *env, job_t *job);

/* The caller died: nobody waits for the reply, so the job goes (a queued one
 * is dropped, a running one interrupted), freeing its worker. */
static void job_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    (void)pid;
    (void)mon;
    job_cancel(env, obj);
}

int workers_job_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit init = {.dtor = job_dtor, .down = job_down};
    ERLPY_JOB_RT = enif_open_resource_type_x(env, "erlpy_job", &init, flags, NULL);
    /* Created on an upgrade too: an older library may not have had it. */
    GATE_RT = enif_open_resource_type(env, NULL, "erlpy_gate", NULL, flags | ERL_NIF_RT_CREATE, NULL);
    return ERLPY_JOB_RT && GATE_RT ? 0 : -1;
}

static int worker_interrupted(void *unused)
{
    (void)unused;
    return tls_job && atomic_load(&tls_job->state) == JOB_CANCELLED;
}

int worker_stream_wait(stream_t *s, size_t want, stream_waiter_t *w, size_t *avail)
{
    job_t *job = tls_job; /* NULL on threads that are not workers */
    w->interrupted = worker_interrupted;
    w->arg = NULL;
    PyThreadState *ts = PyEval_SaveThread();
    if (job) {
        pthread_mutex_lock(&P.lock);
        job->waiting_on = s;
        pthread_mutex_unlock(&P.lock);
    }
    /* A cancel before this point is seen by the first interrupted() call,
     * one after it wakes the stream. */
    int rc = stream_wait(s, want, w, avail);
    if (job) {
        pthread_mutex_lock(&P.lock);
        job->waiting_on = NULL;
        pthread_mutex_unlock(&P.lock);
    }
    PyEval_RestoreThread(ts);
    if (rc == STREAM_EINTERRUPTED && job && !job->raised) {
        /* The read raises CallTimeout itself: drop the interrupter's copy,
         * which would land later, in whatever handles this one. */
        job->raised = 1;
        PyThreadState_SetAsyncExc(job->worker->ident, NULL);
    }
    return rc;
}

/* ------------------------------------------------------------ running a job */

static PyObject *new_namespace(const char *name)
{
    PyObject *ns = PyDict_New();
    PyObject *modname = PyUnicode_FromString(name);
    if (!ns || !modname || PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0 ||
        PyDict_SetItemString(ns, "__name__", modname) < 0)
        Py_CLEAR(ns);
    Py_XDECREF(modname);
    return ns;
}

static PyObject *namespace_for(worker_t *w, job_t *job, unsigned generation)
{
    if (!job->context) {
        if (!shared_globals || shared_generation != generation) {
            Py_CLEAR(shared_globals);
            shared_globals = new_namespace("__erlpy__");
            shared_generation = generation;
        }
        return shared_globals;
    }
    if (!w->globals || w->generation != generation) {
        Py_CLEAR(w->globals);
        w->globals = new_namespace("__erlpy_context__");
        w->generation = generation;
    }
    return w->globals;
}

/* A binary as a Python str (UTF-8, strict). */
static PyObject *binary_to_str(ErlNifEnv *env, ERL_NIF_TERM term)
{
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, term, &bin)) {
        PyErr_SetString(PyExc_TypeError, "expected a binary");
        return NULL;
    }
    return PyUnicode_DecodeUTF8((const char *)bin.data, bin.size, "strict");
}

/* The module, from sys.modules when already imported (the common case). */
static PyObject *import_module(PyObject *name)
{
    PyObject *mod = PyImport_GetModule(name);
    if (mod || PyErr_Occurred())
        return mod;
    return PyImport_Import(name);
}

/* Imports a (dotted) module and walks a (dotted) attribute path. */
static PyObject *resolve_callable(ErlNifEnv *env, ERL_NIF_TERM mod, ERL_NIF_TERM fun)
{
    PyObject *modname = binary_to_str(env, mod);
    PyObject *obj = modname ? import_module(modname) : NULL;
    Py_XDECREF(modname);
    PyObject *path = obj ? binary_to_str(env, fun) : NULL;
    if (!path) {
        Py_XDECREF(obj);
        return NULL;
    }
    if (PyUnicode_FindChar(path, '.', 0, PyUnicode_GET_LENGTH(path), 1) < 0) {
        Py_SETREF(obj, PyObject_GetAttr(obj, path));
        Py_DECREF(path);
        return obj;
    }
    PyObject *dot = PyUnicode_FromOrdinal('.');
    PyObject *parts = dot ? PyUnicode_Split(path, dot, -1) : NULL;
    Py_XDECREF(dot);
    Py_DECREF(path);
    if (!parts) {
        Py_DECREF(obj);
        return NULL;
    }
    for (Py_ssize_t i = 0; obj && i < PyList_GET_SIZE(parts); i++)
        Py_SETREF(obj, PyObject_GetAttr(obj, PyList_GET_ITEM(parts, i)));
    Py_DECREF(parts);
    return obj;
}

static PyObject *run_call(ErlNifEnv *env, const ERL_NIF_TERM *req)
{
    PyObject *fn = resolve_callable(env, req[1], req[2]);
    PyObject *arglist = fn ? erlpy_to_py(env, req[3]) : NULL;
    PyObject *args = arglist ? PyList_AsTuple(arglist) : NULL;
    PyObject *kwargs = args ? erlpy_kwargs_to_py(env, req[4]) : NULL;
    PyObject *result = NULL;
    if (kwargs)
        result = PyObject_Call(fn, args, PyDict_GET_SIZE(kwargs) ? kwargs : NULL);
    Py_XDECREF(fn);
    Py_XDECREF(arglist);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return result;
}

/* Compiles and runs source text; `start` is Py_eval_input or Py_file_input. */
static PyObject *run_source(ErlNifEnv *env, ERL_NIF_TERM code, int start, PyObject *globals,
                            PyObject *locals)
{
    PyObject *src = binary_to_str(env, code);
    if (!src)
        return NULL;
    Py_ssize_t len;
    const char *text = PyUnicode_AsUTF8AndSize(src, &len);
    PyObject *result = NULL;
    if (text && (Py_ssize_t)strlen(text) != len)
        PyErr_SetString(PyExc_ValueError, "source code string cannot contain null bytes");
    else if (text)
        result = PyRun_String(text, start, globals, locals);
    Py_DECREF(src);
    return result;
}

static PyObject *run_eval(ErlNifEnv *env, const ERL_NIF_TERM *req, PyObject *globals)
{
    PyObject *locals = erlpy_kwargs_to_py(env, req[2]);
    if (!locals)
        return NULL;
    PyObject *result;
    if (PyDict_GET_SIZE(locals)) {
        /* One merged namespace, so comprehensions and lambdas see the locals. */
        PyObject *scope = PyDict_Copy(globals);
        result = scope && PyDict_Update(scope, locals) == 0
                     ? run_source(env, req[1], Py_eval_input, scope, scope)
                     : NULL;
        Py_XDECREF(scope);
    } else {
        result = run_source(env, req[1], Py_eval_input, globals, globals);
    }
    Py_DECREF(locals);
    return result;
}

/* Runs the job's request and returns the reply term, built in job->env. */
static ERL_NIF_TERM execute(worker_t *w, job_t *job, unsigned generation)
{
    ErlNifEnv *env = job->env;
    int arity;
    const ERL_NIF_TERM *req;
    enif_get_tuple(env, job->request, &arity, &req);
    PyObject *globals = namespace_for(w, job, generation);
    if (!globals)
        return erlpy_error_from_exception(env);
    PyObject *result;
    int is_exec = arity == 2;
    if (arity == 5)
        result = run_call(env, req);
    else if (arity == 3)
        result = run_eval(env, req, globals);
    else
        result = run_source(env, req[1], Py_file_input, globals, globals);
    if (!result)
        return erlpy_error_from_exception(env);
    ERL_NIF_TERM reply = ATOMS.ok;
    if (!is_exec) {
        ERL_NIF_TERM value;
        if (erlpy_from_py(env, result, &value) != CONV_OK)
            reply = erlpy_error_from_exception(env);
        else
            reply = enif_make_tuple2(env, ATOMS.ok, value);
    }
    Py_DECREF(result);
    return reply;
}

/* ------------------------------------------------------------ the threads */

static job_t *pop(job_t **head, job_t **tail)
{
    job_t *job = *head;
    if (job) {
        *head = job->next;
        if (!*head)
            *tail = NULL;
        job->next = NULL;
    }
    return job;
}

static void push(job_t **head, job_t **tail, job_t *job)
{
    job->next = NULL;
    if (*tail)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}


/* One worker at a time watches the queues for a moment before sleeping: a
 * caller in a request/reply loop sends its next call within microseconds,
 * and a condition-variable wake-up costs far more than that.  Not while
 * other jobs run: then the pool is busy, and a spinning thread would take a
 * CPU from them and from the BEAM (measured: 15% fewer WSGI requests/s on
 * 2 CPUs). */
static int spin_for_work(worker_t *w)
{
    int zero = 0;
    /* Only a worker that serves the shared queue may spin: submit() skips
     * waking anyone while a spinner is about.  (P.contexts changes only in
     * start(); a stale read just skips or shortens one spin.) */
    if (P.cpus < 2 || w->index > P.contexts || atomic_load(&P.running) > 0 ||
        !atomic_compare_exchange_strong(&P.spinners, &zero, 1))
        return 0;
    int64_t budget = atomic_load(&P.spin_ns), start = erlpy_now_ns(), now = start;
    int found;
    while (!(found = atomic_load(&w->queued) || atomic_load(&P.queued)) && now - start < budget) {
        cpu_relax();
        now = erlpy_now_ns();
    }
    /* Adaptive, as glibc's adaptive mutexes: a spin that found work makes
     * room for four times the wait it saw; one that found none halves the
     * budget.  A request/reply caller (a few microseconds between calls)
     * keeps it; HTTP requests arriving every ~100 us stop paying 50 us of
     * spinning for each (measured: a third of a worker's CPU per request). */
    int64_t next = found ? 4 * (now - start) + SPIN_MIN_NS : budget / 2;
    if (found && next < budget)
        next = budget;
    atomic_store(&P.spin_ns, next > SPIN_NS ? SPIN_NS : next < SPIN_MIN_NS ? SPIN_MIN_NS : next);
    return 1;
}

/* Picks one idle worker to wake for the shared queue, unless one spins or
 * is on its way to the queue already (it will take the job, and wake the
 * next worker if more are queued): a burst wakes workers one after the
 * other, not all at once, and a queue the running workers keep up with
 * wakes nobody.  Each thread wake-up costs more than a small job (see
 * docs/performance.md).  The caller signals the returned worker once it has
 * let go of P.lock. */
static worker_t *wake_idle_locked(void)
{
    if (atomic_load(&P.spinners) || P.looking > 0)
        return NULL;
    for (int i = 0; i < P.contexts; i++) {
        worker_t *w = P.workers[i];
        if (w->idle) {
            w->idle = 0;
            w->claimed = 1;
            P.looking++;
            return w;
        }
    }
    return NULL;
}

static void signal_worker(worker_t *w)
{
    if (w)
        pthread_cond_signal(&w->wake);
}

/* Queues a job to run: on its context, or for any worker.  Returns the
 * worker to signal once P.lock is let go, or NULL. */
static worker_t *enqueue_locked(job_t *job)
{
    if (job->context) {
        worker_t *w = P.workers[job->context - 1];
        push(&w->head, &w->tail, job);
        atomic_fetch_add(&w->queued, 1);
        return w->idle ? w : NULL;
    }
    push(&P.head, &P.tail, job);
    atomic_fetch_add(&P.queued, 1);
    return wake_idle_locked();
}

/* The job gives its place back: the gate's next waiter takes it and is
 * queued to run.  Returns the worker to signal, or NULL.  From a finishing
 * worker of the shared queue, a job for any worker wakes nobody: that
 * worker is counted in P.looking and takes it itself. */
static worker_t *gate_leave_locked(job_t *job)
{
    gate_t *g = job->gate;
    if (job->place != GATE_HOLDING)
        return NULL;
    job->place = GATE_NONE;
    job_t *next = pop(&g->next_head, &g->next_tail);
    if (!next)
        next = pop(&g->first_head, &g->first_tail);
    if (!next) {
        g->holding--;
        return NULL;
    }
    g->waiting--;
    next->place = GATE_HOLDING;
    return enqueue_locked(next);
}

/* Waits for the next job of this worker: its own queue first, then the shared
 * one (only while it is one of the contexts in use). */
static job_t *next_job(worker_t *w, unsigned *generation, int *looking)
{
    int spun = spin_for_work(w);
    pthread_mutex_lock(&P.lock);
    if (spun) /* under the lock: submit() decides whether to signal under it too */
        atomic_store(&P.spinners, 0);
    job_t *job;
    worker_t *wake = NULL;
    for (;;) {
        if (*looking) { /* here now: no longer on the way */
            P.looking--;
            *looking = 0;
        }
        job = pop(&w->head, &w->tail);
        if (job)
            atomic_fetch_sub(&w->queued, 1);
        else if (w->index <= P.contexts && (job = pop(&P.head, &P.tail)))
            atomic_fetch_sub(&P.queued, 1);
        /* More shared jobs (or one this worker passes over for its own, or
         * cannot serve): wake the next worker, or they wait for ever. */
        if (P.head)
            wake = wake_idle_locked();
        if (job)
            break;
        if (wake) { /* rare (a worker past P.contexts): not worth a later signal */
            pthread_cond_signal(&wake->wake);
            wake = NULL;
        }
        w->idle = 1;
        pthread_cond_wait(&w->wake, &P.lock);
        w->idle = 0;
        *looking = w->claimed; /* the waker counted this worker in P.looking */
        w->claimed = 0;
    }
    job->worker = w;
    atomic_fetch_add(&P.running, 1);
    atomic_store(&job->state, JOB_RUNNING);
    *generation = P.generation;
    pthread_mutex_unlock(&P.lock);
    signal_worker(wake);
    return job;
}

static void finish(job_t *job, ERL_NIF_TERM reply, worker_t *w, int *looking)
{
    enif_demonitor_process(NULL, job, &job->monitor); /* fails harmlessly if it fired */
    pthread_mutex_lock(&P.lock);
    atomic_fetch_sub(&P.running, 1);
    /* Counted as looking from before the reply goes out: a caller that
     * submits its next job at once finds this worker on its way. */
    if (w->index <= P.contexts) {
        P.looking++;
        *looking = 1;
    }
    int cancelled = atomic_load(&job->state) == JOB_CANCELLED;
    if (!cancelled)
        atomic_store(&job->state, JOB_DONE);
    worker_t *wake = gate_leave_locked(job);
    pthread_mutex_unlock(&P.lock);
    signal_worker(wake);
    if (!cancelled)
        enif_send(NULL, &job->caller, job->env, enif_make_tuple2(job->env, job->ref, reply));
    enif_release_resource(job);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    tls_context = w->index;
    char name[16]; /* seen in /proc/PID/task/TID/comm, top -H, bench_wsgi */
    snprintf(name, sizeof name, "erlpy-w%d", w->index);
    pthread_setname_np(pthread_self(), name);
    PyGILState_STATE gil = PyGILState_Ensure();
    (void)gil;
    w->ident = PyThread_get_thread_ident();
    PyThreadState *ts = PyEval_SaveThread();
    int looking = 0;
    for (;;) {
        unsigned generation;
        job_t *job = next_job(w, &generation, &looking);
        tls_job = job;
        PyEval_RestoreThread(ts);
        w->current = job; /* from here the janitor may raise CallTimeout in us */
        ERL_NIF_TERM reply = ATOMS.cancelled;
        if (atomic_load(&job->state) != JOB_CANCELLED)
            reply = execute(w, job, generation);
        w->current = NULL;
        if (atomic_load(&job->state) == JOB_CANCELLED)
            PyThreadState_SetAsyncExc(w->ident, NULL); /* a timeout that came too late */
        PyErr_Clear();
        ts = PyEval_SaveThread();
        tls_job = NULL;
        finish(job, reply, w, &looking);
    }
    return NULL;
}

static worker_t *worker_new(int index)
{
    worker_t *w = enif_alloc(sizeof *w);
    if (!w)
        return NULL;
    memset(w, 0, sizeof *w);
    w->index = index;
    if (pthread_cond_init(&w->wake, NULL) != 0) {
        enif_free(w);
        return NULL;
    }
    if (erlpy_thread_start(worker_main, w, WORKER_STACK) != 0) {
        pthread_cond_destroy(&w->wake);
        enif_free(w);
        return NULL;
    }
    return w;
}

/* ------------------------------------------------------------ timeouts */

/* Interrupter thread, GIL held: raise CallTimeout in the worker if it still
 * runs the job (the worker changes `current` only while holding the GIL). */
static void interrupt_run(janitor_task_t *task)
{
    job_t *job = (job_t *)task;
    worker_t *w = job->worker;
    if (w && w->current == job && !job->raised) {
        job->raised = 1;
        PyThreadState_SetAsyncExc(w->ident, PY.call_timeout);
    }
    enif_release_resource(job);
}

/* ------------------------------------------------------------ NIFs */

/* start(Contexts) -> ok | {error, enomem}.  Grows the pool to Contexts threads
 * and resets every namespace. */
ERL_NIF_TERM workers_start_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    int n;
    if (!enif_get_int(env, argv[0], &n) || n < 1 || n > MAX_WORKERS)
        return enif_make_badarg(env);
    ERL_NIF_TERM result = ATOMS.ok;
    pthread_mutex_lock(&P.lock);
    P.cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (!atomic_load(&P.spin_ns))
        atomic_store(&P.spin_ns, SPIN_NS);
    while (P.count < n) {
        worker_t *w = worker_new(P.count + 1);
        if (!w) {
            result = erlpy_make_error(env, ATOMS.enomem);
            break;
        }
        P.workers[P.count++] = w;
    }
    P.contexts = P.count < n ? P.count : n;
    P.accepting = 1;
    P.generation++;
    pthread_mutex_unlock(&P.lock);
    return result;
}

/* stop() -> ok.  Later submits get {error, not_started}; queued jobs still run. */
ERL_NIF_TERM workers_stop_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)env;
    (void)argc;
    (void)argv;
    pthread_mutex_lock(&P.lock);
    P.accepting = 0;
    pthread_mutex_unlock(&P.lock);
    return ATOMS.ok;
}

static int valid_request(ErlNifEnv *env, ERL_NIF_TERM request)
{
    int arity;
    const ERL_NIF_TERM *r;
    if (!enif_get_tuple(env, request, &arity, &r) || arity < 2 || !enif_is_binary(env, r[1]))
        return 0;
    if (arity == 5 && enif_is_identical(r[0], ATOMS.call)) /* {call, Module, Function, Args, Kwargs} */
        return enif_is_binary(env, r[2]) && enif_is_list(env, r[3]) && enif_is_map(env, r[4]);
    if (arity == 3 && enif_is_identical(r[0], ATOMS.eval)) /* {eval, Code, Locals} */
        return enif_is_map(env, r[2]);
    return arity == 2 && enif_is_identical(r[0], ATOMS.exec); /* {exec, Code} */
}

/* Copying a request into the job's environment is proportional to its size.
 * Up to this many term cells (a few tens of microseconds of copying) it is
 * done on the calling scheduler; a bigger request goes to a dirty one. */
#define SMALL_REQUEST_CELLS 20000
#define SMALL_REQUEST_DEPTH 64

/* Whether `t` has at most `*budget` cells, nested at most `depth` deep.
 * Visits no more than that many cells, so it is cheap whatever `t` is. */
static int term_is_small(ErlNifEnv *env, ERL_NIF_TERM t, long *budget, int depth)
{
    int arity;
    const ERL_NIF_TERM *elems;
    size_t size;
    if (--*budget < 0 || depth <= 0)
        return 0;
    if (enif_is_list(env, t)) {
        ERL_NIF_TERM head;
        while (enif_get_list_cell(env, t, &head, &t))
            if (!term_is_small(env, head, budget, depth - 1) || --*budget < 0)
                return 0;
        return enif_is_list(env, t) || term_is_small(env, t, budget, depth - 1); /* [] or an improper tail */
    }
    if (enif_get_tuple(env, t, &arity, &elems)) {
        for (int i = 0; i < arity; i++)
            if (!term_is_small(env, elems[i], budget, depth - 1))
                return 0;
        return 1;
    }
    if (enif_get_map_size(env, t, &size)) {
        if ((long)size * 2 > *budget)
            return 0;
        ErlNifMapIterator it;
        if (!enif_map_iterator_create(env, t, &it, ERL_NIF_MAP_ITERATOR_FIRST))
            return 0;
        ERL_NIF_TERM k, v;
        int small = 1;
        while (small && enif_map_iterator_get_pair(env, &it, &k, &v)) {
            small = term_is_small(env, k, budget, depth - 1) && term_is_small(env, v, budget, depth - 1);
            enif_map_iterator_next(env, &it);
        }
        enif_map_iterator_destroy(env, &it);
        return small;
    }
    return 1; /* an atom, number, pid, ...; a binary is copied by reference or is tiny */
}

/* submit(Context, Ref, Request) -> {ok, Job} | {error, not_started | no_context}
 * submit(Context, Ref, Request, Gate, first | next): through a gate (see
 * gate_t); a `first` job is refused with {error, busy} when the gate is full
 * and has max_waiting jobs waiting already, a `next` one always waits. */
ERL_NIF_TERM workers_submit_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    int context, first = 0;
    gate_t *gate = NULL;
    if (!enif_get_int(env, argv[0], &context) || context < 0 || !enif_is_ref(env, argv[1]) ||
        !valid_request(env, argv[2]))
        return enif_make_badarg(env);
    if (argc == 5) {
        first = enif_is_identical(argv[4], ATOMS.first);
        if (!enif_get_resource(env, argv[3], GATE_RT, (void **)&gate) ||
            (!first && !enif_is_identical(argv[4], ATOMS.next)))
            return enif_make_badarg(env);
    }
    long budget = SMALL_REQUEST_CELLS;
    if (enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER &&
        !term_is_small(env, argv[2], &budget, SMALL_REQUEST_DEPTH))
        return enif_schedule_nif(env, "submit", ERL_NIF_DIRTY_JOB_CPU_BOUND, workers_submit_nif, argc, argv);
    job_t *job = enif_alloc_resource(ERLPY_JOB_RT, sizeof *job);
    if (!job)
        return erlpy_make_error(env, ATOMS.enomem);
    memset(job, 0, sizeof *job);
    job->interrupt.run = interrupt_run;
    job->context = context;
    job->env = enif_alloc_env();
    if (!job->env) {
        enif_release_resource(job);
        return erlpy_make_error(env, ATOMS.enomem);
    }
    job->ref = enif_make_copy(job->env, argv[1]);
    job->request = enif_make_copy(job->env, argv[2]);
    enif_self(env, &job->caller);
    atomic_store(&job->state, JOB_QUEUED);
    if (enif_monitor_process(env, job, &job->caller, &job->monitor) != 0) {
        enif_release_resource(job); /* cannot happen: the caller is running this NIF */
        return enif_make_badarg(env);
    }

    ERL_NIF_TERM result;
    worker_t *wake = NULL;
    pthread_mutex_lock(&P.lock);
    if (!P.accepting) {
        result = erlpy_make_error(env, ATOMS.not_started);
    } else if (context > P.contexts) {
        result = erlpy_make_error(env, ATOMS.no_context);
    } else if (gate && first && gate->holding >= gate->cap && gate->waiting >= gate->max_waiting) {
        result = erlpy_make_error(env, ATOMS.busy);
    } else {
        enif_keep_resource(job); /* the queue's reference */
        if (gate) {
            enif_keep_resource(gate); /* released by job_dtor */
            job->gate = gate;
        }
        if (gate && gate->holding >= gate->cap) {
            job->place = GATE_WAITING;
            job->first = first;
            gate->waiting++;
            if (first)
                push(&gate->first_head, &gate->first_tail, job);
            else
                push(&gate->next_head, &gate->next_tail, job);
        } else {
            if (gate) {
                job->place = GATE_HOLDING;
                gate->holding++;
            }
            wake = enqueue_locked(job);
        }
        result = enif_make_tuple2(env, ATOMS.ok, enif_make_resource(env, job));
    }
    pthread_mutex_unlock(&P.lock);
    signal_worker(wake);
    enif_release_resource(job);
    return result;
}

static int unlink_job(job_t **head, job_t **tail, job_t *job)
{
    job_t *prev = NULL;
    for (job_t *j = *head; j; prev = j, j = j->next) {
        if (j != job)
            continue;
        if (prev)
            prev->next = j->next;
        else
            *head = j->next;
        if (*tail == j)
            *tail = prev;
        j->next = NULL;
        return 1;
    }
    return 0;
}

/* Cancels a job: a queued one is unlinked and never runs; a running one gets
 * CallTimeout raised in its worker, and a buffer read it sleeps in wakes at
 * once.  Returns the state the job was in.  Any thread that may call
 * enif_demonitor_process with `env`; takes P.lock. */
static int job_cancel(ErlNifEnv *env, job_t *job)
{
    int release_queue_ref = 0, post_interrupt = 0;
    pthread_mutex_lock(&P.lock);
    int state = atomic_load(&job->state);
    worker_t *wake = NULL;
    if (state == JOB_QUEUED && job->place == GATE_WAITING) {
        gate_t *g = job->gate;
        release_queue_ref = job->first ? unlink_job(&g->first_head, &g->first_tail, job)
                                       : unlink_job(&g->next_head, &g->next_tail, job);
        g->waiting--;
        job->place = GATE_NONE;
        atomic_store(&job->state, JOB_CANCELLED);
    } else if (state == JOB_QUEUED) {
        worker_t *w = job->context ? P.workers[job->context - 1] : NULL;
        release_queue_ref = w ? unlink_job(&w->head, &w->tail, job) : unlink_job(&P.head, &P.tail, job);
        if (release_queue_ref)
            atomic_fetch_sub(w ? &w->queued : &P.queued, 1);
        atomic_store(&job->state, JOB_CANCELLED);
        wake = gate_leave_locked(job); /* it never runs: its place goes on */
    } else if (state == JOB_RUNNING) {
        atomic_store(&job->state, JOB_CANCELLED);
        enif_keep_resource(job); /* the interrupt task's reference */
        post_interrupt = 1;
        if (job->waiting_on) /* alive: its reader clears this under P.lock first */
            stream_wake(job->waiting_on);
    }
    pthread_mutex_unlock(&P.lock);
    signal_worker(wake);
    if (post_interrupt)
        janitor_interrupt(&job->interrupt);
    if (release_queue_ref) {
        enif_demonitor_process(env, job, &job->monitor); /* it never runs, never finishes */
        enif_release_resource(job);
    }
    return state;
}

/* cancel(Job) -> cancelled | done.  `done`: the reply is (being) sent. */
ERL_NIF_TERM workers_cancel_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    job_t *job;
    if (!enif_get_resource(env, argv[0], ERLPY_JOB_RT, (void **)&job))
        return enif_make_badarg(env);
    return job_cancel(env, job) == JOB_DONE ? ATOMS.done : ATOMS.cancelled;
}

/* info() -> #{contexts, threads, busy, queued} */
ERL_NIF_TERM workers_info_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    pthread_mutex_lock(&P.lock);
    int busy = 0, queued = 0;
    for (int i = 0; i < P.count; i++) {
        busy += !P.workers[i]->idle;
        for (job_t *j = P.workers[i]->head; j; j = j->next)
            queued++;
    }
    for (job_t *j = P.head; j; j = j->next)
        queued++;
    ERL_NIF_TERM keys[] = {enif_make_atom(env, "contexts"), enif_make_atom(env, "threads"),
                           enif_make_atom(env, "busy"), enif_make_atom(env, "queued")};
    ERL_NIF_TERM values[] = {enif_make_int(env, P.contexts), enif_make_int(env, P.count),
                             enif_make_int(env, busy), enif_make_int(env, queued)};
    pthread_mutex_unlock(&P.lock);
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, 4, &map);
    return map;
}

/* gate_new(Cap, MaxWaiting) -> Gate: at most Cap jobs submitted through it
 * hold a place (queued to run or running) at once. */
ERL_NIF_TERM workers_gate_new_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    int cap, max_waiting;
    if (!enif_get_int(env, argv[0], &cap) || cap < 1 || !enif_get_int(env, argv[1], &max_waiting) ||
        max_waiting < 0)
        return enif_make_badarg(env);
    gate_t *g = enif_alloc_resource(GATE_RT, sizeof *g);
    if (!g)
        return erlpy_make_error(env, ATOMS.enomem);
    memset(g, 0, sizeof *g);
    g->cap = cap;
    g->max_waiting = max_waiting;
    ERL_NIF_TERM term = enif_make_resource(env, g);
    enif_release_resource(g);
    return term;
}

/* gate_info(Gate) -> #{holding, waiting} */
ERL_NIF_TERM workers_gate_info_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    gate_t *g;
    if (!enif_get_resource(env, argv[0], GATE_RT, (void **)&g))
        return enif_make_badarg(env);
    pthread_mutex_lock(&P.lock);
    int holding = g->holding, waiting = g->waiting;
    pthread_mutex_unlock(&P.lock);
    ERL_NIF_TERM keys[] = {enif_make_atom(env, "holding"), enif_make_atom(env, "waiting")};
    ERL_NIF_TERM values[] = {enif_make_int(env, holding), enif_make_int(env, waiting)};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, 2, &map);
    return map;
}
