/* convert.c - Erlang term <-> Python object conversion (docs/bridge.md has the
 * table).  Every function here runs on an erlpy thread holding the GIL. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "convert.h"
#include "workers.h"

/* External term format tags used for big integers and UTF-8 atoms, which the
 * erl_nif API cannot read or build directly. */
#define ETF_VERSION 131
#define ETF_SMALL_BIG 110
#define ETF_LARGE_BIG 111
#define ETF_ATOM_UTF8 118
#define ETF_SMALL_ATOM_UTF8 119

/* An opaque Python object held by Erlang.  The decref happens on the janitor
 * thread: a destructor may run on any scheduler and must not take the GIL. */
typedef struct {
    janitor_item_t *item; /* owns the reference; handed to the janitor at the end */
} object_res_t;

static void object_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    object_res_t *res = obj;
    if (res->item)
        janitor_release(res->item);
}

int erlpy_object_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ERLPY_OBJECT_RT = enif_open_resource_type(env, NULL, "erlpy_object", object_dtor, flags, NULL);
    return ERLPY_OBJECT_RT ? 0 : -1;
}

ERL_NIF_TERM erlpy_make_object_handle(ErlNifEnv *env, PyObject *obj)
{
    object_res_t *res = enif_alloc_resource(ERLPY_OBJECT_RT, sizeof *res);
    if (!res)
        return 0;
    res->item = janitor_item_new(obj);
    if (!res->item) {
        enif_release_resource(res);
        return 0;
    }
    ERL_NIF_TERM term = enif_make_resource(env, res);
    enif_release_resource(res);
    return term;
}

/* True when this thread's stack is nearly used up.  Workers have 16 MiB,
 * but erlang.send() converts on whatever thread Python code runs it, and
 * those may have much smaller stacks. */
static int stack_low(void)
{
    static _Thread_local uintptr_t limit; /* lowest address we may reach, per thread */
    if (!limit) {
        pthread_attr_t attr;
        void *addr;
        size_t size;
        limit = 1;
        if (pthread_getattr_np(pthread_self(), &attr) == 0) {
            if (pthread_attr_getstack(&attr, &addr, &size) == 0)
                limit = (uintptr_t)addr + 128 * 1024;
            pthread_attr_destroy(&attr);
        }
    }
    char here;
    return (uintptr_t)&here < limit;
}

static PyObject *nesting_error(void)
{
    PyErr_SetString(PY.too_deep, "term nested too deeply to convert");
    return NULL;
}

/* ---------------------------------------------------------------- Erlang -> Python */

/* An int from n little-endian magnitude bytes. */
static PyObject *long_from_magnitude(const unsigned char *bytes, size_t n)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(bytes, n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
    /* No public C call before 3.13: int.from_bytes does the same work. */
    return PyObject_CallMethod((PyObject *)&PyLong_Type, "from_bytes", "y#s",
                               (const char *)bytes, (Py_ssize_t)n, "little");
#endif
}

static PyObject *bignum_to_py(ErlNifEnv *env, ERL_NIF_TERM term)
{
    ErlNifUInt64 u;
    if (enif_get_uint64(env, term, &u))
        return PyLong_FromUnsignedLongLong(u);
    ErlNifBinary etf;
    if (!enif_term_to_binary(env, term, &etf))
        return PyErr_NoMemory();
    PyObject *result = NULL;
    const unsigned char *p = etf.data;
    size_t n, hdr;
    if (etf.size >= 3 && p[1] == ETF_SMALL_BIG) {
        n = p[2];
        hdr = 3;
    } else if (etf.size >= 6 && p[1] == ETF_LARGE_BIG) {
        n = ((size_t)p[2] << 24) | ((size_t)p[3] << 16) | ((size_t)p[4] << 8) | p[5];
        hdr = 6;
    } else {
        PyErr_SetString(PyExc_ValueError, "unexpected integer encoding");
        goto done;
    }
    if (etf.size < hdr + 1 + n) {
        PyErr_SetString(PyExc_ValueError, "unexpected integer encoding");
        goto done;
    }
    int negative = p[hdr];
    result = long_from_magnitude(p + hdr + 1, n);
    if (result && negative) {
        PyObject *neg = PyNumber_Negative(result);
        Py_DECREF(result);
        result = neg;
    }
done:
    enif_release_binary(&etf);
    return result;
}

