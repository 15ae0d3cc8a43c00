/*
 * Small helpers shared by the example programs (header-only, so each
 * example stays a single file to compile).
 *
 * Every example checks what it demonstrates: it prints what happens,
 * ends with an "OK: ..." line and exits 0, or prints "FAILED: ..." and
 * exits 1. A watchdog (alarm) turns a hang into a failure.
 */
#ifndef AFX_EXAMPLE_H
#define AFX_EXAMPLE_H

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <asyncfutex.h>

/* Seconds before a stuck example gives up. */
#define EX_WATCHDOG_S 20u

static int ex_in_child;

/* Children forked and not yet reaped: a failing parent kills them, so that
 * none lingers (blocked on a peer that is gone) until its own watchdog. */
enum { EX_MAX_CHILDREN = 128 };
static pid_t ex_children[EX_MAX_CHILDREN];

static inline void ex_kill_children(void)
{
    for (int i = 0; i < EX_MAX_CHILDREN; i++)
        if (ex_children[i] > 0)
            kill(ex_children[i], SIGKILL);
}

static inline void ex_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void ex_fail(const char *fmt, ...)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "FAILED%s: ", ex_in_child ? " (child)" : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n - 1, fmt, ap);
    va_end(ap);
    strcat(msg, "\n");
    /* One write, so that lines of several processes do not interleave. */
    ssize_t r = write(2, msg, strlen(msg));
    (void)r;
    if (ex_in_child)
        _exit(1);
    ex_kill_children();
    exit(1);
}

/* An afx_* call that must succeed: returns its (>= 0) result. */
static inline int ex_ok(int r, const char *what)
{
    if (r < 0)
        ex_fail("%s: %s", what, afx_strerror(r));
    return r;
}
#define AFX_OK(call) ex_ok((call), #call)

static inline void ex_on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "FAILED: watchdog: stuck for too long\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    if (!ex_in_child)
        ex_kill_children();
    _exit(3);
}

/* Call first: unbuffered stdout (so fork never duplicates output) and the
 * watchdog. Returns the name of the wait backend in use. */
static inline const char *ex_start(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGALRM, ex_on_alarm);
    alarm(EX_WATCHDOG_S);
    int backend = afx_backend();
    if (backend < 0)
        ex_fail("no wait backend: %s", afx_strerror(backend));
    return afx_backend_name(backend);
}

/* Memory shared with the children we fork (zeroed). */
static inline void *ex_shared(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        ex_fail("mmap: %s", strerror(errno));
    return p;
}

/* fork(); the child gets its own watchdog. A child makes its own afx
 * handles and leaves with _exit(). */
static inline pid_t ex_fork(void)
{
    pid_t pid = fork();
    if (pid < 0)
        ex_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        ex_in_child = 1;
        memset(ex_children, 0, sizeof ex_children);
        alarm(EX_WATCHDOG_S);
        return 0;
    }
    for (int i = 0; i < EX_MAX_CHILDREN; i++)
        if (ex_children[i] == 0) {
            ex_children[i] = pid;
            break;
        }
    return pid;
}

/* Reaps a child; fails unless it exited with 0. (A child reaped with
 * waitpid directly stays listed: killing a reaped pid is avoided by
 * reaping through here, or by ex_forget.) */
static inline void ex_reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            ex_fail("waitpid: %s", strerror(errno));
    }
    for (int i = 0; i < EX_MAX_CHILDREN; i++)
        if (ex_children[i] == pid)
            ex_children[i] = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        ex_fail("child %d ended with status 0x%x", (int)pid, (unsigned)status);
}

/* Drops a child reaped without ex_reap from the kill-on-failure list. */
static inline void ex_forget(pid_t pid)
{
    for (int i = 0; i < EX_MAX_CHILDREN; i++)
        if (ex_children[i] == pid)
            ex_children[i] = 0;
}

/* Sequentially consistent atomics on shared words (C11 builtins). */
static inline uint32_t ex_load(const uint32_t *w) { return __atomic_load_n(w, __ATOMIC_SEQ_CST); }
static inline void ex_store(uint32_t *w, uint32_t v) { __atomic_store_n(w, v, __ATOMIC_SEQ_CST); }
static inline uint32_t ex_add(uint32_t *w, uint32_t v) { return __atomic_add_fetch(w, v, __ATOMIC_SEQ_CST); }

static inline double ex_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif /* AFX_EXAMPLE_H */
