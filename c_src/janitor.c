/* janitor.c - the interpreter's main thread and the reapers.
 *
 * Two kinds of work that Erlang hands to Python, kept on separate threads so
 * that neither waits behind the other:
 *
 * - Interrupts.  The thread that initialised Python (so no scheduler thread
 *   owns the interpreter) then raises CallTimeout in workers.  It runs no
 *   Python code, only PyThreadState_SetAsyncExc, so it never gets stuck: a
 *   timeout or a dead caller is delivered whatever Python code is doing.
 * - Decrefs.  Erlang destructors may not take the GIL, so the references
 *   they let go of are queued and dropped by a reaper thread.  Dropping one
 *   may run any __del__ (or weakref callback), and one may never return.
 *
 * The interrupter is also the reapers' watchdog: when the active reaper has
 * been inside one decref for REAPER_STUCK_MS, a fresh reaper takes over the
 * queue and the stuck one is left to its __del__; it exits if that ever
 * returns.  A stuck destructor so costs one thread and what it holds.  At
 * most MAX_STUCK reapers are abandoned at once: past that the queue waits
 * behind the active one again (logged once), so a program whose destructors
 * all hang cannot make threads without end.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "threads.h"
#include "workers.h"

#define JANITOR_STACK (16 << 20) /* deep __del__ chains */
#define REAPER_STUCK_MS 1000     /* one decref this long: the reaper is replaced */
#define WATCH_MS 250             /* the watchdog's period while a reaper is busy */
#define MAX_STUCK 8              /* abandoned reapers alive at once */
#define REAPER_BATCH 256         /* decrefs between two chances for others to take the GIL */

struct janitor_item {
    janitor_task_t task;
    PyObject *obj; /* owned reference */
};

typedef struct reaper {
    int64_t busy_since; /* ms when its current decref began, 0 when idle; J.lock */
} reaper_t;

/* The janitor's state.  `lock` guards every field below it; it is a leaf
 * lock: no other lock is taken and the GIL is never requested under it. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t started_cv;         /* start-up finished */
    pthread_cond_t work;               /* interrupts posted, or a reaper turned busy
                                        * (monotonic clock: made in janitor_start) */
    pthread_cond_t reap;               /* decrefs posted, for the active reaper */
    janitor_task_t *interrupts;        /* LIFO: their order does not matter */
    janitor_task_t *decref_head, *decref_tail; /* FIFO */
    reaper_t *reaper;                  /* the active reaper */
    int stuck;                         /* abandoned reapers still inside a decref */
    int watching;                      /* the interrupter sleeps with a timeout */
    int warned;                        /* the MAX_STUCK message was printed */
    int started;                       /* 0 not yet, 1 running, -1 start-up failed */
    char err[256];
    const char *python_path;
} J = {.lock = PTHREAD_MUTEX_INITIALIZER, .started_cv = PTHREAD_COND_INITIALIZER,
       .reap = PTHREAD_COND_INITIALIZER};

PyMODINIT_FUNC erlpy_pymodule_init(void);

static int64_t now_ms(void)
{
    return erlpy_now_ns() / 1000000;
}

static int start_thread(void *(*fn)(void *), void *arg)
{
    return erlpy_thread_start(fn, arg, JANITOR_STACK);
}

/* ------------------------------------------------------------ start-up */

static int add_sys_path(const char *paths)
{
    PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
    if (!sys_path)
        return -1;
    Py_ssize_t at = 0;
    for (const char *p = paths; p && *p; p += strlen(p) + 1) {
        PyObject *dir = PyUnicode_DecodeFSDefault(p);
        if (!dir || PyList_Insert(sys_path, at++, dir) < 0) {
            Py_XDECREF(dir);
            return -1;
        }
        Py_DECREF(dir);
    }
    return 0;
}