static PyObject *atom_to_py(ErlNifEnv *env, ERL_NIF_TERM term)
{
    if (enif_is_identical(term, ATOMS.true_))
        Py_RETURN_TRUE;
    if (enif_is_identical(term, ATOMS.false_))
        Py_RETURN_FALSE;
    if (enif_is_identical(term, ATOMS.none) || enif_is_identical(term, ATOMS.undefined))
        Py_RETURN_NONE;
    PyObject *name = NULL;
    char small[256];
    unsigned len;
    if (enif_get_atom_length(env, term, &len, ERL_NIF_LATIN1) &&
        enif_get_atom(env, term, small, sizeof small, ERL_NIF_LATIN1) > 0) {
        name = PyUnicode_DecodeLatin1(small, len, NULL);
    } else {
        /* Code points above 255: read the UTF-8 text from the external format. */
        ErlNifBinary etf;
        if (!enif_term_to_binary(env, term, &etf))
            return PyErr_NoMemory();
        const unsigned char *p = etf.data;
        if (etf.size >= 3 && p[1] == ETF_SMALL_ATOM_UTF8)
            name = PyUnicode_DecodeUTF8((const char *)p + 3, p[2], NULL);
        else if (etf.size >= 4 && p[1] == ETF_ATOM_UTF8)
            name = PyUnicode_DecodeUTF8((const char *)p + 4, (p[2] << 8) | p[3], NULL);
        else
            PyErr_SetString(PyExc_ValueError, "unexpected atom encoding");
        enif_release_binary(&etf);
    }
    if (!name)
        return NULL;
    PyObject *atom = PyObject_CallOneArg(PY.atom_type, name);
    Py_DECREF(name);
    return atom;
}

static PyObject *to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth);

static PyObject *list_to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth)
{
    unsigned len;
    if (!enif_get_list_length(env, term, &len)) /* improper: kept opaque */
        return erlpy_term_new(env, term);
    PyObject *list = PyList_New(len);
    if (!list)
        return NULL;
    ERL_NIF_TERM head, tail = term;
    for (unsigned i = 0; i < len; i++) {
        enif_get_list_cell(env, tail, &head, &tail);
        PyObject *item = to_py(env, head, depth + 1);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *tuple_to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth)
{
    int arity;
    const ERL_NIF_TERM *elems;
    enif_get_tuple(env, term, &arity, &elems);
    PyObject *tuple = PyTuple_New(arity);
    if (!tuple)
        return NULL;
    for (int i = 0; i < arity; i++) {
        PyObject *item = to_py(env, elems[i], depth + 1);
        if (!item) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, item);
    }
    return tuple;
}

static PyObject *map_to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth)
{
    PyObject *dict = PyDict_New();
    ErlNifMapIterator it;
    if (!dict || !enif_map_iterator_create(env, term, &it, ERL_NIF_MAP_ITERATOR_FIRST)) {
        Py_XDECREF(dict);
        return dict ? PyErr_NoMemory() : NULL;
    }
    ERL_NIF_TERM k, v;
    while (enif_map_iterator_get_pair(env, &it, &k, &v)) {
        PyObject *pk = to_py(env, k, depth + 1);
        PyObject *pv = pk ? to_py(env, v, depth + 1) : NULL;
        int rc = pv ? PyDict_SetItem(dict, pk, pv) : -1;
        Py_XDECREF(pk);
        Py_XDECREF(pv);
        if (rc < 0) {
            Py_CLEAR(dict);
            break;
        }
        enif_map_iterator_next(env, &it);
    }
    enif_map_iterator_destroy(env, &it);
    return dict;
}

