/*
 * thread_limit: thread creation refused (RLIMIT_NPROC reached) is a clean,
 * transient error:
 * - io_uring: starting the backend (its ring thread) fails with -ENOMEM,
 *   AUTO too (no silent fallback), and works once the limit is raised;
 * - thread backend, vector mode and per-wait mode: an async wait that needs
 *   a new helper completes at once (eventfd readable) and afx_ack returns
 *   -ENOMEM, disarming it; nothing is left queued on the word; the handle
 *   arms again and works once the limit is raised. In per-wait mode an idle
 *   pooled helper still serves a wait under the limit; only a second,
 *   concurrent wait fails.
 * Never -EAGAIN: pthread_create's EAGAIN is reported as ENOMEM, because
 * EAGAIN already means "the word changed" (or "armed, try again").
 * RLIMIT_NPROC does not bind root, so each case runs in a fork child that
 * drops to uid/gid 65534 first (or, if the test does not run as root, as
 * itself). Where neither makes thread creation fail, it prints a SKIP.
 */
#include <grp.h>
#include <pthread.h>

#include "common.h"

enum { WORD_VALUE = 5 };

static void *nothing(void *arg) { return arg; }

/* 1 if pthread_create works right now. */
static int can_spawn(void)
{
    pthread_t t;
    int r = pthread_create(&t, NULL, nothing, NULL);
    if (r == 0) {
        pthread_join(t, NULL);
        return 1;
    }
    if (r != EAGAIN)
        FAIL("pthread_create: %s, want EAGAIN", strerror(r));
    return 0;
}

static void set_nproc(rlim_t soft)
{
    struct rlimit rl;
    CHECK_EQ(getrlimit(RLIMIT_NPROC, &rl), 0);
    rl.rlim_cur = soft == RLIM_INFINITY ? rl.rlim_max : soft; /* "raised": the hard limit */
    if (setrlimit(RLIMIT_NPROC, &rl) != 0)
        FAIL("setrlimit(RLIMIT_NPROC): %s", strerror(errno));
}

/* Exits 77 with a reason if thread creation cannot be refused here. */
static void become_limited(void)
{
    if (geteuid() == 0) {
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
            t_skip("cannot drop root to uid 65534 (%s): RLIMIT_NPROC does not bind root",
                   strerror(errno));
    }
    set_nproc(0);
    if (can_spawn())
        t_skip("pthread_create still works with RLIMIT_NPROC 0 (CAP_SYS_RESOURCE or "
               "CAP_SYS_ADMIN kept?)");
    set_nproc(RLIM_INFINITY);
    if (!can_spawn())
        FAIL("pthread_create fails with RLIMIT_NPROC raised again");
}

static void case_io_uring(void)
{
    become_limited();
    unsetenv("AFX_BACKEND");
    set_nproc(0);
    int b = afx_select_backend(AFX_BACKEND_IO_URING);
    if (b == -EPERM || b == -ENOSYS || b == -EOPNOTSUPP)
        t_skip("io_uring is not available here (%s)", afx_strerror(b));
    CHECK_EQ(b, -ENOMEM);
    CHECK_EQ(afx_select_backend(AFX_BACKEND_AUTO), -ENOMEM);
    uint32_t word = WORD_VALUE;
    errno = 0;
    CHECK(afx_new(&word, AFX_PRIVATE) == NULL);
    CHECK_EQ(errno, ENOMEM);
    set_nproc(RLIM_INFINITY);
    CHECK_EQ(afx_select_backend(AFX_BACKEND_AUTO), AFX_BACKEND_IO_URING);
    t_async_round_trip();
    t_child_exit(0);
}

static void expect_failed_wait(afx_t *f, uint32_t *w, int queued, const char *what)
{
    CHECK_EQ(afx_wait_async(f, WORD_VALUE), 0);
    CHECK_READY(f, what);
    int r = afx_ack(f);
    if (r != -ENOMEM)
        FAIL("%s: afx_ack = %d (%s), want -ENOMEM", what, r, r < 0 ? afx_strerror(r) : "-");
    CHECK_EQ(afx_ack(f), 0); /* disarmed */
    CHECK_EQ(t_waiters(w, 0), queued);
}

