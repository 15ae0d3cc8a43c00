/*
 * fork_inherited: a handle made before fork() is detached in the child.
 *
 * The parent arms its handle, wakes it and forks at every point of the
 * delivery (right after the wake, after a varying spin, or as soon as its
 * eventfd is readable), so the fork lands before, during and after the
 * backend's completion. The child then uses the inherited handle:
 *
 *   free, cancel, ack  - each returns promptly (a per-child alarm turns a
 *                        hang into a failure), the parent's eventfd still
 *                        reports its completion afterwards, and no wake is
 *                        forwarded (a raw sentinel waiter queued behind the
 *                        parent's wait stays queued);
 *   re-arm             - the inherited armed wait is reported complete once
 *                        (ack 1), then a new wait in the child completes on
 *                        the child's own eventfd, never the parent's;
 *   new handle         - with the parent's wait still pending at fork time,
 *                        and a parent thread arming and completing waits
 *                        all along, a handle the child makes on another
 *                        word gets a kernel waiter and completes on a wake.
 *
 * Afterwards every parent wait is acknowledged exactly once and the parent's
 * eventfd is quiet: nothing the child did is visible to the parent.
 */
#include "common.h"

#include <pthread.h>

enum { ITERS = 150 };
/* Seconds a child may take for what must be prompt. */
enum { CHILD_ALARM_S = 5 };

enum op { OP_FREE, OP_CANCEL, OP_ACK, OP_REARM, OP_NEW_HANDLE, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"free", "cancel", "ack", "re-arm", "new handle"};

struct shm {
    uint32_t word;        /* the parent's handle's word */
    uint32_t other;       /* the word of the child's new handle */
    uint32_t child_armed; /* child -> parent: its wait is armed */
    uint32_t sentinel_rc; /* the sentinel's wait result + 1000, once it returned */
    uint32_t busy_word;   /* the parent's busy thread's word */
    uint32_t busy_stop;
};

static struct shm *s;

#ifdef __SANITIZE_ADDRESS__
/* GCC 12's AddressSanitizer does not lock its allocator around fork(): a
 * parent thread inside malloc at fork time leaves the child's malloc stuck
 * for ever. The busy thread allocates all along, so it runs only in builds
 * without ASan (tests/cross_process.rs covers the same case unsanitized). */
static const int with_busy_thread = 0;
#else
static const int with_busy_thread = 1;
#endif

/* Bitsets: the sentinel's wait matches only SENTINEL_BITS, so the parent's
 * FUTEX_WAKE_BITSET(PARENT_BITS) wakes the parent's wait (which matches any
 * bitset) and never the sentinel, whatever their order in the queue; a
 * plain FUTEX_WAKE, which the library uses to forward, matches both. */
enum { PARENT_BITS = 1, SENTINEL_BITS = 2 };

/* A raw waiter on the parent's word: a wake forwarded by the child would
 * take it off the queue. */
static void *sentinel(void *arg)
{
    (void)arg;
    long rc;
    do
        rc = t_futex(&s->word, FUTEX_WAIT_BITSET, 0, NULL, NULL, SENTINEL_BITS);
    while (rc < 0 && errno == EINTR);
    t_store(&s->sentinel_rc, (uint32_t)(rc < 0 ? errno : 0) + 1000u);
    return NULL;
}

/* Wakes the parent's own wait, not the sentinel. On the thread backend's
 * vector mode a wait leaves the kernel queue for a moment whenever its
 * helper re-queues (after an arm, say): a wake then finds nobody and wakes
 * nobody, so it is repeated until it finds the wait. */
static void wake_parent_wait(int iter)
{
    int64_t deadline = t_now_ns() + (int64_t)T_READY_MS * 1000000;
    for (;;) {
        long n = t_futex(&s->word, FUTEX_WAKE_BITSET, 1, NULL, NULL, PARENT_BITS);
        if (n == 1)
            return;
        if (n != 0)
            FAIL("iteration %d: FUTEX_WAKE_BITSET: %s", iter, strerror(errno));
        if (t_now_ns() > deadline)
            FAIL("iteration %d: the parent's wait never became a kernel waiter", iter);
        sched_yield();
    }
}

