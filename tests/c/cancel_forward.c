/*
 * cancel_forward: a wake consumed by a wait that is then cancelled or freed
 * without being acknowledged is passed on (DESIGN S3).
 *
 * Two handles A and B on one shared word, both armed with the same expected
 * value; the word never changes, so only wakes can complete them. Once both
 * are queued in the kernel, one afx_wake(x, 1) returns 1: exactly one of the
 * two eventfds becomes readable. Cancelling (or freeing) THAT handle without
 * acking must make the other one readable: the consumed wake was forwarded.
 * Looped, in one process (cancel and free) and across two processes (B in a
 * forked child; whichever side got the wake gives it up).
 */
#include "common.h"

enum { ITERS = 300, XPROC_ITERS = 200 };
enum { WORD_VALUE = 42 };

/* Which of a, b is readable; fails unless exactly one (checked once the
 * first one is readable, after which the other must stay quiet). */
static int which_ready(afx_t *a, afx_t *b, int iter)
{
    struct pollfd p[2] = {{.fd = afx_eventfd(a), .events = POLLIN, .revents = 0},
                          {.fd = afx_eventfd(b), .events = POLLIN, .revents = 0}};
    int n;
    do
        n = poll(p, 2, T_READY_MS);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        FAIL("iteration %d: neither eventfd readable after a wake that returned 1", iter);
    int ra = (p[0].revents & POLLIN) != 0, rb = (p[1].revents & POLLIN) != 0;
    if (ra && rb)
        FAIL("iteration %d: both eventfds readable after one wake", iter);
    return ra ? 0 : 1;
}

static void same_process(uint32_t *word, int use_free, unsigned *a_won)
{
    afx_t *h[2] = {afx_new(word, 0), afx_new(word, 0)};
    CHECK_NOT_NULL(h[0]);
    CHECK_NOT_NULL(h[1]);
    afx_t *waker = afx_new(word, 0);
    CHECK_NOT_NULL(waker);
    for (int iter = 0; iter < ITERS; iter++) {
        CHECK_EQ(afx_wait_async(h[0], WORD_VALUE), 0);
        CHECK_EQ(afx_wait_async(h[1], WORD_VALUE), 0);
        t_await_waiters(word, 0, 2);
        CHECK_EQ(afx_wake(waker, 1), 1);
        int x = which_ready(h[0], h[1], iter);
        int y = 1 - x;
        *a_won += x == 0;
        if (t_readable(afx_eventfd(h[y]), 0))
            FAIL("iteration %d: the other eventfd is readable before the cancel", iter);
        if (use_free) {
            afx_free(h[x]);
            h[x] = afx_new(word, 0);
            CHECK_NOT_NULL(h[x]);
        } else {
            CHECK_EQ(afx_cancel(h[x]), 0);
            CHECK_NOT_READY(h[x], "cancelled handle");
            CHECK_EQ(afx_ack(h[x]), 0);
        }
        if (!t_readable(afx_eventfd(h[y]), T_READY_MS))
            FAIL("iteration %d (%s): the wake consumed by the %s handle was not forwarded to "
                 "the other (its eventfd stays quiet, %d kernel waiter(s) on the word)",
                 iter, use_free ? "afx_free" : "afx_cancel", use_free ? "freed" : "cancelled",
                 t_waiters(word, 0));
        CHECK_EQ(afx_ack(h[y]), 1);
        CHECK_EQ(t_load(word), WORD_VALUE);
        /* Every wake is accounted for: nothing is queued any more. */
        CHECK_EQ(t_waiters(word, 0), 0);
    }
    afx_free(h[0]);
    afx_free(h[1]);
    afx_free(waker);
}

struct xshm {
    uint32_t word;
    uint32_t iter;    /* parent -> child: iteration i may start */
    uint32_t armed;   /* both sides add 1 once armed */
    uint32_t winner;  /* 0, or 1 (parent) / 2 (child): who saw the wake first */
    uint32_t done;    /* both sides add 1 at the end of an iteration */
    uint32_t use_free;
};

/* One side of the cross-process variant: arm, wait for readiness; the first
 * side to see it gives the wait up (cancel or free, no ack), the other must
 * then see the forwarded wake. */
