/* threads.h - what erlpy's own threads share: starting one, and the clock
 * their deadlines use.  No erl_nif.h, no Python.h. */
#ifndef ERLPY_THREADS_H
#define ERLPY_THREADS_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Starts fn(arg) on a detached thread with `stack` bytes of stack (erlpy's
 * threads convert deep terms and run Python recursion).  0 or an errno. */
static inline int erlpy_thread_start(void *(*fn)(void *), void *arg, size_t stack)
{
    pthread_t thread;
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, stack);
        rc = pthread_create(&thread, &attr, fn, arg);
        pthread_attr_destroy(&attr);
    }
    return rc;
}

/* CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t erlpy_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