static PyObject *to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth)
{
    if (depth > ERLPY_MAX_DEPTH || stack_low())
        return nesting_error();
    switch (enif_term_type(env, term)) {
    case ERL_NIF_TERM_TYPE_INTEGER: {
        ErlNifSInt64 i;
        if (enif_get_int64(env, term, &i))
            return PyLong_FromLongLong(i);
        return bignum_to_py(env, term);
    }
    case ERL_NIF_TERM_TYPE_FLOAT: {
        double d;
        enif_get_double(env, term, &d);
        return PyFloat_FromDouble(d);
    }
    case ERL_NIF_TERM_TYPE_BITSTRING: {
        ErlNifBinary bin;
        if (!enif_inspect_binary(env, term, &bin)) /* bitstring of odd bit length */
            return erlpy_term_new(env, term);
        return PyBytes_FromStringAndSize((const char *)bin.data, bin.size);
    }
    case ERL_NIF_TERM_TYPE_ATOM:
        return atom_to_py(env, term);
    case ERL_NIF_TERM_TYPE_LIST:
        return list_to_py(env, term, depth);
    case ERL_NIF_TERM_TYPE_TUPLE:
        return tuple_to_py(env, term, depth);
    case ERL_NIF_TERM_TYPE_MAP:
        return map_to_py(env, term, depth);
    case ERL_NIF_TERM_TYPE_PID: {
        ErlNifPid pid;
        if (enif_get_local_pid(env, term, &pid))
            return erlpy_pid_new(&pid);
        return erlpy_term_new(env, term);
    }
    case ERL_NIF_TERM_TYPE_REFERENCE: {
        object_res_t *res;
        if (enif_get_resource(env, term, ERLPY_OBJECT_RT, (void **)&res)) {
            PyObject *obj = janitor_item_object(res->item);
            Py_INCREF(obj);
            return obj;
        }
        int is_buffer = 0;
        PyObject *buf = erlpy_buffer_to_py(env, term, &is_buffer);
        if (is_buffer)
            return buf;
        return erlpy_term_new(env, term);
    }
    default: /* funs, ports: round-trip as opaque erlang.Term */
        return erlpy_term_new(env, term);
    }
}

PyObject *erlpy_to_py(ErlNifEnv *env, ERL_NIF_TERM term)
{
    return to_py(env, term, 0);
}

PyObject *erlpy_kwargs_to_py(ErlNifEnv *env, ERL_NIF_TERM map)
{
    PyObject *dict = erlpy_to_py(env, map);
    if (!dict)
        return NULL;
    if (!PyDict_Check(dict)) {
        Py_DECREF(dict);
        PyErr_SetString(PyExc_TypeError, "keyword arguments must be a map");
        return NULL;
    }
    /* Binary keys arrive as bytes; Python wants str names. */
    PyObject *kwargs = PyDict_New();
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (kwargs && PyDict_Next(dict, &pos, &k, &v)) {
        PyObject *name = PyBytes_Check(k) ? PyUnicode_FromEncodedObject(k, "utf-8", "strict")
                                          : PyObject_Str(k);
        if (!name || PyDict_SetItem(kwargs, name, v) < 0)
            Py_CLEAR(kwargs);
        Py_XDECREF(name);
    }
    Py_DECREF(dict);
    return kwargs;
}

/* ---------------------------------------------------------------- Python -> Erlang */

static conv_status_t from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out, int depth);

/* The magnitude of a non-negative int as little-endian bytes, in a buffer
 * from PyMem_Malloc (freed by the caller); *n gets its length, without
 * leading zero bytes. */
