/* erlpy_nif.c - NIF entry: load/upgrade/unload, libpython loading, the
 * function table.  The interpreter itself is started by janitor.c. */
#include <dlfcn.h>
#include <string.h>

#include "asgi_inbox.h"
#include "buffer_nif.h"
#include "workers.h"

erlpy_atoms_t ATOMS;
erlpy_py_t PY;
ErlNifResourceType *ERLPY_OBJECT_RT;
ErlNifResourceType *ERLPY_JOB_RT;
ErlNifResourceType *ERLPY_BUFFER_RT;

ERL_NIF_TERM erlpy_make_error(ErlNifEnv *env, ERL_NIF_TERM reason)
{
    return enif_make_tuple2(env, ATOMS.error, reason);
}

static void make_atoms(ErlNifEnv *env)
{
#define ATOM(field, name) ATOMS.field = enif_make_atom(env, name)
    ATOM(ok, "ok");
    ATOM(error, "error");
    ATOM(true_, "true");
    ATOM(false_, "false");
    ATOM(none, "none");
    ATOM(undefined, "undefined");
    ATOM(badarg, "badarg");
    ATOM(timeout, "timeout");
    ATOM(too_deep, "too_deep");
    ATOM(not_started, "not_started");
    ATOM(no_context, "no_context");
    ATOM(enomem, "enomem");
    ATOM(call, "call");
    ATOM(eval, "eval");
    ATOM(exec, "exec");
    ATOM(python, "python");
    ATOM(cancelled, "cancelled");
    ATOM(done, "done");
    ATOM(nan, "nan");
    ATOM(inf, "inf");
    ATOM(neg_inf, "neg_inf");
    ATOM(closed, "closed");
    ATOM(overflow, "overflow");
    ATOM(aborted, "aborted");
    ATOM(writer_down, "writer_down");
    ATOM(wait, "wait");
    ATOM(written, "written");
    ATOM(read_pos, "read_pos");
    ATOM(unread, "unread");
    ATOM(eof, "eof");
    ATOM(waiting_readers, "waiting_readers");
    ATOM(memory, "memory");
    ATOM(reader_closed, "reader_closed");
    ATOM(content_length, "content_length");
    ATOM(max_unread, "max_unread");
    ATOM(low_watermark, "low_watermark");
    ATOM(keep_consumed, "keep_consumed");
    ATOM(busy, "busy");
    ATOM(first, "first");
    ATOM(next, "next");
    ATOM(line_limit, "line_limit");
    ATOM(read_timeout, "read_timeout");
    ATOM(seekable, "seekable");
#undef ATOM
}

static int open_resource_types(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    return erlpy_object_rt_open(env, flags) || workers_job_rt_open(env, flags) ||
           buffer_rt_open(env, flags) || inbox_rt_open(env, flags);
}

/* Extension modules (_json, _decimal, ...) resolve libpython's symbols
 * globally, but the BEAM loads NIFs with local symbols: promote libpython.
 * Keep this library mapped for ever, since its threads never exit. */
static int pin_libraries(char *err, size_t errlen)
{
    if (!dlopen(ERLPY_PY_SONAME, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) &&
        !dlopen(ERLPY_PY_SONAME, RTLD_NOW | RTLD_GLOBAL)) {
        snprintf(err, errlen, "cannot load %s: %s", ERLPY_PY_SONAME, dlerror());
        return -1;
    }
    Dl_info self;
    if (dladdr((void *)pin_libraries, &self) && self.dli_fname)
        dlopen(self.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
    return 0;
}

/* load_info: #{python_path => [binary()]} */
static char *python_path_from(ErlNifEnv *env, ERL_NIF_TERM info)
{
    ERL_NIF_TERM list, head;
    ErlNifBinary dir;
    size_t total = 1;
    if (!enif_get_map_value(env, info, enif_make_atom(env, "python_path"), &list))
        list = enif_make_list(env, 0);
    for (ERL_NIF_TERM l = list; enif_get_list_cell(env, l, &head, &l);)
        if (enif_inspect_binary(env, head, &dir))
            total += dir.size + 1;
    char *paths = enif_alloc(total), *p = paths;
    if (!paths)
        return NULL;
    for (ERL_NIF_TERM l = list; enif_get_list_cell(env, l, &head, &l);)
        if (enif_inspect_binary(env, head, &dir) && !memchr(dir.data, 0, dir.size)) {
            memcpy(p, dir.data, dir.size);
            p += dir.size;
            *p++ = 0;
        }
    *p = 0;
    return paths;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info)
{
    (void)priv;
    char err[256] = "";
    make_atoms(env);
    if (open_resource_types(env, ERL_NIF_RT_CREATE) || pin_libraries(err, sizeof err))
        goto fail;
    char *paths = python_path_from(env, info); /* kept: the janitor reads it */
    if (!paths || janitor_start(paths, err, sizeof err))
        goto fail;
    return 0;
fail:
    if (err[0])
        enif_fprintf(stderr, "erlpy: %s\n", err);
    return 1;
}

static int upgrade(ErlNifEnv *env, void **priv, void **old_priv, ERL_NIF_TERM info)
{
    (void)priv;
    (void)old_priv;
    (void)info;
    make_atoms(env);
    return open_resource_types(env, ERL_NIF_RT_TAKEOVER);
}

/* set_forwarder(Pid) -> ok: where erlang.send sends for pids of other
 * nodes ({erlpy_forward, Pid, Msg}; py_nodes_server). */
static ERL_NIF_TERM set_forwarder_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    ErlNifPid pid;
    if (!enif_get_local_pid(env, argv[0], &pid))
        return enif_make_badarg(env);
    erlpy_set_forwarder(&pid);
    return ATOMS.ok;
}

static ErlNifFunc nif_funcs[] = {
    {"set_forwarder", 1, set_forwarder_nif, 0},
    {"start", 1, workers_start_nif, 0},
    {"stop", 0, workers_stop_nif, 0},
    {"submit", 3, workers_submit_nif, 0},
    {"submit", 5, workers_submit_nif, 0},
    {"gate_new", 2, workers_gate_new_nif, 0},
    {"gate_info", 1, workers_gate_info_nif, 0},
    {"cancel", 1, workers_cancel_nif, 0},
    {"info", 0, workers_info_nif, 0},
    BUFFER_NIFS
    INBOX_NIFS
};

ERL_NIF_INIT(py_nif, nif_funcs, load, NULL, upgrade, NULL)
