/*
 * cancel_race: cancel (or free) racing a wake, every wake accounted for
 * (DESIGN S3, §5 "cancel-vs-wake races looped many times").
 *
 * Two handles A and B in this process, armed with the same expected value
 * on a word that never changes, both queued in the kernel. Right after an
 * afx_wake(x, 1) that returned 1, A is cancelled (or freed) at once,
 * without looking at its eventfd. Whoever consumed the wake, B must
 * complete: either A's cancel finds the wake already taken by A and passes
 * it on with wake(1), or it removed A before the wake reached it and the
 * wake went to B.
 */
#include "common.h"

enum { ITERS = 300 };
enum { WORD_VALUE = 42 };

static void race(uint32_t *word, int use_free)
{
    afx_t *a = afx_new(word, 0), *b = afx_new(word, 0), *waker = afx_new(word, 0);
    CHECK_NOT_NULL(a);
    CHECK_NOT_NULL(b);
    CHECK_NOT_NULL(waker);
    for (int iter = 0; iter < ITERS; iter++) {
        CHECK_EQ(afx_wait_async(a, WORD_VALUE), 0);
        CHECK_EQ(afx_wait_async(b, WORD_VALUE), 0);
        t_await_waiters(word, 0, 2);
        CHECK_EQ(afx_wake(waker, 1), 1);
        if (use_free) {
            afx_free(a);
            a = afx_new(word, 0);
            CHECK_NOT_NULL(a);
        } else {
            CHECK_EQ(afx_cancel(a), 0);
            CHECK_NOT_READY(a, "cancelled handle");
            CHECK_EQ(afx_ack(a), 0);
        }
        if (!t_readable(afx_eventfd(b), T_READY_MS))
            FAIL("iteration %d (%s right after the wake): B never readable, the wake is lost "
                 "(%d kernel waiter(s) still on the word)",
                 iter, use_free ? "afx_free" : "afx_cancel", t_waiters(word, 0));
        CHECK_EQ(afx_ack(b), 1);
        CHECK_EQ(t_load(word), WORD_VALUE);
        CHECK_EQ(t_waiters(word, 0), 0);
    }
    afx_free(a);
    afx_free(b);
    afx_free(waker);
}

int main(void)
{
    t_start("cancel_race");
    uint32_t *word = t_shared(4096);
    *word = WORD_VALUE;
    race(word, 0);
    race(word, 1);
    munmap(word, 4096);
    t_pass("%d cancels and %d frees racing a wake, every wake reached B", ITERS, ITERS);
    return 0;
}