static unsigned char *magnitude_bytes(PyObject *absval, size_t *n)
{
    unsigned char *buf = NULL;
#if PY_VERSION_HEX >= 0x030D0000
    const int flags = Py_ASNATIVEBYTES_LITTLE_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER;
    Py_ssize_t need = PyLong_AsNativeBytes(absval, NULL, 0, flags);
    if (need < 0)
        return NULL;
    if (!(buf = PyMem_Malloc(need > 0 ? (size_t)need : 1)))
        return (unsigned char *)PyErr_NoMemory();
    Py_ssize_t got = PyLong_AsNativeBytes(absval, buf, need, flags);
    if (got < 0 || got > need) {
        if (got >= 0)
            PyErr_SetString(PyExc_OverflowError, "integer changed size while converting");
        PyMem_Free(buf);
        return NULL;
    }
    *n = (size_t)need;
#else
    /* No public C call before 3.13: int.bit_length and int.to_bytes. */
    PyObject *bits = PyObject_CallMethod(absval, "bit_length", NULL);
    Py_ssize_t nbits = bits ? PyLong_AsSsize_t(bits) : -1;
    Py_XDECREF(bits);
    if (nbits < 0)
        return NULL;
    Py_ssize_t need = (nbits + 7) / 8;
    PyObject *bytes = PyObject_CallMethod(absval, "to_bytes", "ns", need, "little");
    if (!bytes)
        return NULL;
    if (!PyBytes_Check(bytes) || PyBytes_GET_SIZE(bytes) != need ||
        !(buf = PyMem_Malloc(need > 0 ? (size_t)need : 1))) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        Py_DECREF(bytes);
        return NULL;
    }
    memcpy(buf, PyBytes_AS_STRING(bytes), (size_t)need);
    Py_DECREF(bytes);
    *n = (size_t)need;
#endif
    while (*n > 0 && buf[*n - 1] == 0)
        (*n)--;
    return buf;
}

static conv_status_t long_from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return CONV_PYERR;
    if (!overflow) {
        *out = enif_make_int64(env, v);
        return CONV_OK;
    }
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(obj);
        if (!(u == (unsigned long long)-1 && PyErr_Occurred())) {
            *out = enif_make_uint64(env, u);
            return CONV_OK;
        }
        PyErr_Clear(); /* past 64 bits */
    }
    /* Build the external format of a big integer and let the VM decode it. */
    PyObject *absval = PyNumber_Absolute(obj);
    if (!absval)
        return CONV_PYERR;
    size_t n = 0;
    unsigned char *mag = magnitude_bytes(absval, &n);
    Py_DECREF(absval);
    if (!mag)
        return CONV_PYERR;
    conv_status_t status = CONV_PYERR;
    ErlNifBinary etf;
    if (n > 0xFFFFFFFFu) {
        PyErr_SetString(PyExc_OverflowError, "integer too large for the Erlang VM");
        goto done;
    }
    if (!enif_alloc_binary(n + 7, &etf)) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *p = etf.data;
    p[0] = ETF_VERSION;
    p[1] = ETF_LARGE_BIG;
    p[2] = (unsigned char)(n >> 24);
    p[3] = (unsigned char)(n >> 16);
    p[4] = (unsigned char)(n >> 8);
    p[5] = (unsigned char)n;
    p[6] = overflow < 0;
    memcpy(p + 7, mag, n);
    if (enif_binary_to_term(env, p, etf.size, out, ERL_NIF_BIN2TERM_SAFE) > 0)
        status = CONV_OK;
    else
        PyErr_SetString(PyExc_OverflowError, "integer too large for the Erlang VM");
    enif_release_binary(&etf);
done:
    PyMem_Free(mag);
    return status;
}

static conv_status_t float_from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    double d = PyFloat_AS_DOUBLE(obj);
    if (isnan(d))
        *out = ATOMS.nan;
    else if (isinf(d))
        *out = d > 0 ? ATOMS.inf : ATOMS.neg_inf;
    else
        *out = enif_make_double(env, d);
    return CONV_OK;
}

static conv_status_t bytes_from_py(ErlNifEnv *env, const char *data, size_t len, ERL_NIF_TERM *out)
{
    unsigned char *dst = enif_make_new_binary(env, len, out);
    if (!dst) {
        PyErr_NoMemory();
        return CONV_PYERR;
    }
    memcpy(dst, data, len);
    return CONV_OK;
}

