/*
 * no_futex_waitv: where futex_waitv(2) is refused (kernels before 5.16 and
 * old seccomp profiles: ENOSYS; some profiles: EPERM) the library stays
 * fully usable:
 * (a) futex_waitv denied, io_uring allowed: AUTO picks io_uring and async
 *     waits work;
 * (b) futex_waitv denied (with EPERM, and with ENOSYS): AFX_BACKEND_THREAD
 *     starts in its per-wait mode (one pooled helper thread per pending
 *     wait in FUTEX_WAIT_BITSET, cancelled with a thread-directed signal)
 *     and async waits, wake counts, cancel and forwarding all work;
 * (c) futex_waitv and io_uring denied (EPERM, and ENOSYS): AUTO falls back
 *     to that same mode; same checks.
 * In (b) with ENOSYS the child also runs the sibling programs cancel_race,
 * cancel_forward, wake_counts and thread_exit under the same filter
 * (inherited across execve).
 * Each case runs in a fresh fork child with a seccomp filter.
 */
#include "common.h"

static void deny(int with_io_uring, int err)
{
#ifndef SYS_futex_waitv
    (void)with_io_uring;
    (void)err;
    t_skip("the system headers do not know futex_waitv");
#else
    const long nrs[] = {SYS_futex_waitv, SYS_io_uring_setup, SYS_io_uring_enter,
                        SYS_io_uring_register};
    if (t_deny_syscalls(nrs, with_io_uring ? 4 : 1, err) != 0)
        t_skip("no seccomp audit arch known for this CPU");
    /* The filter works: futex_waitv with no entries fails with `err`. */
    errno = 0;
    long r = syscall(SYS_futex_waitv, NULL, 0, 0, NULL, CLOCK_MONOTONIC);
    if (r != -1 || errno != err)
        FAIL("futex_waitv under the filter: %ld, errno %d (want %d)", r, errno, err);
#endif
}

enum { WORD_VALUE = 7, MANY = 64 };

/* Exactly `n` of the handles become readable (and stay the only ones):
 * acks them and returns how many. */
static int ack_ready(afx_t **h, int count, int n)
{
    int64_t until = t_now_ns() + (int64_t)T_READY_MS * 1000000;
    int got = 0;
    while (got < n) {
        for (int i = 0; i < count; i++)
            if (t_readable(afx_eventfd(h[i]), 0)) {
                CHECK_EQ(afx_ack(h[i]), 1);
                got++;
            }
        if (got < n && t_now_ns() > until)
            FAIL("%d of %d woken waits completed within %d ms", got, n, T_READY_MS);
        if (got < n)
            sched_yield();
    }
    for (int i = 0; i < count; i++)
        if (t_readable(afx_eventfd(h[i]), 0))
            FAIL("more than %d waits completed", n);
    return got;
}

/* Waits (watchdog: 10 s) until no thread of this process but the caller
 * is running or runnable (state R in /proc/self/task/TID/stat). */
static void await_others_asleep(void)
{
    char self[32];
    snprintf(self, sizeof self, "%d", (int)gettid());
    int64_t deadline = t_now_ns() + 10 * (int64_t)1000000000;
    for (;;) {
        int running = 0;
        DIR *d = opendir("/proc/self/task");
        if (!d)
            FAIL("opendir /proc/self/task: %s", strerror(errno));
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' || strcmp(e->d_name, self) == 0)
                continue;
            char path[300], buf[256];
            snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
            FILE *f = fopen(path, "r");
            if (!f)
                continue; /* exited meanwhile */
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            const char *state = strrchr(buf, ')'); /* after "pid (comm)" */
            if (state && state[1] == ' ' && state[2] == 'R')
                running++;
        }
        closedir(d);
        if (running == 0)
            return;
        if (t_now_ns() > deadline)
            FAIL("%d threads still running after 10 s", running);
        sched_yield();
    }
}

/* Async waits, wake counts, cancel, forwarding and cancel-vs-wake races on
 * a shared word, in per-wait mode. */
