/*
 * Shared helpers of the C test programs in tests/c/ (driven by
 * tests/c_api.rs). Header-only: every program is a single translation unit.
 *
 * Conventions of every program:
 * - exit 0 = pass, 1 = fail (a "FAIL file:line: ..." line on stderr),
 *   77 = skip (a "SKIP: reason" line on stdout), anything else = crash;
 * - one summary line on stdout, naming the backend in use;
 * - ordering by value handshakes on shared words or by kernel state (the
 *   number of waiters queued on a futex word), never by sleeping; time only
 *   as a watchdog (alarm(), poll timeouts that fail the test);
 * - fork children make their own handles, never touch the parent's, and
 *   leave with _exit() (they must not flush the parent's stdio buffers or
 *   run its atexit handlers).
 */
#ifndef AFX_TEST_COMMON_H
#define AFX_TEST_COMMON_H

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>

#include "asyncfutex.h"

/* Seconds before a stuck program is killed by its own watchdog (the driver
 * has a longer one of its own). */
#define T_WATCHDOG_S 30u
/* Milliseconds a poll for a readiness that must come may take. */
#define T_READY_MS 10000

static const char *t_name = "?";
static int t_in_child;
static pid_t t_parent_pid;

static inline void t_die(int code)
{
    if (t_in_child)
        _exit(code);
    exit(code);
}

static inline void t_vfail(const char *file, int line, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "FAIL %s:%d%s: %s\n", file, line, t_in_child ? " (in child)" : "", msg);
    fflush(stderr);
}

static inline void t_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
static inline void t_fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    t_vfail(file, line, fmt, ap);
    va_end(ap);
    t_die(1);
    abort();
}

#define FAIL(...) t_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            FAIL("check failed: %s", #cond);                                                      \
    } while (0)
#define CHECK_EQ(actual, expected)                                                                 \
    do {                                                                                           \
        long long t_a_ = (long long)(actual), t_e_ = (long long)(expected);                       \
        if (t_a_ != t_e_)                                                                          \
            FAIL("%s is %lld (%s), expected %s = %lld", #actual, t_a_,                            \
                 t_a_ < 0 ? afx_strerror((int)t_a_) : "-", #expected, t_e_);                      \
    } while (0)
#define CHECK_NOT_NULL(p)                                                                          \
    do {                                                                                           \
        if ((p) == NULL)                                                                           \
            FAIL("%s is NULL (errno %d: %s)", #p, errno, strerror(errno));                        \
    } while (0)

static inline void t_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void t_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("SKIP: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
    t_die(77);
    abort();
}

static inline void t_on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL: watchdog expired: the test is stuck\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(3);
}

static inline void t_watchdog(unsigned seconds)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = t_on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds);
}

/* The backend in use, started now; a counted skip when AFX_BACKEND asks
 * for one that cannot run here, a failure otherwise. */
static inline const char *t_backend(void)
{
    int b = afx_backend();
    if (b < 0) {
        const char *env = getenv("AFX_BACKEND");
        if (env && *env && strcmp(env, "auto") != 0)
            t_skip("AFX_BACKEND=%s cannot run here: %s", env, afx_strerror(b));
        FAIL("afx_backend() = %d (%s)", b, afx_strerror(b));
    }
    const char *name = afx_backend_name(b);
    const char *env = getenv("AFX_BACKEND");
    if (env && *env && strcmp(env, "auto") != 0 && strcmp(env, name) != 0)
        FAIL("AFX_BACKEND=%s but the backend in use is %s", env, name);
    return name;
}

/* Call first: unbuffered stdout (fork must not duplicate buffered output),
 * the watchdog, and the backend. Returns the backend's name. */
static inline const char *t_start(const char *name)
{
    t_name = name;
    setvbuf(stdout, NULL, _IONBF, 0);
    t_parent_pid = getpid();
    t_watchdog(T_WATCHDOG_S);
    return t_backend();
}

