/* janitor.c - the interpreter's main thread.
 *
 * It initialises Python (so no scheduler thread ever owns the interpreter),
 * then runs janitor tasks: dropping references that Erlang destructors let go
 * of (destructors may not take the GIL) and raising timeouts in workers. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "workers.h"

struct janitor_item {
    janitor_task_t task;
    PyObject *obj; /* owned reference */
};

/* The janitor's state.  `lock` guards every field below it; it is a leaf lock. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* tasks posted, or start-up finished */
    janitor_task_t *tasks;   /* LIFO of posted tasks */
    int started;             /* 0 not yet, 1 running, -1 start-up failed */
    char err[256];
    const char *python_path;
} J = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, "", NULL};

PyMODINIT_FUNC erlpy_pymodule_init(void);

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
    PyObject *traceback = NULL;
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

static void *janitor_main(void *arg)
{
    (void)arg;
    int rc = init_python();
    PyThreadState *ts = rc == 0 ? PyEval_SaveThread() : NULL;
    pthread_mutex_lock(&J.lock);
    J.started = rc == 0 ? 1 : -1;
    pthread_cond_broadcast(&J.wake);
    pthread_mutex_unlock(&J.lock);
    if (rc != 0)
        return NULL;
    for (;;) {
        pthread_mutex_lock(&J.lock);
        while (!J.tasks)
            pthread_cond_wait(&J.wake, &J.lock);
        janitor_task_t *tasks = J.tasks;
        J.tasks = NULL;
        pthread_mutex_unlock(&J.lock);
        PyEval_RestoreThread(ts);
        /* Two passes: timeouts must not wait behind a slow __del__. */
        janitor_task_t *rest = NULL;
        while (tasks) {
            janitor_task_t *next = tasks->next;
            if (tasks->urgent) {
                tasks->run(tasks);
            } else {
                tasks->next = rest;
                rest = tasks;
            }
            tasks = next;
        }
        while (rest) {
            janitor_task_t *next = rest->next;
            rest->run(rest);
            rest = next;
        }
        ts = PyEval_SaveThread();
    }
    return NULL;
}

int janitor_start(const char *python_path, char *err, size_t errlen)
{
    pthread_mutex_lock(&J.lock);
    if (J.started == 0 && !J.python_path) {
        J.python_path = python_path;
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 16 << 20);
        if (pthread_create(&thread, &attr, janitor_main, NULL) != 0) {
            J.started = -1;
            snprintf(J.err, sizeof J.err, "cannot create the janitor thread");
        }
        pthread_attr_destroy(&attr);
    }
    while (J.started == 0)
        pthread_cond_wait(&J.wake, &J.lock);
    int rc = J.started == 1 ? 0 : -1;
    if (rc)
        snprintf(err, errlen, "%s", J.err);
    pthread_mutex_unlock(&J.lock);
    return rc;
}

void janitor_post(janitor_task_t *task)
{
    pthread_mutex_lock(&J.lock);
    task->next = J.tasks;
    J.tasks = task;
    pthread_cond_signal(&J.wake);
    pthread_mutex_unlock(&J.lock);
}

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
    item->task.urgent = 0;
    item->obj = Py_NewRef(obj);
    return item;
}

PyObject *janitor_item_object(janitor_item_t *item)
{
    return item->obj;
}

void janitor_release(janitor_item_t *item)
{
    janitor_post(&item->task);
}
