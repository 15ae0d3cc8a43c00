/*
 * rlimit_nofile: out of file descriptors (RLIMIT_NOFILE at the number of
 * fds already open) is a clean, transient error, for both backends:
 * - starting the backend that needs an fd (io_uring: the ring) fails with
 *   -EMFILE, and AUTO reports -EMFILE too instead of silently settling on
 *   the thread backend for the life of the process;
 * - afx_new returns NULL with errno EMFILE (its eventfd);
 * - nothing is left behind: the fd count is back to the baseline;
 * - once the limit is raised the same process works (the failure is not
 *   remembered), and an already armed handle keeps working under the limit.
 * Each backend runs in a fresh fork child (a process has one backend).
 */
#include "common.h"

static void set_nofile(rlim_t soft)
{
    struct rlimit rl;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = soft;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        FAIL("setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)soft, strerror(errno));
}

/* The limit that makes the next fd allocation fail: the lowest free fd
 * (every fd below it is open). */
static rlim_t exhausted_limit(void)
{
    int fd = dup(0);
    if (fd < 0)
        FAIL("dup: %s", strerror(errno));
    close(fd);
    return (rlim_t)fd;
}

static void expect_new_emfile(uint32_t *w, const char *when)
{
    errno = 0;
    afx_t *f = afx_new(w, 0);
    if (f != NULL)
        FAIL("%s: afx_new succeeded out of fds", when);
    if (errno != EMFILE)
        FAIL("%s: afx_new errno %d (%s), want EMFILE", when, errno, strerror(errno));
}

/* A full async round trip on the shared word through a fresh handle. */
static void round_trip(uint32_t *w)
{
    afx_t *f = afx_new(w, 0);
    CHECK_NOT_NULL(f);
    CHECK_EQ(afx_wait_async(f, t_load(w)), 0);
    t_wake_one(f);
    CHECK_READY(f, "round trip");
    CHECK_EQ(afx_ack(f), 1);
    afx_free(f);
}

static void run(int kind)
{
    uint32_t *w = t_shared(4096);
    struct rlimit saved;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
    if (kind == AFX_BACKEND_THREAD)
        setenv("AFX_BACKEND", "thread", 1);
    else
        unsetenv("AFX_BACKEND");

    /* 1. Out of fds before the backend starts. */
    int baseline = t_open_fds();
    set_nofile(exhausted_limit());
    if (kind == AFX_BACKEND_IO_URING) {
        CHECK_EQ(afx_select_backend(AFX_BACKEND_IO_URING), -EMFILE);
        CHECK_EQ(afx_select_backend(AFX_BACKEND_AUTO), -EMFILE); /* no silent fallback */
        CHECK_EQ(afx_backend(), -EMFILE);
    } else {
        CHECK_EQ(afx_select_backend(AFX_BACKEND_THREAD), AFX_BACKEND_THREAD);
    }
    expect_new_emfile(w, "before start");
    set_nofile(saved.rlim_cur);
    if (t_open_fds() != baseline)
        FAIL("%d fds before the failures, %d after", baseline, t_open_fds());

    /* 2. The limit raised: the same process works. */
    if (kind == AFX_BACKEND_IO_URING)
        CHECK_EQ(afx_select_backend(AFX_BACKEND_AUTO), AFX_BACKEND_IO_URING);
    CHECK_EQ(afx_backend(), kind);
    round_trip(w);

    /* 3. Out of fds with the backend running and a handle armed. */
    afx_t *armed = afx_new(w, 0);
    CHECK_NOT_NULL(armed);
    CHECK_EQ(afx_wait_async(armed, t_load(w)), 0);
    t_await_waiters(w, 0, 1);
    baseline = t_open_fds();
    set_nofile(exhausted_limit());
    expect_new_emfile(w, "backend running");
    expect_new_emfile(w, "backend running, again");
    /* The armed wait still completes, and the handle arms again (no fd
     * needed). */
    CHECK_EQ(afx_wake(armed, 1), 1);
    CHECK_READY(armed, "armed under the limit");
    CHECK_EQ(afx_ack(armed), 1);
    CHECK_EQ(afx_wait_async(armed, t_load(w)), 0);
    t_await_waiters(w, 0, 1);
    CHECK_EQ(afx_cancel(armed), 0);
    CHECK_EQ(t_waiters(w, 0), 0);
    set_nofile(saved.rlim_cur);
    if (t_open_fds() != baseline)
        FAIL("%d fds before the failures, %d after", baseline, t_open_fds());
    round_trip(w);
    afx_free(armed);
    munmap(w, 4096);
    printf("  %s: EMFILE at start and at afx_new, fds back to %d, works once raised\n",
           afx_backend_name(kind), baseline);
    t_child_exit(0);
}

/* Whether io_uring can run here at all (in a throwaway child). */
static int io_uring_available(void)
{
    pid_t pid = t_fork();
    if (pid == 0)
        t_child_exit(afx_select_backend(AFX_BACKEND_IO_URING) == AFX_BACKEND_IO_URING ? 0 : 1);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(void)
{
    t_start_bare("rlimit_nofile");
    int kinds[2] = {AFX_BACKEND_THREAD, AFX_BACKEND_IO_URING};
    int ran = 0;
    for (int k = 0; k < 2; k++) {
        if (kinds[k] == AFX_BACKEND_IO_URING && !io_uring_available()) {
            printf("  io_uring: not available here, not tested\n");
            continue;
        }
        pid_t pid = t_fork();
        if (pid == 0)
            run(kinds[k]);
        t_reap(pid);
        ran++;
    }
    t_backend();
    t_pass("RLIMIT_NOFILE exhausted: clean EMFILE, no fd left behind, recovers (%d backend%s)", ran,
           ran == 1 ? "" : "s");
    return 0;
}
