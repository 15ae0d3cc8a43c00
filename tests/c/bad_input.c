/*
 * bad_input: every C entry point refuses bad input with the documented
 * error and never crashes.
 * - NULL handle: -EINVAL from afx_wake, afx_wait, afx_eventfd,
 *   afx_wait_async, afx_ack, afx_cancel; afx_free(NULL) is a no-op;
 * - afx_new: NULL or misaligned address, unknown flags -> NULL + EINVAL;
 *   unmapped or PROT_NONE word -> NULL + EFAULT; a read-only word works;
 * - afx_strerror: non-NULL for every code, "unknown error" for unknown ones;
 * - afx_version matches AFX_VERSION_MAJOR/MINOR/PATCH;
 * - afx_select_backend: unknown kind -> -EINVAL, the other backend once one
 *   runs -> -EBUSY; afx_backend_name of a bogus code -> "unknown";
 * - a bad AFX_BACKEND (in a fresh child) -> -EINVAL, and select overrides it.
 */
#include "common.h"

static void expect_new_fails(uint32_t *addr, uint32_t flags, int err, const char *what)
{
    errno = 0;
    afx_t *f = afx_new(addr, flags);
    if (f != NULL) {
        afx_free(f);
        FAIL("afx_new(%s, 0x%x) succeeded, expected errno %d (%s)", what, flags, err, strerror(err));
    }
    if (errno != err)
        FAIL("afx_new(%s, 0x%x): errno %d (%s), expected %d (%s)", what, flags, errno,
             strerror(errno), err, strerror(err));
}

static void check_strerror(int code)
{
    const char *s = afx_strerror(code);
    if (s == NULL)
        FAIL("afx_strerror(%d) is NULL", code);
    if (s[0] == '\0')
        FAIL("afx_strerror(%d) is empty", code);
}

/* A child forked before the parent touched the library: a bad AFX_BACKEND
 * is an error, not a silent fallback, and afx_select_backend overrides it. */
static void bad_env_child(void)
{
    uint32_t word = 0;
    setenv("AFX_BACKEND", "no-such-backend", 1);
    CHECK_EQ(afx_backend(), -EINVAL);
    expect_new_fails(&word, 0, EINVAL, "&word with AFX_BACKEND=no-such-backend");
    int b = afx_select_backend(AFX_BACKEND_AUTO);
    if (b != AFX_BACKEND_IO_URING && b != AFX_BACKEND_THREAD)
        FAIL("afx_select_backend(AUTO) = %d (%s)", b, afx_strerror(b));
    CHECK_EQ(afx_backend(), b);
    afx_t *f = afx_new(&word, AFX_PRIVATE);
    CHECK_NOT_NULL(f);
    afx_free(f);
    t_child_exit(0);
}