static void exercise(const char *how)
{
    const char *name = t_backend();
    if (strcmp(name, "thread") != 0)
        FAIL("%s: backend %s, want thread", how, name);
    t_async_round_trip();

    uint32_t *w = t_shared(4096);
    t_store(w, WORD_VALUE);
    afx_t *waker = afx_new(w, 0);
    CHECK_NOT_NULL(waker);

    /* Wake counts, with one helper thread per pending wait. */
    int threads_before = t_threads();
    afx_t *h[MANY];
    for (int i = 0; i < MANY; i++) {
        h[i] = afx_new(w, 0);
        CHECK_NOT_NULL(h[i]);
        CHECK_EQ(afx_wait_async(h[i], WORD_VALUE), 0);
    }
    t_await_waiters(w, 0, MANY);
    int threads_during = t_threads();
    if (threads_during < threads_before + MANY - 1)
        FAIL("%s: %d waits pending on %d threads (%d before): not the per-wait mode?", how, MANY,
             threads_during, threads_before);
    CHECK_EQ(afx_wake(waker, 0), 0);
    CHECK_EQ(afx_wake(waker, 3), 3);
    ack_ready(h, MANY, 3);
    t_await_waiters(w, 0, MANY - 3);
    CHECK_EQ(afx_wake(waker, UINT32_MAX), MANY - 3);
    ack_ready(h, MANY, MANY - 3);
    CHECK_EQ(t_waiters(w, 0), 0);

    /* Threads are reused. A helper goes back to the pool a moment after
     * its completion is delivered: wait until no other thread is running
     * (each helper asleep, so back in the pool), then arming again starts
     * none; a helper still asleep on the pool's lock may make one or two,
     * while without reuse there would be MANY new ones. */
    await_others_asleep();
    for (int i = 0; i < MANY; i++)
        CHECK_EQ(afx_wait_async(h[i], WORD_VALUE), 0);
    t_await_waiters(w, 0, MANY);
    int threads_again = t_threads();
    if (threads_again > threads_during + MANY / 4)
        FAIL("%s: arming %d waits again went from %d to %d threads: helpers not reused", how,
             MANY, threads_during, threads_again);
    /* Cancel: the kernel waits are gone when afx_cancel returns. */
    int64_t t0 = t_now_ns();
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ(afx_cancel(h[i]), 0);
        CHECK_EQ(t_waiters(w, 0), MANY - 1 - i);
    }
    double cancel_us = (double)(t_now_ns() - t0) / 1e3 / MANY;
    CHECK_EQ(afx_wake(waker, 1), 0);
    for (int i = 0; i < MANY; i++) {
        CHECK_NOT_READY(h[i], "cancelled wait");
        CHECK_EQ(afx_ack(h[i]), 0);
    }

    /* Stale expected value: completes at once. */
    CHECK_EQ(afx_wait_async(h[0], WORD_VALUE + 1), 0);
    CHECK_READY(h[0], "stale expected");
    CHECK_EQ(afx_ack(h[0]), 1);

    /* A consumed wake whose waiter is cancelled is forwarded; cancel racing
     * a wake: every wake reaches the other waiter (cancel_race.c). */
    const int iters = t_scale(300);
    for (int iter = 0; iter < iters; iter++) {
        afx_t *a = h[0], *b = h[1];
        CHECK_EQ(afx_wait_async(a, WORD_VALUE), 0);
        CHECK_EQ(afx_wait_async(b, WORD_VALUE), 0);
        t_await_waiters(w, 0, 2);
        CHECK_EQ(afx_wake(waker, 1), 1);
        if (iter % 2 == 1) {
            /* Let the wake land first: whichever got it is cancelled. */
            struct pollfd p[2] = {{.fd = afx_eventfd(a), .events = POLLIN, .revents = 0},
                                  {.fd = afx_eventfd(b), .events = POLLIN, .revents = 0}};
            int n;
            do
                n = poll(p, 2, T_READY_MS);
            while (n < 0 && errno == EINTR);
            if (n != 1)
                FAIL("iteration %d: %d eventfds readable after one wake", iter, n);
            if (p[1].revents & POLLIN) {
                a = h[1];
                b = h[0];
            }
        }
        CHECK_EQ(afx_cancel(a), 0);
        CHECK_NOT_READY(a, "cancelled handle");
        CHECK_EQ(afx_ack(a), 0);
        if (!t_readable(afx_eventfd(b), T_READY_MS))
            FAIL("%s, iteration %d: the wake was lost (%d kernel waiters left)", how, iter,
                 t_waiters(w, 0));
        CHECK_EQ(afx_ack(b), 1);
        CHECK_EQ(t_waiters(w, 0), 0);
    }

    /* Freeing a handle with a pending wait. */
    CHECK_EQ(afx_wait_async(h[2], WORD_VALUE), 0);
    t_await_waiters(w, 0, 1);
    afx_free(h[2]);
    h[2] = NULL;
    CHECK_EQ(t_waiters(w, 0), 0);

    for (int i = 0; i < MANY; i++)
        afx_free(h[i]);
    afx_free(waker);
    munmap(w, 4096);
    printf("  %s: %d waits on %d threads (%d before), cancel %.1f us each, %d cancel/wake races\n",
           how, MANY, threads_during, threads_before, cancel_us, iters);
}

