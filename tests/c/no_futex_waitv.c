/*
 * no_futex_waitv: where futex_waitv(2) is missing (kernels before 5.16,
 * seccomp profiles that predate it: ENOSYS) the library must stay usable
 * or fail clearly, never hang:
 * (a) futex_waitv denied, io_uring allowed: AUTO picks io_uring and async
 *     waits work;
 * (b) futex_waitv denied: AFX_BACKEND_THREAD is refused at once with
 *     -ENOSYS and a readable afx_strerror;
 * (c) futex_waitv and io_uring denied: afx_new fails with errno ENOSYS;
 *     blocking afx_wait/afx_wake on plain futex(2) are not affected.
 * (A FUTEX_WAIT_BITSET fallback for (b) and (c) needs a thread per wait and
 * is not part of this release.)
 * Each case runs in a fresh fork child with a seccomp filter.
 */
#include "common.h"

static void deny(int with_io_uring)
{
#ifndef SYS_futex_waitv
    t_skip("the system headers do not know futex_waitv");
#else
    const long nrs[] = {SYS_futex_waitv, SYS_io_uring_setup, SYS_io_uring_enter,
                        SYS_io_uring_register};
    if (t_deny_syscalls(nrs, with_io_uring ? 4 : 1, ENOSYS) != 0)
        t_skip("no seccomp audit arch known for this CPU");
#endif
}

static void auto_without_waitv(void)
{
    deny(0);
    int b = afx_select_backend(AFX_BACKEND_AUTO);
    if (b == -EPERM || b == -ENOSYS || b == -EOPNOTSUPP)
        t_skip("io_uring is not available here either (%s)", afx_strerror(b));
    if (b != AFX_BACKEND_IO_URING)
        FAIL("futex_waitv denied: afx_select_backend(AUTO) = %d (%s), want io_uring", b,
             b < 0 ? afx_strerror(b) : afx_backend_name(b));
    t_async_round_trip();
    t_child_exit(0);
}

static void thread_without_waitv_is_refused(void)
{
    deny(0);
    int b = afx_select_backend(AFX_BACKEND_THREAD);
    if (b != -ENOSYS)
        FAIL("futex_waitv denied: afx_select_backend(THREAD) = %d, want -ENOSYS", b);
    const char *why = afx_strerror(b);
    if (why == NULL || why[0] == 0)
        FAIL("afx_strerror(-ENOSYS) is empty");
    t_child_exit(0);
}

static void nothing_left_is_a_clear_error(void)
{
    deny(1);
    uint32_t *w = t_shared(4096);
    errno = 0;
    afx_t *f = afx_new(w, 0);
    if (f != NULL)
        FAIL("futex_waitv and io_uring denied: afx_new succeeded on backend %s",
             afx_backend_name(afx_backend()));
    if (errno != ENOSYS)
        FAIL("afx_new: errno %d (%s), want ENOSYS", errno, strerror(errno));
    int b = afx_backend();
    if (b != -ENOSYS)
        FAIL("afx_backend() = %d, want -ENOSYS", b);
    /* Plain futex(2) still works: a wake with no waiter wakes nobody. */
    if (t_raw_wake(w, 1, 0) != 0)
        FAIL("raw FUTEX_WAKE failed");
    t_child_exit(0);
}

int main(void)
{
    t_start_bare("no_futex_waitv");
    void (*cases[])(void) = {auto_without_waitv, thread_without_waitv_is_refused,
                             nothing_left_is_a_clear_error};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        pid_t pid = t_fork();
        if (pid == 0)
            cases[k]();
        int status;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
            t_skip("seccomp or futex_waitv unknown here");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            FAIL("case %zu failed (status 0x%x)", k, (unsigned)status);
    }
    t_backend();
    t_pass("futex_waitv denied: io_uring serves, thread is refused with ENOSYS, no hang");
    return 0;
}
