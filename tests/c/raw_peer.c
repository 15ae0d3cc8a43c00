/*
 * raw_peer: interoperability with a process that does not use the library
 * (DESIGN S2). The forked child never calls an afx_ function: it only uses
 * futex(2) / futex_waitv(2) on the shared word.
 * (a) the child's raw FUTEX_WAKE (and FUTEX_WAKE_BITSET) wakes the parent's
 *     async wait: the eventfd becomes readable, afx_ack returns 1, and the
 *     word did not change (a real wake, not a mismatch);
 * (b) the parent's afx_wake wakes the child asleep in raw FUTEX_WAIT,
 *     FUTEX_WAIT_BITSET or futex_waitv, and returns exactly 1.
 * The side that wakes knows the other sleeps because the kernel has a
 * waiter queued on the word, or by waking until a waiter is found.
 */
#include "common.h"

enum { ROUNDS = 120 };
enum { WORD_VALUE = 9 };

struct shm {
    uint32_t word;
    uint32_t round_a;   /* parent -> child: async wait i is armed */
    uint32_t round_b;   /* parent -> child: go to sleep for round i */
    uint32_t child_woken;
    uint32_t child_kind; /* how the child slept in the last round */
};

static int raw_sleep(uint32_t *w, uint32_t expected, int kind)
{
    long r;
    switch (kind) {
    case 0:
        r = syscall(SYS_futex, w, FUTEX_WAIT, expected, NULL, NULL, 0);
        break;
    case 1:
        r = syscall(SYS_futex, w, FUTEX_WAIT_BITSET, expected, NULL, NULL, 0x4u);
        break;
    default: {
#ifdef SYS_futex_waitv
        struct futex_waitv v;
        memset(&v, 0, sizeof v);
        v.val = expected;
        v.uaddr = (uintptr_t)w;
        v.flags = 0x02; /* FUTEX2_SIZE_U32, shared */
        r = syscall(SYS_futex_waitv, &v, 1u, 0u, NULL, CLOCK_MONOTONIC);
        if (r > 0)
            FAIL("futex_waitv returned index %ld", r);
#else
        r = syscall(SYS_futex, w, FUTEX_WAIT, expected, NULL, NULL, 0);
#endif
    }
    }
    return r < 0 ? -errno : 0;
}

static void child(struct shm *s)
{
    /* (a) wake the parent's async wait with raw futex(2). */
    for (uint32_t i = 1; i <= ROUNDS; i++) {
        t_await(&s->round_a, i);
        if (i % 2) {
            /* Confirmed asleep: one raw wake, exactly one woken. */
            t_await_waiters(&s->word, 0, 1);
            int n = (i % 4 == 1) ? t_raw_wake(&s->word, 1, 0)
                                 : (int)syscall(SYS_futex, &s->word, FUTEX_WAKE_BITSET, 1, NULL,
                                                NULL, FUTEX_BITSET_MATCH_ANY);
            if (n != 1)
                FAIL("round %u: raw wake woke %d (errno %d)", i, n, errno);
        } else {
            /* Wake until a waiter is found: the arm may still be on its
             * way into the kernel. */
            for (;;) {
                int n = t_raw_wake(&s->word, 1, 0);
                if (n == 1)
                    break;
                if (n != 0)
                    FAIL("round %u: raw FUTEX_WAKE = %d", i, n);
                sched_yield();
            }
        }
    }
    /* (b) sleep in raw futex calls until the parent's afx_wake. */
    for (uint32_t i = 1; i <= ROUNDS; i++) {
        t_await(&s->round_b, i);
        int kind = (int)(i % 3);
        for (;;) {
            int r = raw_sleep(&s->word, WORD_VALUE, kind);
            if (r == 0)
                break;
            if (r == -EINTR)
                continue;
            FAIL("round %u: raw sleep (kind %d) = %d (%s)", i, kind, r, strerror(-r));
        }
        t_store(&s->child_kind, (uint32_t)kind);
        t_signal(&s->child_woken, i);
    }
    t_child_exit(0);
}

int main(void)
{
    t_start("raw_peer");
    struct shm *s = t_shared(sizeof *s);
    memset(s, 0, sizeof *s);
    s->word = WORD_VALUE;
    afx_t *f = afx_new(&s->word, 0);
    CHECK_NOT_NULL(f);

    pid_t pid = t_fork();
    if (pid == 0)
        child(s);

    /* (a) */
    for (uint32_t i = 1; i <= ROUNDS; i++) {
        CHECK_EQ(afx_wait_async(f, WORD_VALUE), 0);
        t_signal(&s->round_a, i);
        if (!t_readable(afx_eventfd(f), T_READY_MS))
            FAIL("round %u: the raw peer's wake did not reach the async wait", i);
        CHECK_EQ(afx_ack(f), 1);
        CHECK_EQ(t_load(&s->word), WORD_VALUE);
    }

    /* (b) */
    for (uint32_t i = 1; i <= ROUNDS; i++) {
        t_signal(&s->round_b, i);
        if (i % 2) {
            t_await_waiters(&s->word, 0, 1);
            CHECK_EQ(afx_wake(f, 1), 1);
        } else {
            /* UINT32_MAX must wake the one waiter there is, too. */
            for (;;) {
                int n = afx_wake(f, (i % 4) ? 1 : UINT32_MAX);
                if (n == 1)
                    break;
                if (n != 0)
                    FAIL("round %u: afx_wake = %d", i, n);
                sched_yield();
            }
        }
        t_await(&s->child_woken, i);
        CHECK_EQ(t_load(&s->child_kind), i % 3);
    }
    t_reap(pid);
    CHECK_EQ(t_waiters(&s->word, 0), 0);
    afx_free(f);
    munmap(s, sizeof *s);
#ifdef SYS_futex_waitv
    const char *kinds = "FUTEX_WAIT, FUTEX_WAIT_BITSET, futex_waitv";
#else
    const char *kinds = "FUTEX_WAIT, FUTEX_WAIT_BITSET";
#endif
    t_pass("%d raw wakes reached async waits, %d afx_wakes reached raw sleepers (%s)", ROUNDS,
           ROUNDS, kinds);
    return 0;
}