/* Runs the sibling program `name` (same directory) in a child that
 * inherits the filter; fails unless it passes. */
static void run_sibling(const char *name)
{
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        FAIL("readlink /proc/self/exe: %s", strerror(errno));
    self[len] = 0;
    char *slash = strrchr(self, '/');
    CHECK(slash != NULL);
    char path[4200];
    snprintf(path, sizeof path, "%.*s/%s", (int)(slash - self), self, name);
    pid_t pid = fork();
    if (pid < 0)
        FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        char *argv[] = {path, NULL};
        execv(path, argv);
        fprintf(stderr, "execv %s: %s\n", path, strerror(errno));
        _exit(1);
    }
    int status;
    while (waitpid(pid, &status, 0) != pid)
        if (errno != EINTR)
            FAIL("waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("%s under the futex_waitv denial: status 0x%x", name, (unsigned)status);
}

static void auto_without_waitv(void)
{
    deny(0, ENOSYS);
    int b = afx_select_backend(AFX_BACKEND_AUTO);
    if (b == -EPERM || b == -ENOSYS || b == -EOPNOTSUPP)
        t_skip("io_uring is not available here either (%s)", afx_strerror(b));
    if (b != AFX_BACKEND_IO_URING)
        FAIL("futex_waitv denied: afx_select_backend(AUTO) = %d (%s), want io_uring", b,
             b < 0 ? afx_strerror(b) : afx_backend_name(b));
    t_async_round_trip();
    t_child_exit(0);
}

static void thread_without_waitv(int err, int siblings)
{
    deny(0, err);
    int b = afx_select_backend(AFX_BACKEND_THREAD);
    if (b != AFX_BACKEND_THREAD)
        FAIL("futex_waitv denied (%s): afx_select_backend(THREAD) = %d (%s)", strerror(err), b,
             b < 0 ? afx_strerror(b) : afx_backend_name(b));
    exercise(err == EPERM ? "thread, futex_waitv EPERM" : "thread, futex_waitv ENOSYS");
    if (siblings) {
        setenv("AFX_BACKEND", "thread", 1);
        const char *names[] = {"cancel_race", "cancel_forward", "wake_counts", "thread_exit"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            run_sibling(names[i]);
        printf("  siblings passed under the denial: cancel_race cancel_forward wake_counts "
               "thread_exit\n");
    }
    t_child_exit(0);
}

static void nothing_but_futex(int err)
{
    deny(1, err);
    uint32_t *w = t_shared(4096);
    afx_t *f = afx_new(w, 0);
    if (f == NULL)
        FAIL("futex_waitv and io_uring denied (%s): afx_new: %s", strerror(err),
             strerror(errno));
    afx_free(f);
    if (afx_backend() != AFX_BACKEND_THREAD)
        FAIL("afx_backend() = %d, want thread", afx_backend());
    exercise(err == EPERM ? "auto, futex_waitv+io_uring EPERM"
                          : "auto, futex_waitv+io_uring ENOSYS");
    t_child_exit(0);
}

static void c_thread_eperm(void) { thread_without_waitv(EPERM, 0); }
static void c_thread_enosys(void) { thread_without_waitv(ENOSYS, 1); }
static void c_none_eperm(void) { nothing_but_futex(EPERM); }
static void c_none_enosys(void) { nothing_but_futex(ENOSYS); }

int main(void)
{
    t_start_bare("no_futex_waitv");
    /* The children pick their backends themselves; an explicit AFX_BACKEND
     * would override AUTO in case (c). */
    unsetenv("AFX_BACKEND");
    void (*cases[])(void) = {auto_without_waitv, c_thread_eperm, c_thread_enosys, c_none_eperm,
                             c_none_enosys};
    int skipped = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        t_watchdog(T_WATCHDOG_S);
        pid_t pid = t_fork();
        if (pid == 0)
            cases[k]();
        int status;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
            if (k != 0)
                t_skip("seccomp or futex_waitv unknown here");
            skipped = 1; /* (a) only: io_uring missing too */
            continue;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            FAIL("case %zu failed (status 0x%x)", k, (unsigned)status);
    }
    t_backend();
    t_pass("futex_waitv denied (EPERM and ENOSYS): %sthe thread backend serves in per-wait mode, "
           "alone and as the fallback",
           skipped ? "" : "io_uring serves, ");
    return 0;
}
