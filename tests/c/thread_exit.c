/*
 * thread_exit: the thread that made a handle or armed its wait may exit;
 * the wait stays armed and completes for whoever owns the handle next
 * (DESIGN §3: io_uring completions run as task_work on the submitting
 * thread, and a submitter's exit cancels its waits — the library must not
 * let a user thread be that submitter).
 * - threads each create a handle, arm it and exit; the main thread checks
 *   the kernel still has every wait queued, then wakes them one by one:
 *   each eventfd becomes readable and afx_ack (from the main thread) is 1;
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
    unsigned completions = 0;

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
        /* Every wait is still a kernel waiter after its arming thread is
         * gone (none was cancelled by the exit). */
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
    t_pass("%u waits armed by %d exited threads each completed by exactly one wake", completions,
           ROUNDS * THREADS);
    return 0;
}