/* Lands the fork somewhere in the delivery of the wake just sent. */
static void land(afx_t *h, int iter)
{
    switch (iter % 3) {
    case 0:
        break;
    case 1: {
        unsigned spins = (unsigned)(iter * 7919u) % 40000u;
        for (volatile unsigned i = 0; i < spins; i++)
            ;
        break;
    }
    default:
        /* As soon as the eventfd is written: the backend may still be
         * between the write and marking the delivery done. */
        while (!t_readable(afx_eventfd(h), 0))
            ;
        break;
    }
}

static void child_start(void)
{
    alarm(CHILD_ALARM_S);
}

static void wait_child_waiter(uint32_t *w, int iter)
{
    int64_t deadline = t_now_ns() + (int64_t)CHILD_ALARM_S * 1000000000;
    while (t_waiters(w, 0) != 1) {
        if (t_now_ns() > deadline)
            FAIL("new handle, iteration %d: the child's new wait never became a kernel waiter",
                 iter);
        sched_yield();
    }
}

/* free / cancel / ack of the inherited handle in the child. */
static void detach_case(afx_t *h, enum op op, int iter)
{
    pthread_t t;
    CHECK_EQ(afx_wait_async(h, 0), 0);
    t_store(&s->sentinel_rc, 0);
    CHECK_EQ(pthread_create(&t, NULL, sentinel, NULL), 0);
    t_await_waiters(&s->word, 0, 2);
    /* A pure wake (the word stays 0) of the parent's async wait alone. */
    wake_parent_wait(iter);
    land(h, iter);
    pid_t pid = t_fork();
    if (pid == 0) {
        child_start();
        switch (op) {
        case OP_FREE:
            afx_free(h);
            break;
        case OP_CANCEL:
            CHECK_EQ(afx_cancel(h), 0);
            CHECK_EQ(afx_ack(h), 0);
            break;
        default:
            /* The inherited wait is reported complete (re-check the word). */
            CHECK_EQ(afx_ack(h), 1);
            CHECK_EQ(afx_ack(h), 0);
            break;
        }
        t_child_exit(0);
    }
    t_reap(pid);
    if (!t_readable(afx_eventfd(h), T_READY_MS))
        FAIL("%s, iteration %d: the parent's completion is gone (its eventfd was drained in "
             "the child)",
             op_names[op], iter);
    CHECK_EQ(afx_ack(h), 1);
    CHECK_NOT_READY(h, "parent's handle after its ack");
    if (t_load(&s->sentinel_rc) != 0 || t_waiters(&s->word, 0) != 1)
        FAIL("%s, iteration %d: the child forwarded a wake (the sentinel waiter was woken)",
             op_names[op], iter);
    CHECK_EQ(t_raw_wake(&s->word, INT32_MAX, 0), 1);
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_EQ(t_load(&s->sentinel_rc), 1000);
}

/* The child re-arms the inherited handle; its completion is its own. */
static void rearm_case(afx_t *h, int iter)
{
    CHECK_EQ(afx_wait_async(h, 0), 0);
    t_await_waiters(&s->word, 0, 1);
    t_store(&s->word, 1);
    t_store(&s->child_armed, 0);
    /* Woken, or (thread backend: momentarily re-queued by its helper) ended
     * by the store: either way the wait completes. */
    CHECK(afx_wake(h, 1) >= 0);
    land(h, iter);
    pid_t pid = t_fork();
    if (pid == 0) {
        child_start();
        int fd = afx_eventfd(h);
        CHECK(fd >= 0);
        CHECK_EQ(afx_ack(h), 1);
        CHECK_NOT_READY(h, "child's handle after acking the inherited wait");
        CHECK_EQ(afx_wait_async(h, 1), 0);
        CHECK_EQ(afx_eventfd(h), fd);
        t_signal(&s->child_armed, 1);
        CHECK_READY(h, "child's re-armed wait");
        CHECK_EQ(afx_ack(h), 1);
        CHECK_EQ(t_load(&s->word), 2);
        afx_free(h);
        t_child_exit(0);
    }
    if (!t_readable(afx_eventfd(h), T_READY_MS))
        FAIL("re-arm, iteration %d: the parent's completion is gone", iter);
    CHECK_EQ(afx_ack(h), 1);
    t_await(&s->child_armed, 1);
    wait_child_waiter(&s->word, iter);
    t_store(&s->word, 2);
    CHECK(afx_wake(h, 1) >= 0); /* the child checks its wait completes */
    t_reap(pid);
    CHECK_NOT_READY(h, "parent's handle after the child's wait completed");
    CHECK_EQ(afx_ack(h), 0);
}