static void case_thread(int per_wait)
{
    become_limited();
    setenv("AFX_BACKEND", "thread", 1);
    if (per_wait)
        setenv("AFX_THREAD_WAITV", "0", 1);
    uint32_t *w = t_shared(4096);
    t_store(w, WORD_VALUE);
    afx_t *a = afx_new(w, 0), *b = afx_new(w, 0);
    CHECK_NOT_NULL(a);
    CHECK_NOT_NULL(b);

    /* No helper yet: the first wait fails cleanly, and again. */
    set_nproc(0);
    expect_failed_wait(a, w, 0, "first wait, no helper");
    expect_failed_wait(a, w, 0, "first wait again");

    /* Raised: works, and leaves a helper behind. */
    set_nproc(RLIM_INFINITY);
    CHECK_EQ(afx_wait_async(a, WORD_VALUE), 0);
    t_await_waiters(w, 0, 1);
    CHECK_EQ(afx_wake(b, 1), 1);
    CHECK_READY(a, "after raising the limit");
    CHECK_EQ(afx_ack(a), 1);

    /* Under the limit again: the existing helper serves one wait... */
    set_nproc(0);
    CHECK_EQ(afx_wait_async(a, WORD_VALUE), 0);
    t_await_waiters(w, 0, 1);
    if (per_wait) {
        /* ...and a second, concurrent one needs a new thread: fails. */
        expect_failed_wait(b, w, 1, "second concurrent wait, per-wait mode");
    } else {
        /* ...and up to 127 (vector mode). */
        CHECK_EQ(afx_wait_async(b, WORD_VALUE), 0);
        t_await_waiters(w, 0, 2);
        CHECK_EQ(afx_cancel(b), 0);
        t_await_waiters(w, 0, 1); /* the helper queues `a` again */
    }
    CHECK_EQ(afx_wake(b, 1), 1);
    CHECK_READY(a, "served by the pooled helper");
    CHECK_EQ(afx_ack(a), 1);
    set_nproc(RLIM_INFINITY);
    CHECK_EQ(afx_wait_async(a, WORD_VALUE), 0);
    CHECK_EQ(afx_wait_async(b, WORD_VALUE), 0);
    t_await_waiters(w, 0, 2);
    CHECK_EQ(afx_wake(a, UINT32_MAX), 2);
    CHECK_READY(a, "a, limit raised");
    CHECK_READY(b, "b, limit raised");
    CHECK_EQ(afx_ack(a), 1);
    CHECK_EQ(afx_ack(b), 1);
    afx_free(a);
    afx_free(b);
    t_child_exit(0);
}

/* Vector mode needs futex_waitv; without it the backend is in per-wait
 * mode anyway. */
static void c_vector(void)
{
    unsetenv("AFX_THREAD_WAITV");
#ifdef SYS_futex_waitv
    errno = 0;
    long r = syscall(SYS_futex_waitv, NULL, 0, 0, NULL, CLOCK_MONOTONIC);
    case_thread(r == -1 && (errno == ENOSYS || errno == EPERM));
#else
    case_thread(1);
#endif
}
static void c_per_wait(void) { case_thread(1); }

int main(void)
{
    t_start_bare("thread_limit");
    void (*cases[])(void) = {case_io_uring, c_vector, c_per_wait};
    const char *names[] = {"io_uring", "thread (vector mode)", "thread (per-wait mode)"};
    char done[256] = "";
    for (size_t k = 0; k < 3; k++) {
        t_watchdog(T_WATCHDOG_S);
        pid_t pid = t_fork();
        if (pid == 0)
            cases[k]();
        int status;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
            if (k != 0)
                t_skip("thread creation cannot be refused here (see the child's reason above)");
            printf("  %s: not available, not tested\n", names[k]);
            continue;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            FAIL("%s: case failed (status 0x%x)", names[k], (unsigned)status);
        strcat(done, done[0] ? ", " : "");
        strcat(done, names[k]);
    }
    t_backend();
    t_pass("RLIMIT_NPROC reached: clean -ENOMEM, nothing queued, recovers: %s", done);
    return 0;
}