int main(void)
{
    /* Before anything starts the backend in this process. */
    t_start_bare("bad_input");
    pid_t pid = t_fork();
    if (pid == 0)
        bad_env_child();
    t_reap(pid);
    const char *backend = t_backend();

    /* NULL handle. */
    CHECK_EQ(afx_wake(NULL, 1), -EINVAL);
    CHECK_EQ(afx_wake(NULL, 0), -EINVAL);
    CHECK_EQ(afx_wake(NULL, UINT32_MAX), -EINVAL);
    CHECK_EQ(afx_wait(NULL, 0, 0), -EINVAL);
    CHECK_EQ(afx_wait(NULL, 0, -1), -EINVAL);
    CHECK_EQ(afx_wait(NULL, 0, 1000000), -EINVAL);
    CHECK_EQ(afx_eventfd(NULL), -EINVAL);
    CHECK_EQ(afx_wait_async(NULL, 0), -EINVAL);
    CHECK_EQ(afx_ack(NULL), -EINVAL);
    CHECK_EQ(afx_cancel(NULL), -EINVAL);
    afx_free(NULL);

    /* Bad addresses and flags. */
    uint32_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(page != MAP_FAILED);
    uint32_t *misaligned[] = {
        (uint32_t *)(void *)((uintptr_t)page + 1),
        (uint32_t *)(void *)((uintptr_t)page + 2),
        (uint32_t *)(void *)((uintptr_t)page + 3),
    };
    for (int flags = 0; flags <= 1; flags++) {
        expect_new_fails(NULL, (uint32_t)flags, EINVAL, "NULL");
        for (size_t k = 0; k < 3; k++)
            expect_new_fails(misaligned[k], (uint32_t)flags, EINVAL, "misaligned");
    }
    const uint32_t bad_flags[] = {0x80, 0x2, 0x4, AFX_PRIVATE | 0x80, 0x80000000u, UINT32_MAX};
    for (size_t k = 0; k < sizeof bad_flags / sizeof bad_flags[0]; k++)
        expect_new_fails(page, bad_flags[k], EINVAL, "valid word, unknown flag");

    /* Unmapped and unreadable words. */
    uint32_t *gone = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(gone != MAP_FAILED);
    CHECK_EQ(munmap(gone, 4096), 0);
    expect_new_fails(gone, 0, EFAULT, "unmapped");
    expect_new_fails(gone, AFX_PRIVATE, EFAULT, "unmapped");
    uint32_t *none = mmap(NULL, 4096, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(none != MAP_FAILED);
    expect_new_fails(none, 0, EFAULT, "PROT_NONE");
    expect_new_fails(none, AFX_PRIVATE, EFAULT, "PROT_NONE");
    CHECK_EQ(munmap(none, 4096), 0);

    /* A read-only word is fine: futex waits only read it. */
    uint32_t *ro = mmap(NULL, 4096, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(ro != MAP_FAILED);
    afx_t *f = afx_new(ro, 0);
    CHECK_NOT_NULL(f);
    CHECK_EQ(afx_wait(f, 0, 0), -ETIMEDOUT);
    CHECK_EQ(afx_wait(f, 1, 0), 0);
    CHECK_EQ(afx_wake(f, 1), 0);
    CHECK_EQ(afx_wait_async(f, 1), 0); /* stale: completes at once */
    CHECK(t_readable(afx_eventfd(f), 0));
    CHECK_EQ(afx_ack(f), 1);
    CHECK_EQ(afx_wait_async(f, 0), 0); /* pending, freed while armed */
    afx_free(f);
    CHECK_EQ(munmap(ro, 4096), 0);
    CHECK_EQ(munmap(page, 4096), 0);

    /* afx_strerror. */
    const int codes[] = {0,        EINVAL,     EFAULT,    EBUSY,  ETIMEDOUT,       EINTR,
                         EAGAIN,   ENOMEM,     EMFILE,    ENFILE, ENOSYS,          EPERM,
                         EOPNOTSUPP, ECANCELED, EIO,      ENOTRECOVERABLE, 12345, INT_MAX};
    for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++) {
        check_strerror(codes[k]);
        check_strerror(-codes[k]);
    }
    check_strerror(INT_MIN);
    CHECK(strcmp(afx_strerror(-EINVAL), afx_strerror(EINVAL)) == 0);
    CHECK(strcmp(afx_strerror(-EFAULT), afx_strerror(-EINVAL)) != 0);
    CHECK(strcmp(afx_strerror(-EBUSY), afx_strerror(-ETIMEDOUT)) != 0);
    const int unknown[] = {12345, -12345, INT_MAX, -INT_MAX, INT_MIN};
    for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++)
        if (strcmp(afx_strerror(unknown[k]), "unknown error") != 0)
            FAIL("afx_strerror(%d) = \"%s\", expected \"unknown error\"", unknown[k],
                 afx_strerror(unknown[k]));

    /* afx_version. */
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", AFX_VERSION_MAJOR, AFX_VERSION_MINOR,
             AFX_VERSION_PATCH);
    CHECK_NOT_NULL(afx_version());
    if (strcmp(afx_version(), want) != 0)
        FAIL("afx_version() = \"%s\", header says %s", afx_version(), want);

    /* Backends. */
    int running = afx_backend();
    CHECK(running == AFX_BACKEND_IO_URING || running == AFX_BACKEND_THREAD);
    CHECK_EQ(afx_select_backend(12345), -EINVAL);
    CHECK_EQ(afx_select_backend(-1), -EINVAL);
    CHECK_EQ(afx_select_backend(INT_MIN), -EINVAL);
    CHECK_EQ(afx_select_backend(running), running);
    CHECK_EQ(afx_select_backend(AFX_BACKEND_AUTO), running);
    int other = running == AFX_BACKEND_IO_URING ? AFX_BACKEND_THREAD : AFX_BACKEND_IO_URING;
    CHECK_EQ(afx_select_backend(other), -EBUSY);
    CHECK_EQ(afx_backend(), running);
    CHECK(strcmp(afx_backend_name(AFX_BACKEND_IO_URING), "io_uring") == 0);
    CHECK(strcmp(afx_backend_name(AFX_BACKEND_THREAD), "thread") == 0);
    const int bogus[] = {12345, -1, 3, INT_MAX, INT_MIN};
    for (size_t k = 0; k < sizeof bogus / sizeof bogus[0]; k++) {
        CHECK_NOT_NULL(afx_backend_name(bogus[k]));
        if (strcmp(afx_backend_name(bogus[k]), "unknown") != 0)
            FAIL("afx_backend_name(%d) = \"%s\"", bogus[k], afx_backend_name(bogus[k]));
    }

    t_pass("NULL handles, bad addresses/flags, EFAULT, strerror, version %s, backend selection",
           afx_version());
    (void)backend;
    return 0;
}