/* Atoms come back only if they already exist: Python data never mints atoms. */
static conv_status_t atom_from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &len);
    if (!utf8)
        return CONV_PYERR;
    PyObject *latin1 = PyUnicode_AsLatin1String(obj);
    int found;
    if (latin1) {
        found = enif_make_existing_atom_len(env, PyBytes_AS_STRING(latin1),
                                            PyBytes_GET_SIZE(latin1), out, ERL_NIF_LATIN1);
        Py_DECREF(latin1);
    } else {
        PyErr_Clear();
        found = 0;
        unsigned char etf[4 + 1024];
        if (len <= 1020) {
            etf[0] = ETF_VERSION;
            etf[1] = ETF_ATOM_UTF8;
            etf[2] = (unsigned char)(len >> 8);
            etf[3] = (unsigned char)len;
            memcpy(etf + 4, utf8, len);
            found = enif_binary_to_term(env, etf, 4 + len, out, ERL_NIF_BIN2TERM_SAFE) > 0;
        }
    }
    if (!found) {
        PyErr_Format(PyExc_ValueError, "atom '%U' does not exist in the Erlang VM", obj);
        return CONV_PYERR;
    }
    return CONV_OK;
}

static conv_status_t seq_from_py(ErlNifEnv *env, PyObject *seq, int is_tuple, ERL_NIF_TERM *out, int depth)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    ERL_NIF_TERM small[16];
    ERL_NIF_TERM *terms = n <= 16 ? small : enif_alloc(sizeof(ERL_NIF_TERM) * n);
    if (!terms) {
        PyErr_NoMemory();
        return CONV_PYERR;
    }
    conv_status_t status = CONV_OK;
    for (Py_ssize_t i = 0; i < n && status == CONV_OK; i++)
        status = from_py(env, items[i], &terms[i], depth + 1);
    if (status == CONV_OK)
        *out = is_tuple ? enif_make_tuple_from_array(env, terms, n)
                        : enif_make_list_from_array(env, terms, n);
    if (terms != small)
        enif_free(terms);
    return status;
}

static conv_status_t dict_from_py(ErlNifEnv *env, PyObject *dict, ERL_NIF_TERM *out, int depth)
{
    Py_ssize_t n = PyDict_GET_SIZE(dict);
    ERL_NIF_TERM *keys = enif_alloc(sizeof(ERL_NIF_TERM) * (2 * n + 1));
    if (!keys) {
        PyErr_NoMemory();
        return CONV_PYERR;
    }
    ERL_NIF_TERM *values = keys + n;
    PyObject *k, *v;
    Py_ssize_t pos = 0, i = 0;
    conv_status_t status = CONV_OK;
    while (status == CONV_OK && i < n && PyDict_Next(dict, &pos, &k, &v)) {
        status = from_py(env, k, &keys[i], depth + 1);
        if (status == CONV_OK)
            status = from_py(env, v, &values[i], depth + 1);
        i++;
    }
    if (status == CONV_OK && !enif_make_map_from_arrays(env, keys, values, n, out)) {
        /* Two Python keys became one Erlang key (e.g. 'a' and b'a'): last wins. */
        *out = enif_make_new_map(env);
        for (Py_ssize_t j = 0; j < n; j++)
            enif_make_map_put(env, *out, keys[j], values[j], out);
    }
    enif_free(keys);
    return status;
}

