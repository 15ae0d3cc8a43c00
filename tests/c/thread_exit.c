/*
 * thread_exit: the thread that made a handle or armed its wait may exit
 * without losing a wake: the wait either stays armed (thread backend, or
 * io_uring with AFX_URING_SUBMIT=thread) or completes spuriously when the
 * thread exits (io_uring, where the arming thread submitted it: its
 * completions run as task_work on that thread, so its waits are ended
 * while it can still run them), and the owner re-checks and arms again.
 * - threads each create a handle, arm it and exit; the main thread acks
 *   any spurious completion (the word is unchanged) and re-arms it, checks
 *   the kernel has every wait queued, then wakes them one by one: each
 *   eventfd becomes readable and afx_ack (from the main thread) is 1;
 * - a thread arms, exits, and the main thread cancels (no wake to forward).
 */
#include "common.h"

#include <pthread.h>

enum { THREADS = 16, ROUNDS = 10, WORD_VALUE = 5 };

struct arg {
    uint32_t *word;
    afx_t *f;
};

static void *arm_and_exit(void *p)
{
    struct arg *a = p;
    a->f = afx_new(a->word, 0);
    CHECK_NOT_NULL(a->f);
    CHECK_EQ(afx_wait_async(a->f, WORD_VALUE), 0);
    return NULL;
}

int main(void)
{
    t_start("thread_exit");
    uint32_t *word = t_shared(4096);
    *word = WORD_VALUE;
    afx_t *waker = afx_new(word, 0);
    CHECK_NOT_NULL(waker);
    unsigned completions = 0, spurious = 0;

    for (int round = 0; round < ROUNDS; round++) {
        struct arg args[THREADS];
        pthread_t threads[THREADS];
        for (int k = 0; k < THREADS; k++) {
            args[k].word = word;
            args[k].f = NULL;
            CHECK_EQ(pthread_create(&threads[k], NULL, arm_and_exit, &args[k]), 0);
        }
        for (int k = 0; k < THREADS; k++)
            CHECK_EQ(pthread_join(threads[k], NULL), 0);
        /* A wait ended by its thread's exit is a completed one: readable,
         * acked, the word re-checked (unchanged), armed again here. */
        for (int k = 0; k < THREADS; k++) {
            if (!t_readable(afx_eventfd(args[k].f), 0))
                continue;
            CHECK_EQ(afx_ack(args[k].f), 1);
            CHECK_EQ(t_load(word), WORD_VALUE);
            CHECK_EQ(afx_wait_async(args[k].f, WORD_VALUE), 0);
            spurious++;
        }
        /* Every wait is a kernel waiter now. */
        t_await_waiters(word, 0, THREADS);
        for (int k = 0; k < THREADS; k++)
            CHECK_NOT_READY(args[k].f, "wait of an exited thread, before any wake");
        for (int woken = 1; woken <= THREADS; woken++) {
            CHECK_EQ(afx_wake(waker, 1), 1);
            /* Exactly one more handle completes. */
            int found = -1;
            while (found < 0) {
                struct pollfd p[THREADS];
                for (int k = 0; k < THREADS; k++) {
                    p[k].fd = args[k].f ? afx_eventfd(args[k].f) : -1;
                    p[k].events = POLLIN;
                    p[k].revents = 0;
                }
                int n = poll(p, THREADS, T_READY_MS);
                if (n == 0)
                    FAIL("round %d: wake %d reached no handle", round, woken);
                if (n < 0 && errno != EINTR)
                    FAIL("poll: %s", strerror(errno));
                if (n > 1)
                    FAIL("round %d: one wake(1), %d handles readable", round, n);
                for (int k = 0; k < THREADS; k++)
                    if (p[k].revents & POLLIN)
                        found = k;
            }
            CHECK_EQ(afx_ack(args[found].f), 1);
            completions++;
            afx_free(args[found].f);
            args[found].f = NULL;
            /* The others are (again) queued before the next wake. */
            t_await_waiters(word, 0, THREADS - woken);
        }

        /* Armed by a thread that exited, cancelled here. */
        struct arg one = {.word = word, .f = NULL};
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, arm_and_exit, &one), 0);
        CHECK_EQ(pthread_join(t, NULL), 0);
        if (!t_readable(afx_eventfd(one.f), 0))
            t_await_waiters(word, 0, 1);
        CHECK_EQ(afx_cancel(one.f), 0);
        CHECK_EQ(t_waiters(word, 0), 0);
        CHECK_NOT_READY(one.f, "cancelled");
        CHECK_EQ(afx_wait_async(one.f, WORD_VALUE), 0); /* re-armed by its new owner */
        t_await_waiters(word, 0, 1);
        CHECK_EQ(afx_wake(waker, 1), 1);
        CHECK_READY(one.f, "re-armed by the main thread");
        CHECK_EQ(afx_ack(one.f), 1);
        afx_free(one.f);
    }
    afx_free(waker);
    munmap(word, 4096);
    t_pass("%u waits armed by %d exited threads each completed by exactly one wake (%u ended "
           "spuriously by the exit and re-armed)",
           completions, ROUNDS * THREADS, spurious);
    return 0;
}