static int init_python(void)
{
    if (PyImport_AppendInittab("erlang", erlpy_pymodule_init) < 0)
        return -1;
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0; /* signals belong to the BEAM */
    config.parse_argv = 0;
    PyStatus status = PyConfig_SetBytesString(&config, &config.program_name, ERLPY_PY_EXE);
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        snprintf(J.err, sizeof J.err, "Python start-up failed: %s",
                 status.err_msg ? status.err_msg : "unknown error");
        return -1;
    }
    PyObject *traceback = NULL, *threading;
    /* threading.main_thread() is whichever thread imports threading first;
     * it must be this one, the thread signal.set_wakeup_fd knows as main,
     * or uvloop in a worker thread takes itself for the main thread. */
    if (!(threading = PyImport_ImportModule("threading"))) {
        PyErr_Print();
        snprintf(J.err, sizeof J.err, "threading import failed");
        return -1;
    }
    Py_DECREF(threading);
    if (add_sys_path(J.python_path) < 0 ||
        !(PY.module = PyImport_ImportModule("erlang")) ||
        !(traceback = PyImport_ImportModule("traceback")) ||
        !(PY.format_exception = PyObject_GetAttrString(traceback, "format_exception"))) {
        PyErr_Print();
        snprintf(J.err, sizeof J.err, "erlang module set-up failed");
        Py_XDECREF(traceback);
        return -1;
    }
    Py_DECREF(traceback);
    return 0;
}

/* ------------------------------------------------------------ reapers */

/* Drops queued references while it is the active reaper.  Holds the GIL
 * from one decref to the next while there are more (a plain decref never
 * lets the interpreter switch threads, so it lets go every REAPER_BATCH),
 * and gives it back before sleeping. */
static void *reaper_main(void *arg)
{
    reaper_t *self = arg;
    pthread_setname_np(pthread_self(), "erlpy-reaper");
    PyGILState_STATE gil = PyGILState_Ensure();
    PyThreadState *ts = PyEval_SaveThread();
    int holding = 0; /* the GIL */
    unsigned done = 0;
    pthread_mutex_lock(&J.lock);
    while (J.reaper == self) {
        janitor_task_t *task = J.decref_head;
        if (!task) {
            if (!holding) {
                pthread_cond_wait(&J.reap, &J.lock);
                continue;
            }
            pthread_mutex_unlock(&J.lock); /* idle: give the GIL back before sleeping */
            ts = PyEval_SaveThread();
            holding = 0;
            pthread_mutex_lock(&J.lock);
            continue;
        }
        J.decref_head = task->next;
        if (!J.decref_head)
            J.decref_tail = NULL;
        self->busy_since = now_ms();
        if (!J.watching)
            pthread_cond_signal(&J.work); /* the watchdog starts watching us */
        pthread_mutex_unlock(&J.lock);
        if (!holding) {
            PyEval_RestoreThread(ts);
            holding = 1;
        }
        task->run(task);
        if (++done % REAPER_BATCH == 0) {
            ts = PyEval_SaveThread();
            holding = 0;
        }
        pthread_mutex_lock(&J.lock);
        self->busy_since = 0;
    }
    /* Replaced while in a decref that has now returned: leave. */
    J.stuck--;
    pthread_mutex_unlock(&J.lock);
    if (!holding)
        PyEval_RestoreThread(ts);
    PyGILState_Release(gil); /* deletes this thread's state and drops the GIL */
    enif_free(self);
    return NULL;
}

/* A new reaper, made the active one; NULL if it cannot be made. */
static reaper_t *reaper_start_locked(void)
{
    reaper_t *r = enif_alloc(sizeof *r);
    if (!r)
        return NULL;
    r->busy_since = 0;
    if (start_thread(reaper_main, r) != 0) {
        enif_free(r);
        return NULL;
    }
    J.reaper = r; /* the thread checks this only once it has the lock */
    return r;
}

/* The watchdog: replace a reaper stuck in one decref. */
static void watch_locked(void)
{
    reaper_t *r = J.reaper;
    if (!r || !r->busy_since || now_ms() - r->busy_since < REAPER_STUCK_MS)
        return;
    if (J.stuck >= MAX_STUCK) {
        if (!J.warned)
            enif_fprintf(stderr, "erlpy: %d Python destructors never returned; objects released "
                                 "by Erlang are not freed until one does\n", MAX_STUCK + 1);
        J.warned = 1;
        return;
    }
    if (reaper_start_locked()) { /* else: try again at the next tick */
        J.stuck++;
        r->busy_since = 0; /* no longer watched; it frees itself */
    }
}