static conv_status_t from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out, int depth)
{
    if (depth > ERLPY_MAX_DEPTH || stack_low()) {
        nesting_error();
        return CONV_TOO_DEEP;
    }
    if (obj == Py_None) {
        *out = ATOMS.none;
        return CONV_OK;
    }
    if (obj == Py_True || obj == Py_False) {
        *out = obj == Py_True ? ATOMS.true_ : ATOMS.false_;
        return CONV_OK;
    }
    if (PyLong_Check(obj))
        return long_from_py(env, obj, out);
    if (PyFloat_Check(obj))
        return float_from_py(env, obj, out);
    if (PyBytes_Check(obj))
        return bytes_from_py(env, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj), out);
    if (PyByteArray_Check(obj))
        return bytes_from_py(env, PyByteArray_AS_STRING(obj), PyByteArray_GET_SIZE(obj), out);
    if (PyObject_TypeCheck(obj, (PyTypeObject *)PY.atom_type))
        return atom_from_py(env, obj, out);
    if (PyUnicode_Check(obj)) {
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &len);
        return utf8 ? bytes_from_py(env, utf8, len, out) : CONV_PYERR;
    }
    if (PyList_Check(obj) || PyTuple_Check(obj))
        return seq_from_py(env, obj, PyTuple_Check(obj), out, depth);
    if (PyDict_Check(obj))
        return dict_from_py(env, obj, out, depth);
    ErlNifPid pid;
    if (erlpy_pid_check(obj, &pid)) {
        *out = enif_make_pid(env, &pid);
        return CONV_OK;
    }
    if (erlpy_term_check(obj, env, out) || erlpy_buffer_from_py(env, obj, out))
        return CONV_OK;
    *out = erlpy_make_object_handle(env, obj);
    if (!*out) {
        PyErr_NoMemory();
        return CONV_PYERR;
    }
    return CONV_OK;
}

conv_status_t erlpy_from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    return from_py(env, obj, out, 0);
}

/* ---------------------------------------------------------------- exceptions */

static ERL_NIF_TERM str_to_binary(ErlNifEnv *env, PyObject *str)
{
    ERL_NIF_TERM bin;
    Py_ssize_t len = 0;
    const char *utf8 = str ? PyUnicode_AsUTF8AndSize(str, &len) : NULL;
    if (!utf8) {
        PyErr_Clear();
        utf8 = "";
        len = 0;
    }
    unsigned char *dst = enif_make_new_binary(env, len, &bin);
    if (dst)
        memcpy(dst, utf8, len);
    return bin;
}

static PyObject *exception_type_name(PyObject *exc)
{
    PyObject *type = (PyObject *)Py_TYPE(exc);
    PyObject *module = PyObject_GetAttrString(type, "__module__");
    PyObject *qualname = PyObject_GetAttrString(type, "__qualname__");
    PyObject *name = NULL;
    if (qualname && module && PyUnicode_Check(module) &&
        PyUnicode_CompareWithASCIIString(module, "builtins") != 0)
        name = PyUnicode_FromFormat("%U.%U", module, qualname);
    else if (qualname)
        name = Py_NewRef(qualname);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return name;
}

ERL_NIF_TERM erlpy_error_from_exception(ErlNifEnv *env)
{
    PyObject *etype, *exc, *etb;
    PyErr_Fetch(&etype, &exc, &etb);
    if (!etype)
        return erlpy_make_error(env, ATOMS.error);
    PyErr_NormalizeException(&etype, &exc, &etb);
    if (etb)
        PyException_SetTraceback(exc, etb);
    Py_XDECREF(etb);
    int too_deep = PyErr_GivenExceptionMatches(etype, PY.too_deep);
    Py_DECREF(etype);
    if (too_deep) {
        Py_XDECREF(exc);
        return erlpy_make_error(env, ATOMS.too_deep);
    }
    PyErr_Clear();
    PyObject *type = exception_type_name(exc);
    PyObject *msg = PyObject_Str(exc);
    PyObject *lines = PyObject_CallOneArg(PY.format_exception, exc);
    PyObject *empty = PyUnicode_FromString("");
    PyObject *tb = lines && empty ? PyUnicode_Join(empty, lines) : NULL;
    PyErr_Clear();
    ERL_NIF_TERM reason = enif_make_tuple4(env, ATOMS.python, str_to_binary(env, type),
                                           str_to_binary(env, msg), str_to_binary(env, tb));
    Py_XDECREF(type);
    Py_XDECREF(msg);
    Py_XDECREF(lines);
    Py_XDECREF(empty);
    Py_XDECREF(tb);
    Py_DECREF(exc);
    return erlpy_make_error(env, reason);
}