/* With the parent's wait pending, the child's new handle works. */
static void new_handle_case(afx_t *h, int iter)
{
    CHECK_EQ(afx_wait_async(h, 0), 0);
    t_store(&s->other, 0);
    t_store(&s->child_armed, 0);
    land(h, iter % 3 == 2 ? 0 : iter); /* nothing to become readable */
    pid_t pid = t_fork();
    if (pid == 0) {
        child_start();
        afx_t *g = afx_new(&s->other, 0);
        CHECK_NOT_NULL(g);
        CHECK_EQ(afx_wait_async(g, 0), 0);
        t_signal(&s->child_armed, 1);
        CHECK_READY(g, "child's new handle");
        CHECK_EQ(afx_ack(g), 1);
        afx_free(g);
        afx_free(h);
        t_child_exit(0);
    }
    t_await(&s->child_armed, 1);
    wait_child_waiter(&s->other, iter);
    t_store(&s->other, 1);
    CHECK(t_raw_wake(&s->other, 1, 0) >= 0); /* the child checks its wait completes */
    t_reap(pid);
    /* The parent's wait is untouched by the child; on the thread backend the
     * busy thread's wakes may complete it spuriously (a sibling on the same
     * helper), never lose it. */
    t_store(&s->word, 1);
    afx_wake(h, UINT32_MAX);
    CHECK_READY(h, "parent's pending wait");
    CHECK_EQ(afx_ack(h), 1);
    CHECK_NOT_READY(h, "parent's handle after its ack");
}

/* Keeps the parent's backend threads busy (arming, completing, delivering)
 * while the new-handle case forks, so the fork lands while they hold their
 * locks. */
static void *busy(void *arg)
{
    (void)arg;
    afx_t *b = afx_new(&s->busy_word, 0);
    CHECK_NOT_NULL(b);
    while (!t_load(&s->busy_stop)) {
        uint32_t v = t_load(&s->busy_word);
        CHECK_EQ(afx_wait_async(b, v), 0);
        t_store(&s->busy_word, v + 1);
        afx_wake(b, 1);
        if (!t_readable(afx_eventfd(b), T_READY_MS))
            FAIL("busy thread: its own wait did not complete");
        CHECK_EQ(afx_ack(b), 1);
    }
    afx_free(b);
    return NULL;
}

int main(void)
{
    t_start("fork_inherited");
    s = t_shared(sizeof *s);
    afx_t *h = afx_new(&s->word, 0);
    CHECK_NOT_NULL(h);
    int iters = t_scale(ITERS);
    pthread_t busy_thread;
    for (int op = 0; op < OP_COUNT; op++) {
        for (int iter = 0; iter < iters; iter++) {
            t_store(&s->word, 0);
            switch (op) {
            case OP_REARM:
                rearm_case(h, iter);
                break;
            case OP_NEW_HANDLE:
                if (iter == 0 && with_busy_thread)
                    CHECK_EQ(pthread_create(&busy_thread, NULL, busy, NULL), 0);
                new_handle_case(h, iter);
                break;
            default:
                detach_case(h, (enum op)op, iter);
                break;
            }
            CHECK_EQ(t_waiters(&s->word, 0), 0);
        }
    }
    if (with_busy_thread) {
        t_signal(&s->busy_stop, 1);
        CHECK_EQ(pthread_join(busy_thread, NULL), 0);
    }
    afx_free(h);
    t_pass("%d forks per case (free, cancel, ack, re-arm, new handle), each landing before, "
           "during or after a delivery: inherited handles detached%s",
           iters, with_busy_thread ? "" : " (busy parent thread off under ASan)");
    return 0;
}
