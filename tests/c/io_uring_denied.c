/*
 * io_uring_denied: where io_uring is denied (Docker / containerd / Podman
 * seccomp profiles return EPERM for io_uring_setup), the automatic choice
 * falls back silently to the thread backend and async waits work; an
 * explicit request for io_uring is a clear error (-EPERM / NULL + EPERM),
 * through afx_select_backend or AFX_BACKEND, and does not stick: asking for
 * AUTO afterwards works.
 * Each case runs in a fresh fork child that installs the seccomp filter
 * before its first use of the library.
 */
#include "common.h"

static const long denied[] = {SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register};

static void deny_io_uring(void)
{
    if (t_deny_syscalls(denied, 3, EPERM) != 0)
        t_skip("no seccomp audit arch known for this CPU");
}

/* AUTO with io_uring denied: the thread backend, silently. */
static void auto_falls_back(void)
{
    deny_io_uring();
    CHECK_EQ(afx_select_backend(AFX_BACKEND_AUTO), AFX_BACKEND_THREAD);
    CHECK_EQ(afx_backend(), AFX_BACKEND_THREAD);
    t_async_round_trip();
    t_child_exit(0);
}

/* An explicit io_uring request cannot be met: a clear error, not a
 * fallback; AUTO afterwards works. */
static void explicit_select_fails(void)
{
    deny_io_uring();
    CHECK_EQ(afx_select_backend(AFX_BACKEND_IO_URING), -EPERM);
    uint32_t word = 0;
    errno = 0;
    afx_t *f = afx_new(&word, AFX_PRIVATE);
    if (f != NULL)
        FAIL("afx_new succeeded after io_uring was explicitly requested and denied (backend %s)",
             afx_backend_name(afx_backend()));
    CHECK_EQ(errno, EPERM);
    CHECK_EQ(afx_backend(), -EPERM);
    CHECK_EQ(afx_select_backend(AFX_BACKEND_AUTO), AFX_BACKEND_THREAD);
    t_async_round_trip();
    t_child_exit(0);
}

static void explicit_env_fails(void)
{
    deny_io_uring();
    setenv("AFX_BACKEND", "io_uring", 1);
    CHECK_EQ(afx_backend(), -EPERM);
    uint32_t word = 0;
    errno = 0;
    afx_t *f = afx_new(&word, 0);
    if (f != NULL)
        FAIL("afx_new succeeded with AFX_BACKEND=io_uring and io_uring denied (backend %s)",
             afx_backend_name(afx_backend()));
    CHECK_EQ(errno, EPERM);
    CHECK(strlen(afx_strerror(-EPERM)) > 0);
    t_child_exit(0);
}

/* AFX_BACKEND=thread is unaffected by the filter. */
static void thread_env_works(void)
{
    deny_io_uring();
    setenv("AFX_BACKEND", "thread", 1);
    CHECK_EQ(afx_backend(), AFX_BACKEND_THREAD);
    t_async_round_trip();
    t_child_exit(0);
}

int main(void)
{
    t_start_bare("io_uring_denied");
    void (*cases[])(void) = {auto_falls_back, explicit_select_fails, explicit_env_fails,
                             thread_env_works};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        pid_t pid = t_fork();
        if (pid == 0)
            cases[k]();
        int status;
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
            t_skip("no seccomp audit arch known for this CPU");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            FAIL("case %zu failed (status 0x%x)", k, (unsigned)status);
    }
    /* This process is unfiltered: whatever AFX_BACKEND says. */
    t_backend();
    t_pass("io_uring denied by seccomp: AUTO -> thread, explicit io_uring -> EPERM (select and "
           "AFX_BACKEND), AFX_BACKEND=thread unaffected");
    return 0;
}