static inline void t_pass(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void t_pass(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("PASS %s [backend %s]: ", t_name, afx_backend_name(afx_backend()));
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

/* Iteration counts: a tenth under AFX_TEST_QUICK (set for valgrind runs). */
static inline int t_scale(int n)
{
    const char *quick = getenv("AFX_TEST_QUICK");
    if (quick && *quick && strcmp(quick, "0") != 0)
        return n / 10 > 0 ? n / 10 : 1;
    return n;
}

/* ---- time ------------------------------------------------------------- */

static inline int64_t t_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- shared memory and words -------------------------------------------- */

static inline void *t_shared(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        FAIL("mmap(MAP_SHARED): %s", strerror(errno));
    return p;
}

static inline uint32_t t_load(const uint32_t *w) { return __atomic_load_n(w, __ATOMIC_SEQ_CST); }
static inline void t_store(uint32_t *w, uint32_t v) { __atomic_store_n(w, v, __ATOMIC_SEQ_CST); }
static inline uint32_t t_add(uint32_t *w, uint32_t v) { return __atomic_add_fetch(w, v, __ATOMIC_SEQ_CST); }
static inline int t_cas(uint32_t *w, uint32_t old, uint32_t new_)
{
    return __atomic_compare_exchange_n(w, &old, new_, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* ---- raw futex(2): the test's own handshakes, and a peer that does not use
 * the library ------------------------------------------------------------ */

static inline long t_futex(uint32_t *w, int op, uint32_t val, const struct timespec *ts, uint32_t *w2,
                    uint32_t val3)
{
    return syscall(SYS_futex, w, op, val, ts, w2, val3);
}

/* FUTEX_WAIT; returns 0 (woken) or -errno (EAGAIN, EINTR, ETIMEDOUT). */
static inline int t_raw_wait(uint32_t *w, uint32_t expected, int private_, const struct timespec *ts)
{
    long r = t_futex(w, FUTEX_WAIT | (private_ ? FUTEX_PRIVATE_FLAG : 0), expected, ts, NULL, 0);
    return r < 0 ? -errno : (int)r;
}

/* FUTEX_WAKE; returns how many were woken or -errno. */
static inline int t_raw_wake(uint32_t *w, int n, int private_)
{
    long r = t_futex(w, FUTEX_WAKE | (private_ ? FUTEX_PRIVATE_FLAG : 0), (uint32_t)n, NULL, NULL, 0);
    return r < 0 ? -errno : (int)r;
}

/* How many kernel futex waiters are queued on `w` (shared or private key),
 * without waking any: FUTEX_CMP_REQUEUE of every waiter onto the same word
 * (the kernel only re-keys them in place; order and state are kept) returns
 * the number requeued. This is how the tests know "the peer is asleep in
 * the kernel" without consuming a wake. */
static inline int t_waiters(uint32_t *w, int private_)
{
    for (;;) {
        uint32_t cur = t_load(w);
        long r = syscall(SYS_futex, w, FUTEX_CMP_REQUEUE | (private_ ? FUTEX_PRIVATE_FLAG : 0), 0,
                         (unsigned long)INT_MAX, w, cur);
        if (r >= 0)
            return (int)r;
        if (errno != EAGAIN)
            FAIL("FUTEX_CMP_REQUEUE probe: %s", strerror(errno));
    }
}

/* Waits (watchdog-bounded) until exactly `n` kernel waiters are queued,
 * where the count can only rise towards `n` (waits being armed, a helper
 * re-queueing its waits): more than `n` is a bug (a wait queued twice, a
 * waiter that should be gone) and fails at once. Where waiters leave
 * asynchronously, use t_await_waiters_leave. */
static inline void t_await_waiters(uint32_t *w, int private_, int n)
{
    for (;;) {
        int last = t_waiters(w, private_);
        if (last == n)
            return;
        if (last > n)
            FAIL("%d futex waiters queued, expected at most %d", last, n);
        sched_yield();
    }
}

/* Waits (watchdog-bounded) until the count comes *down* to `n`: waiters
 * that leave asynchronously, such as the waits of a SIGKILLed process,
 * whose io_uring the kernel tears down from a workqueue after waitpid()
 * has returned. The count passes through every value on the way, so any
 * value above `n` is expected; what fails is the count going *up* (a new
 * waiter appeared while only departures were due) or below `n`. */
static inline void t_await_waiters_leave(uint32_t *w, int private_, int n)
{
    int prev = t_waiters(w, private_);
    for (;;) {
        int last = t_waiters(w, private_);
        if (last == n)
            return;
        if (last < n)
            FAIL("%d futex waiters queued, expected the count to come down to %d", last, n);
        if (last > prev)
            FAIL("futex waiters went from %d up to %d while waiting for them to leave (down to %d)",
                 prev, last, n);
        prev = last;
        sched_yield();
    }
}

/* Handshake: waits until *w == v (raw shared futex, watchdog-bounded). */
static inline void t_await(uint32_t *w, uint32_t v)
{
    for (;;) {
        uint32_t cur = t_load(w);
        if (cur == v)
            return;
        t_raw_wait(w, cur, 0, NULL);
    }
}

/* Handshake: waits until *w >= v. */
static inline void t_await_at_least(uint32_t *w, uint32_t v)
{
    for (;;) {
        uint32_t cur = t_load(w);
        if (cur >= v)
            return;
        t_raw_wait(w, cur, 0, NULL);
    }
}

/* Handshake: stores v and wakes every raw waiter. */
static inline void t_signal(uint32_t *w, uint32_t v)
{
    t_store(w, v);
    t_raw_wake(w, INT_MAX, 0);
}

/* Handshake: adds v, wakes every raw waiter, returns the new value. */
static inline uint32_t t_signal_add(uint32_t *w, uint32_t v)
{
    uint32_t n = t_add(w, v);
    t_raw_wake(w, INT_MAX, 0);
    return n;
}

/* ---- processes ---------------------------------------------------------- */

/* fork(); the child dies with the parent and gets its own watchdog. */
static inline pid_t t_fork(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        t_in_child = 1;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != t_parent_pid)
            _exit(4);
        t_watchdog(T_WATCHDOG_S);
    }
    return pid;
}

/* Leaves a child process. */
static inline void t_child_exit(int code) __attribute__((noreturn));
static inline void t_child_exit(int code)
{
    fflush(stdout);
    fflush(stderr);
    _exit(code);
}

/* Reaps a child, failing unless it exited with 0. */
static inline void t_reap(pid_t pid)
{
    int status;
    for (;;) {
        if (waitpid(pid, &status, 0) == pid)
            break;
        if (errno != EINTR)
            FAIL("waitpid(%d): %s", (int)pid, strerror(errno));
    }
    if (WIFSIGNALED(status))
        FAIL("child %d killed by signal %d (%s)", (int)pid, WTERMSIG(status),
             strsignal(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("child %d exited with status %d", (int)pid, WEXITSTATUS(status));
}

/* ---- file descriptors --------------------------------------------------- */

/* poll() one fd for POLLIN: 1 readable, 0 not within timeout_ms. */
static inline int t_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
    for (;;) {
        int r = poll(&p, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL("poll: %s", strerror(errno));
        if (r > 0 && (p.revents & ~POLLIN))
            FAIL("poll revents 0x%x", (unsigned)p.revents);
        return r > 0;
    }
}

/* Fails unless the handle's eventfd becomes readable within T_READY_MS. */
#define CHECK_READY(f, what)                                                                       \
    do {                                                                                           \
        if (!t_readable(afx_eventfd(f), T_READY_MS))                                              \
            FAIL("%s: eventfd not readable after %d ms", what, T_READY_MS);                      \
    } while (0)

/* Fails if the handle's eventfd is readable now. */
#define CHECK_NOT_READY(f, what)                                                                   \
    do {                                                                                           \
        if (t_readable(afx_eventfd(f), 0))                                                        \
            FAIL("%s: eventfd readable, expected not", what);                                     \
    } while (0)

/* Loops afx_wake(f, 1) until it reports a woken kernel waiter (an async wait
 * is queued asynchronously, so the first wakes may find none). */
static inline void t_wake_one(afx_t *f)
{
    for (;;) {
        int n = afx_wake(f, 1);
        if (n == 1)
            return;
        if (n != 0)
            FAIL("afx_wake(f, 1) = %d (%s)", n, afx_strerror(n));
        sched_yield();
    }
}

/* ---- seccomp ------------------------------------------------------------ */

#if defined(__x86_64__)
#define T_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define T_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* Makes the listed system calls fail with `err` in this (single-threaded)
 * process and every thread it creates later, like a container's seccomp
 * profile. Returns 0, or -1 where the test does not know the audit arch. */
static inline int t_deny_syscalls(const long *nrs, int n, int err)
{
#ifdef T_AUDIT_ARCH
    struct sock_filter f[64];
    int k = 0;
    if (n > 28)
        FAIL("t_deny_syscalls: too many");
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          (uint32_t)offsetof(struct seccomp_data, arch));
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, T_AUDIT_ARCH, 1, 0);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          (uint32_t)offsetof(struct seccomp_data, nr));
    for (int i = 0; i < n; i++) {
        f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nrs[i], 0, 1);
        f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K,
                                              SECCOMP_RET_ERRNO | ((uint32_t)err & SECCOMP_RET_DATA));
    }
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {.len = (unsigned short)k, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        FAIL("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        FAIL("PR_SET_SECCOMP: %s", strerror(errno));
    return 0;
#else
    (void)nrs;
    (void)n;
    (void)err;
    return -1;
#endif
}

/* t_start() without starting the backend: for programs that fork children
 * which must choose their backend themselves. */
static inline void t_start_bare(const char *name)
{
    t_name = name;
    setvbuf(stdout, NULL, _IONBF, 0);
    t_parent_pid = getpid();
    t_watchdog(T_WATCHDOG_S);
}

/* A self-contained async round trip on a private word: arm, wake from this
 * thread until a kernel waiter is found, readable, ack 1. */
static inline void t_async_round_trip(void)
{
    uint32_t word = 1;
    afx_t *f = afx_new(&word, AFX_PRIVATE);
    CHECK_NOT_NULL(f);
    CHECK_EQ(afx_wait_async(f, 1), 0);
    t_wake_one(f);
    if (!t_readable(afx_eventfd(f), T_READY_MS))
        FAIL("async wait not completed by a wake");
    CHECK_EQ(afx_ack(f), 1);
    CHECK_EQ(afx_wait_async(f, 0), 0); /* stale */
    CHECK(t_readable(afx_eventfd(f), 0));
    CHECK_EQ(afx_ack(f), 1);
    afx_free(f);
}

/* ---- counting fds and threads (additions for the resource tests) ------- */

#include <dirent.h>
#include <sys/resource.h>

/* Entries of a /proc directory, not counting the DIR's own fd when `path`
 * is /proc/self/fd. */
static inline int t_count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        FAIL("opendir %s: %s", path, strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - (strcmp(path, "/proc/self/fd") == 0);
}

static inline int t_open_fds(void) { return t_count_dir("/proc/self/fd"); }
static inline int t_threads(void) { return t_count_dir("/proc/self/task"); }

#endif /* AFX_TEST_COMMON_H */
