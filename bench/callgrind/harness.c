/* harness.c - erlang.PyBuffer (c_src/buffer_type.c over c_src/stream.c) in a
 * plain embedded Python, without the BEAM, so that valgrind's callgrind can
 * count its instructions (the BEAM's JIT does not run under valgrind).  The
 * few NIF and worker functions buffer_type.c needs are stubs.  See run.sh.
 *
 *   harness SCRIPT LINES KEEP   a stream of LINES 100-byte lines (64 KiB
 *   writes, closed; keep_consumed = KEEP) is `buf', the same bytes `data',
 *   then SCRIPT runs in __main__. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer_nif.h"
#include "convert.h"
#include "workers.h"

erlpy_py_t PY;
erlpy_atoms_t ATOMS;
ErlNifResourceType *ERLPY_BUFFER_RT, *ERLPY_OBJECT_RT, *ERLPY_JOB_RT;
static buffer_t the_buf;

void buffer_reading(buffer_t *b) { (void)b; }

int worker_stream_wait(stream_t *s, size_t want, stream_waiter_t *w, size_t *avail)
{
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = stream_wait(s, want, w, avail);
    Py_END_ALLOW_THREADS
    return r;
}

PyObject *erlpy_pybuffer_async_reader(PyObject *s, PyObject *a, PyObject *k)
{
    (void)s, (void)a, (void)k;
    Py_RETURN_NONE;
}

int erlpy_waker_type_init(PyObject *m) { (void)m; return 0; }
void enif_keep_resource(void *o) { (void)o; }
void enif_release_resource(void *o) { (void)o; }
ERL_NIF_TERM enif_make_resource(ErlNifEnv *e, void *o) { (void)e, (void)o; return 0; }

int enif_get_resource(ErlNifEnv *e, ERL_NIF_TERM t, ErlNifResourceType *ty, void **o)
{
    (void)e, (void)t, (void)ty;
    *o = &the_buf;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: harness SCRIPT LINES KEEP\n");
        return 2;
    }
    size_t lines = strtoul(argv[2], NULL, 10), total = lines * 100;
    Py_Initialize();
    PyObject *m = PyModule_New("erlang");
    PY.stream_aborted = PY.stream_incomplete = PY.read_timeout = PyExc_RuntimeError;
    PY.line_too_long = PY.call_timeout = PyExc_RuntimeError;
    if (!m || erlpy_buffer_type_init(m) < 0) {
        PyErr_Print();
        return 1;
    }
    stream_opts_t o;
    stream_opts_default(&o);
    o.keep_consumed = atoi(argv[3]);
    the_buf.stream = stream_new(&o);
    the_buf.read_timeout_ms = -1;
    the_buf.wait_cap = SIZE_MAX;
    char *data = malloc(total + 1);
    if (!the_buf.stream || !data)
        return 1;
    for (size_t i = 0; i < lines; i++) { /* "0000000042 aaaa...\n" */
        char *l = data + i * 100;
        unsigned long id = (unsigned long)(i % 10000000000UL);
        for (int d = 9; d >= 0; d--, id /= 10)
            l[d] = (char)('0' + id % 10);
        l[10] = ' ';
        memset(l + 11, 'a' + (int)(i % 26), 88);
        l[99] = '\n';
    }
    for (size_t off = 0; off < total; off += 65536)
        stream_write(the_buf.stream, data + off, total - off < 65536 ? total - off : 65536);
    stream_close(the_buf.stream);
    int is_buffer;
    PyObject *buf = erlpy_buffer_to_py(NULL, 0, &is_buffer);
    PyObject *g = PyModule_GetDict(PyImport_AddModule("__main__"));
    PyObject *bytes = PyBytes_FromStringAndSize(data, (Py_ssize_t)total);
    if (!buf || !bytes || PyDict_SetItemString(g, "buf", buf) < 0 ||
        PyDict_SetItemString(g, "data", bytes) < 0)
        return 1;
    FILE *f = fopen(argv[1], "r");
    if (!f || PyRun_SimpleFile(f, argv[1]) != 0)
        return 1;
    return 0;
}