static void xproc_side(struct xshm *s, afx_t **h, uint32_t me, int iter)
{
    CHECK_EQ(afx_wait_async(*h, WORD_VALUE), 0);
    t_signal_add(&s->armed, 1);
    if (!t_readable(afx_eventfd(*h), T_READY_MS))
        FAIL("iteration %d: %s never readable (winner %u)", iter, me == 1 ? "parent" : "child",
             t_load(&s->winner));
    if (t_cas(&s->winner, 0, me)) {
        if (t_load(&s->use_free)) {
            afx_free(*h);
            *h = afx_new(&s->word, 0);
            CHECK_NOT_NULL(*h);
        } else {
            CHECK_EQ(afx_cancel(*h), 0);
            CHECK_NOT_READY(*h, "cancelled handle");
        }
    } else {
        CHECK_EQ(afx_ack(*h), 1);
    }
    t_signal_add(&s->done, 1);
}

static void xproc_child(struct xshm *s)
{
    afx_t *h = afx_new(&s->word, 0);
    CHECK_NOT_NULL(h);
    for (int i = 1; i <= 2 * XPROC_ITERS; i++) {
        t_await(&s->iter, (uint32_t)i);
        xproc_side(s, &h, 2, i);
    }
    afx_free(h);
    t_child_exit(0);
}

static void cross_process(uint32_t *counts)
{
    struct xshm *s = t_shared(sizeof *s);
    memset(s, 0, sizeof *s);
    s->word = WORD_VALUE;
    afx_t *h = afx_new(&s->word, 0);
    CHECK_NOT_NULL(h);
    afx_t *waker = afx_new(&s->word, 0);
    CHECK_NOT_NULL(waker);
    pid_t pid = t_fork();
    if (pid == 0)
        xproc_child(s);
    for (int i = 1; i <= 2 * XPROC_ITERS; i++) {
        t_store(&s->use_free, i > XPROC_ITERS);
        t_store(&s->winner, 0);
        t_signal(&s->iter, (uint32_t)i);
        /* Arm on this side in a second step: first wait until the child
         * armed, so both are queued when the wake comes. */
        CHECK_EQ(afx_wait_async(h, WORD_VALUE), 0);
        t_signal_add(&s->armed, 1);
        t_await_at_least(&s->armed, 2u * (uint32_t)i);
        t_await_waiters(&s->word, 0, 2);
        CHECK_EQ(afx_wake(waker, 1), 1);
        /* The parent's side, as in xproc_side but already armed. */
        if (!t_readable(afx_eventfd(h), T_READY_MS))
            FAIL("iteration %d: parent never readable (winner %u, %d kernel waiter(s))", i,
                 t_load(&s->winner), t_waiters(&s->word, 0));
        if (t_cas(&s->winner, 0, 1)) {
            if (i > XPROC_ITERS) {
                afx_free(h);
                h = afx_new(&s->word, 0);
                CHECK_NOT_NULL(h);
            } else {
                CHECK_EQ(afx_cancel(h), 0);
                CHECK_NOT_READY(h, "cancelled handle");
            }
        } else {
            CHECK_EQ(afx_ack(h), 1);
        }
        t_signal_add(&s->done, 1);
        t_await_at_least(&s->done, 2u * (uint32_t)i);
        counts[t_load(&s->winner) - 1]++;
        CHECK_EQ(t_waiters(&s->word, 0), 0);
        CHECK_EQ(t_load(&s->word), WORD_VALUE);
    }
    t_reap(pid);
    afx_free(h);
    afx_free(waker);
    munmap(s, sizeof *s);
}

int main(void)
{
    t_start("cancel_forward");
    uint32_t *word = t_shared(4096);
    *word = WORD_VALUE;
    unsigned a_won_cancel = 0, a_won_free = 0;
    same_process(word, 0, &a_won_cancel);
    same_process(word, 1, &a_won_free);
    uint32_t counts[2] = {0, 0};
    cross_process(counts);
    munmap(word, 4096);
    t_pass("%d cancel + %d free forwards in one process (A consumed %u/%u), %d across processes "
           "(parent consumed %u, child %u)",
           ITERS, ITERS, a_won_cancel, a_won_free, 2 * XPROC_ITERS, counts[0], counts[1]);
    return 0;
}
