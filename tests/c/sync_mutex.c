/*
 * sync_mutex: the afx_mutex_* C API across processes.
 * - bad input: NULL handles/states give -EINVAL, an uninitialised state
 *   EPROTO, unlock without holding -EPERM;
 * - mutual exclusion: three processes (one with the eventfd async form in
 *   a poll loop, two blocking) increment a non-atomic counter: exact total;
 * - owner death: the holder is SIGKILLed while an async locker in another
 *   process is asleep on the word (kernel waiter count): the locker gets
 *   AFX_OWNER_DIED, marks it consistent, and the mutex is clean again;
 * - a holder that exits holding: trylock gets AFX_OWNER_DIED at once;
 *   unlocking without afx_mutex_consistent makes it -ENOTRECOVERABLE until
 *   afx_mutex_init.
 */
#include "common.h"

struct shm {
    afx_mutex_state m;
    uint32_t counter;
    uint32_t ready;
    uint32_t data;
};

enum { PER_CHILD = 2000 };

/* The async form: call, and on -EAGAIN poll the eventfd (bounded by
 * AFX_MUTEX_CHECK_MS so a dead holder is noticed) and call again. */
static int lock_async(afx_mutex_t *m)
{
    for (;;) {
        int r = afx_mutex_lock_async(m);
        if (r != -EAGAIN)
            return r;
        struct pollfd p = {.fd = afx_mutex_eventfd(m), .events = POLLIN, .revents = 0};
        int n = poll(&p, 1, AFX_MUTEX_CHECK_MS);
        if (n < 0 && errno != EINTR)
            FAIL("poll: %s", strerror(errno));
    }
}

static void bump(uint32_t *counter)
{
    uint32_t v = __atomic_load_n(counter, __ATOMIC_RELAXED);
    for (volatile int i = 0; i < 20; i++) {
    }
    __atomic_store_n(counter, v + 1, __ATOMIC_RELAXED);
}

int main(void)
{
    t_start("sync_mutex");
    struct shm *s = t_shared(sizeof *s);
    memset(s, 0, sizeof *s);

    /* Bad input. */
    errno = 0;
    CHECK(afx_mutex_open(NULL) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(afx_mutex_open(&s->m) == NULL && errno == EPROTO);
    CHECK_EQ(afx_mutex_init(NULL), -EINVAL);
    CHECK_EQ(afx_mutex_lock(NULL, -1), -EINVAL);
    CHECK_EQ(afx_mutex_trylock(NULL), -EINVAL);
    CHECK_EQ(afx_mutex_lock_async(NULL), -EINVAL);
    CHECK_EQ(afx_mutex_unlock(NULL), -EINVAL);
    CHECK_EQ(afx_mutex_consistent(NULL), -EINVAL);
    CHECK_EQ(afx_mutex_eventfd(NULL), -EINVAL);
    CHECK_EQ(afx_mutex_cancel(NULL), -EINVAL);
    afx_mutex_close(NULL);

    CHECK_EQ(afx_mutex_init(&s->m), 0);
    CHECK_EQ(s->m.version, AFX_MUTEX_VERSION);
    afx_mutex_t *m = afx_mutex_open(&s->m);
    CHECK_NOT_NULL(m);
    CHECK_EQ(afx_mutex_unlock(m), -EPERM);
    CHECK_EQ(afx_mutex_trylock(m), 0);
    CHECK_EQ(afx_mutex_consistent(m), -EINVAL); /* not inconsistent */
    CHECK_EQ(afx_mutex_unlock(m), 0);
    CHECK_EQ(s->m.state, 0);

    /* Mutual exclusion. */
    pid_t kids[3];
    for (int k = 0; k < 3; k++) {
        kids[k] = t_fork();
        if (kids[k] == 0) {
            afx_mutex_t *cm = afx_mutex_open(&s->m);
            CHECK_NOT_NULL(cm);
            for (int i = 0; i < PER_CHILD; i++) {
                CHECK_EQ(k == 0 ? lock_async(cm) : afx_mutex_lock(cm, -1), 0);
                bump(&s->counter);
                CHECK_EQ(afx_mutex_unlock(cm), 0);
            }
            afx_mutex_close(cm);
            t_child_exit(0);
        }
    }
    for (int k = 0; k < 3; k++)
        t_reap(kids[k]);
    CHECK_EQ(s->counter, 3 * PER_CHILD);

    /* Owner death with a sleeping async locker. */
    pid_t holder = t_fork();
    if (holder == 0) {
        afx_mutex_t *hm = afx_mutex_open(&s->m);
        CHECK_NOT_NULL(hm);
        CHECK_EQ(afx_mutex_lock(hm, -1), 0);
        s->data = 1; /* half an update */
        t_signal(&s->ready, 1);
        for (;;)
            pause();
    }
    t_await(&s->ready, 1);
    pid_t waiter = t_fork();
    if (waiter == 0) {
        afx_mutex_t *wm = afx_mutex_open(&s->m);
        CHECK_NOT_NULL(wm);
        CHECK_EQ(lock_async(wm), AFX_OWNER_DIED);
        CHECK_EQ(s->data, 1);
        s->data = 2; /* repaired */
        CHECK_EQ(afx_mutex_consistent(wm), 0);
        CHECK_EQ(afx_mutex_unlock(wm), 0);
        afx_mutex_close(wm);
        t_child_exit(0);
    }
    t_await_waiters(&s->m.state, 0, 1);
    int64_t t0 = t_now_ns();
    kill(holder, SIGKILL); /* a zombie until reaped below */
    t_reap(waiter);
    int64_t recovered_us = (t_now_ns() - t0) / 1000;
    int status;
    CHECK_EQ(waitpid(holder, &status, 0), holder);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ(s->data, 2);
    CHECK_EQ(afx_mutex_trylock(m), 0);
    CHECK_EQ(afx_mutex_unlock(m), 0);

    /* A holder that exits holding; not marked consistent. */
    pid_t leaver = t_fork();
    if (leaver == 0) {
        afx_mutex_t *lm = afx_mutex_open(&s->m);
        CHECK_NOT_NULL(lm);
        CHECK_EQ(afx_mutex_lock(lm, -1), 0);
        t_child_exit(0); /* without unlocking (or closing) */
    }
    t_reap(leaver);
    CHECK_EQ(afx_mutex_trylock(m), AFX_OWNER_DIED);
    CHECK_EQ(afx_mutex_unlock(m), 0);
    CHECK_EQ(afx_mutex_trylock(m), -ENOTRECOVERABLE);
    CHECK_EQ(afx_mutex_lock(m, 1000000), -ENOTRECOVERABLE);
    CHECK_EQ(afx_mutex_lock_async(m), -ENOTRECOVERABLE);
    CHECK_EQ(afx_mutex_init(&s->m), 0);
    CHECK_EQ(afx_mutex_trylock(m), 0);
    CHECK_EQ(afx_mutex_lock(m, 1000000), -ETIMEDOUT);
    CHECK_EQ(afx_mutex_unlock(m), 0);

    afx_mutex_close(m);
    t_pass("exclusion exact (%d), holder death recovered by an async locker in %" PRId64
           " us, not-recoverable path",
           3 * PER_CHILD, recovered_us);
    return 0;
}
