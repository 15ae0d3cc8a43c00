/*
 * sync_cancel: cancelling an async semaphore acquire or mutex lock whose
 * wait has already completed (eventfd readable, not yet seen) passes its
 * wake on. A release(1) or an unlock wakes one waiter; if that waiter is
 * cancelled instead of retrying, another waiter must get the permit or
 * the lock, not sleep on while it is free (a lost wake).
 * - semaphore: two handles A and B in acquire_async on 0 permits (both
 *   queued in the kernel), release(1), cancel whichever eventfd fired: the
 *   other becomes readable and acquires;
 * - mutex: the same with two lock_async handles while another process
 *   holds the lock and then unlocks.
 * Rounds alternate which handle queues first (the one the kernel wakes),
 * so each is the cancelled one about half the time.
 */
#include "common.h"

struct shm {
    afx_sem_state sem;
    afx_mutex_state m;
    uint32_t held;
    uint32_t go;
    uint32_t done;
};

enum { ROUNDS = 100 };

/* Waits until one of two eventfds is readable: returns 0 or 1. */
static int first_ready(int fd0, int fd1, const char *what)
{
    struct pollfd p[2] = {{.fd = fd0, .events = POLLIN, .revents = 0},
                          {.fd = fd1, .events = POLLIN, .revents = 0}};
    for (;;) {
        int n = poll(p, 2, T_READY_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            FAIL("poll: %s", strerror(errno));
        if (n == 0)
            FAIL("%s: neither waiter's eventfd became readable in %d ms", what, T_READY_MS);
        return (p[0].revents & POLLIN) ? 0 : 1;
    }
}

static void semaphore_rounds(struct shm *s)
{
    CHECK_EQ(afx_sem_init(&s->sem, 0), 0);
    afx_sem_t *h[2] = {afx_sem_open(&s->sem), afx_sem_open(&s->sem)};
    afx_sem_t *releaser = afx_sem_open(&s->sem);
    CHECK(h[0] && h[1] && releaser);
    int cancelled[2] = {0, 0};
    for (int round = 0; round < ROUNDS; round++) {
        /* The kernel wakes the first queued: alternate which that is. */
        CHECK_EQ(afx_sem_acquire_async(h[round % 2]), -EAGAIN);
        t_await_waiters(&s->sem.count, 0, 1);
        CHECK_EQ(afx_sem_acquire_async(h[1 - round % 2]), -EAGAIN);
        t_await_waiters(&s->sem.count, 0, 2);
        CHECK_EQ(afx_sem_release(releaser, 1), 0);
        int woken = first_ready(afx_sem_eventfd(h[0]), afx_sem_eventfd(h[1]), "semaphore");
        int other = 1 - woken;
        CHECK_EQ(afx_sem_cancel(h[woken]), 0);
        cancelled[woken]++;
        if (!t_readable(afx_sem_eventfd(h[other]), T_READY_MS))
            FAIL("LOST WAKE: round %d: the cancelled acquirer's wake was not passed on; the "
                 "other sleeps with a permit free (count %u)",
                 round, t_load(&s->sem.count));
        CHECK_EQ(afx_sem_acquire_async(h[other]), 0);
        CHECK_EQ(t_load(&s->sem.count), 0u);
    }
    afx_sem_close(h[0]);
    afx_sem_close(h[1]);
    afx_sem_close(releaser);
    t_pass("semaphore: %d rounds, cancelled A %d times and B %d times, no wake lost", ROUNDS,
           cancelled[0], cancelled[1]);
}

static void mutex_rounds(struct shm *s)
{
    CHECK_EQ(afx_mutex_init(&s->m), 0);
    pid_t holder = t_fork();
    if (holder == 0) {
        afx_mutex_t *m = afx_mutex_open(&s->m);
        if (!m)
            FAIL("afx_mutex_open: %s", strerror(errno));
        for (uint32_t round = 1; round <= ROUNDS; round++) {
            CHECK_EQ(afx_mutex_lock(m, -1), 0);
            t_signal(&s->held, round);
            t_await(&s->go, round);
            CHECK_EQ(afx_mutex_unlock(m), 0);
            t_await(&s->done, round); /* not before the parent's locker had its turn */
        }
        afx_mutex_close(m);
        t_child_exit(0);
    }
    afx_mutex_t *h[2] = {afx_mutex_open(&s->m), afx_mutex_open(&s->m)};
    CHECK(h[0] && h[1]);
    int cancelled[2] = {0, 0};
    for (uint32_t round = 1; round <= ROUNDS; round++) {
        t_await(&s->held, round);
        CHECK_EQ(afx_mutex_lock_async(h[round % 2]), -EAGAIN);
        t_await_waiters(&s->m.state, 0, 1);
        CHECK_EQ(afx_mutex_lock_async(h[1 - round % 2]), -EAGAIN);
        t_await_waiters(&s->m.state, 0, 2);
        t_signal(&s->go, round); /* the holder unlocks: one waiter is woken */
        int woken = first_ready(afx_mutex_eventfd(h[0]), afx_mutex_eventfd(h[1]), "mutex");
        int other = 1 - woken;
        CHECK_EQ(afx_mutex_cancel(h[woken]), 0);
        cancelled[woken]++;
        if (!t_readable(afx_mutex_eventfd(h[other]), T_READY_MS))
            FAIL("LOST WAKE: round %u: the cancelled locker's wake was not passed on; the "
                 "other sleeps on a free mutex (state 0x%x)",
                 round, t_load(&s->m.state));
        int r;
        /* The holder may not have released yet when a spurious completion
         * came first: retry while the eventfd says so. */
        while ((r = afx_mutex_lock_async(h[other])) == -EAGAIN)
            if (!t_readable(afx_mutex_eventfd(h[other]), T_READY_MS))
                FAIL("round %u: the mutex stays held after the holder's unlock", round);
        CHECK_EQ(r, 0);
        CHECK_EQ(afx_mutex_unlock(h[other]), 0);
        t_signal(&s->done, round);
    }
    t_reap(holder);
    afx_mutex_close(h[0]);
    afx_mutex_close(h[1]);
    t_pass("mutex: %d rounds, cancelled A %d times and B %d times, no wake lost", ROUNDS,
           cancelled[0], cancelled[1]);
}

int main(void)
{
    t_start("sync_cancel");
    struct shm *s = t_shared(sizeof *s);
    memset(s, 0, sizeof *s);
    semaphore_rounds(s);
    mutex_rounds(s);
    return 0;
}
