/*
 * peer_killed: SIGKILL of a peer mid-wait. Children asleep on the shared
 * word (an async afx wait, a blocking afx_wait, a raw FUTEX_WAIT) are
 * killed; once the kernel has dropped their waits, the word works as
 * before for the survivors: a wake(1) is not swallowed by a dead waiter,
 * it reaches this process's async wait, and wake counts are exact.
 */
#include "common.h"

enum { ROUNDS = 20, WORD_VALUE = 11 };

enum kind { K_ASYNC, K_BLOCKING, K_RAW, K_ASYNC_AND_BLOCKING };

static void child(uint32_t *word, enum kind kind)
{
    if (kind == K_RAW) {
        for (;;)
            t_raw_wait(word, WORD_VALUE, 0, NULL);
    }
    afx_t *f = afx_new(word, 0);
    CHECK_NOT_NULL(f);
    if (kind == K_ASYNC || kind == K_ASYNC_AND_BLOCKING)
        CHECK_EQ(afx_wait_async(f, WORD_VALUE), 0);
    if (kind == K_BLOCKING || kind == K_ASYNC_AND_BLOCKING)
        for (;;)
            afx_wait(f, WORD_VALUE, -1);
    for (;;)
        pause();
}

int main(void)
{
    t_start("peer_killed");
    uint32_t *word = t_shared(4096);
    *word = WORD_VALUE;
    afx_t *f = afx_new(word, 0);
    CHECK_NOT_NULL(f);
    afx_t *waker = afx_new(word, 0);
    CHECK_NOT_NULL(waker);
    const enum kind kinds[] = {K_ASYNC, K_BLOCKING, K_RAW, K_ASYNC_AND_BLOCKING};
    const int nkids = 4, kernel_waits = 5; /* K_ASYNC_AND_BLOCKING has two */

    for (int round = 0; round < ROUNDS; round++) {
        pid_t pids[4];
        for (int k = 0; k < nkids; k++) {
            pids[k] = t_fork();
            if (pids[k] == 0)
                child(word, kinds[k]);
        }
        t_await_waiters(word, 0, kernel_waits);
        for (int k = 0; k < nkids; k++)
            CHECK_EQ(kill(pids[k], SIGKILL), 0);
        for (int k = 0; k < nkids; k++) {
            int status;
            CHECK_EQ(waitpid(pids[k], &status, 0), pids[k]);
            CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        }
        /* The kernel drops a dead process's waits (an io_uring's
         * asynchronously, as its ring is torn down: the count comes down
         * through every value after waitpid has returned). */
        t_await_waiters_leave(word, 0, 0);
        CHECK_EQ(afx_wake(waker, UINT32_MAX), 0);

        /* The survivor's wait gets the next wake. */
        CHECK_EQ(afx_wait_async(f, WORD_VALUE), 0);
        t_await_waiters(word, 0, 1);
        CHECK_EQ(afx_wake(waker, 1), 1);
        CHECK_READY(f, "survivor's async wait");
        CHECK_EQ(afx_ack(f), 1);
        CHECK_EQ(t_waiters(word, 0), 0);
    }
    afx_free(f);
    afx_free(waker);
    munmap(word, 4096);
    t_pass("%d rounds: %d waiting peers (async, blocking, raw, async+blocking) killed, their "
           "waits gone, the survivor's wait woken",
           ROUNDS, nkids);
    return 0;
}