/* ------------------------------------------------------------ the main thread */

static void *janitor_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "erlpy-janitor");
    int rc = init_python();
    PyThreadState *ts = rc == 0 ? PyEval_SaveThread() : NULL;
    pthread_mutex_lock(&J.lock);
    if (rc == 0 && !reaper_start_locked()) {
        snprintf(J.err, sizeof J.err, "cannot create the reaper thread");
        rc = -1;
    }
    J.started = rc == 0 ? 1 : -1;
    pthread_cond_broadcast(&J.started_cv);
    if (rc != 0) {
        pthread_mutex_unlock(&J.lock);
        return NULL;
    }
    for (;;) {
        janitor_task_t *tasks = J.interrupts;
        if (tasks) {
            J.interrupts = NULL;
            pthread_mutex_unlock(&J.lock);
            PyEval_RestoreThread(ts);
            while (tasks) {
                janitor_task_t *next = tasks->next;
                tasks->run(tasks);
                tasks = next;
            }
            ts = PyEval_SaveThread();
            pthread_mutex_lock(&J.lock);
            continue;
        }
        watch_locked();
        if (J.reaper->busy_since) {
            int64_t at = now_ms() + WATCH_MS;
            struct timespec until = {(time_t)(at / 1000), (long)(at % 1000) * 1000000L};
            J.watching = 1;
            pthread_cond_timedwait(&J.work, &J.lock, &until);
            J.watching = 0;
        } else {
            pthread_cond_wait(&J.work, &J.lock);
        }
    }
    return NULL;
}

int janitor_start(const char *python_path, char *err, size_t errlen)
{
    pthread_mutex_lock(&J.lock);
    if (J.started == 0 && !J.python_path) {
        J.python_path = python_path;
        pthread_condattr_t ca;
        int bad = pthread_condattr_init(&ca) != 0;
        if (!bad) {
            bad = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
                  pthread_cond_init(&J.work, &ca) != 0;
            pthread_condattr_destroy(&ca);
        }
        if (bad || start_thread(janitor_main, NULL) != 0) {
            J.started = -1;
            snprintf(J.err, sizeof J.err, "cannot create the janitor thread");
        }
    }
    while (J.started == 0)
        pthread_cond_wait(&J.started_cv, &J.lock);
    int rc = J.started == 1 ? 0 : -1;
    if (rc)
        snprintf(err, errlen, "%s", J.err);
    pthread_mutex_unlock(&J.lock);
    return rc;
}

void janitor_interrupt(janitor_task_t *task)
{
    pthread_mutex_lock(&J.lock);
    task->next = J.interrupts;
    J.interrupts = task;
    pthread_cond_signal(&J.work);
    pthread_mutex_unlock(&J.lock);
}

/* ------------------------------------------------------------ references */

static void item_decref(janitor_task_t *task)
{
    janitor_item_t *item = (janitor_item_t *)task;
    Py_DECREF(item->obj);
    enif_free(item);
}

janitor_item_t *janitor_item_new(PyObject *obj)
{
    janitor_item_t *item = enif_alloc(sizeof *item);
    if (!item)
        return NULL;
    item->task.next = NULL;
    item->task.run = item_decref;
    item->obj = Py_NewRef(obj);
    return item;
}

PyObject *janitor_item_object(janitor_item_t *item)
{
    return item->obj;
}

void janitor_release(janitor_item_t *item)
{
    pthread_mutex_lock(&J.lock);
    item->task.next = NULL;
    if (J.decref_tail)
        J.decref_tail->next = &item->task;
    else
        J.decref_head = &item->task;
    J.decref_tail = &item->task;
    pthread_cond_signal(&J.reap);
    pthread_mutex_unlock(&J.lock);
}
