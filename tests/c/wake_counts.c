/*
 * wake_counts: afx_wake(n) returns how many kernel waiters it woke.
 * - afx_wake(f, 0) returns 0 and wakes nobody, with waiters queued;
 * - two forked children asleep on the word (one in afx_wait, one in raw
 *   FUTEX_WAIT): afx_wake(f, 1) returns 1 and exactly one child wakes, the
 *   other is still asleep (shared counter + kernel waiter count); a second
 *   afx_wake(f, 1) wakes it;
 * - wake-all: N waiters of every kind (children in afx_wait, raw
 *   FUTEX_WAIT, async afx waits in children, an async wait in this
 *   process) -> afx_wake(f, UINT32_MAX) returns N; afx_wake(f, k) with
 *   fewer than k waiters returns the number there is.
 * The word never changes: only wakes end the waits.
 */
#include "common.h"

enum { WORD_VALUE = 3 };
enum { MAX_CHILDREN = 8 };

struct shm {
    uint32_t word;
    uint32_t woken; /* children add 1 once their wait returned */
};

enum kind { K_AFX_WAIT, K_RAW_WAIT, K_ASYNC };

static void child(struct shm *s, enum kind kind)
{
    if (kind == K_RAW_WAIT) {
        for (;;) {
            int r = t_raw_wait(&s->word, WORD_VALUE, 0, NULL);
            if (r == 0)
                break;
            if (r != -EINTR)
                FAIL("raw FUTEX_WAIT = %d (%s)", r, strerror(-r));
        }
    } else {
        afx_t *f = afx_new(&s->word, 0);
        CHECK_NOT_NULL(f);
        if (kind == K_AFX_WAIT) {
            CHECK_EQ(afx_wait(f, WORD_VALUE, -1), 0);
        } else {
            CHECK_EQ(afx_wait_async(f, WORD_VALUE), 0);
            struct pollfd p = {.fd = afx_eventfd(f), .events = POLLIN, .revents = 0};
            while (poll(&p, 1, -1) != 1) /* the watchdog bounds it */
                CHECK(errno == EINTR);
            CHECK_EQ(afx_ack(f), 1);
        }
        afx_free(f);
    }
    /* Woken by a wake, not by a change of the word. */
    CHECK_EQ(t_load(&s->word), WORD_VALUE);
    t_signal_add(&s->woken, 1);
    t_child_exit(0);
}

static pid_t spawn(struct shm *s, enum kind kind)
{
    pid_t pid = t_fork();
    if (pid == 0)
        child(s, kind);
    return pid;
}

int main(void)
{
    t_start("wake_counts");
    struct shm *s = t_shared(sizeof *s);
    memset(s, 0, sizeof *s);
    s->word = WORD_VALUE;
    afx_t *f = afx_new(&s->word, 0);
    CHECK_NOT_NULL(f);

    /* Nobody waits. */
    CHECK_EQ(afx_wake(f, 0), 0);
    CHECK_EQ(afx_wake(f, 1), 0);
    CHECK_EQ(afx_wake(f, UINT32_MAX), 0);

    /* wake(1) with two waiters in two processes wakes exactly one. */
    for (int round = 0; round < 20; round++) {
        s->woken = 0;
        pid_t p1 = spawn(s, round % 2 ? K_RAW_WAIT : K_AFX_WAIT);
        pid_t p2 = spawn(s, round % 2 ? K_AFX_WAIT : K_RAW_WAIT);
        t_await_waiters(&s->word, 0, 2);
        CHECK_EQ(afx_wake(f, 0), 0);
        CHECK_EQ(t_waiters(&s->word, 0), 2);
        CHECK_EQ(t_load(&s->woken), 0);
        CHECK_EQ(afx_wake(f, 1), 1);
        t_await(&s->woken, 1);
        /* The other one is still asleep in the kernel. */
        CHECK_EQ(t_waiters(&s->word, 0), 1);
        CHECK_EQ(t_load(&s->woken), 1);
        CHECK_EQ(afx_wake(f, 1), 1);
        t_await(&s->woken, 2);
        CHECK_EQ(t_waiters(&s->word, 0), 0);
        t_reap(p1);
        t_reap(p2);
    }

    /* Wake-all: every kind of waiter, in several processes and here. */
    const enum kind kinds[] = {K_AFX_WAIT, K_RAW_WAIT, K_ASYNC, K_AFX_WAIT,
                               K_ASYNC,    K_RAW_WAIT, K_ASYNC};
    const int nkids = (int)(sizeof kinds / sizeof kinds[0]);
    afx_t *mine = afx_new(&s->word, 0);
    CHECK_NOT_NULL(mine);
    for (int round = 0; round < 5; round++) {
        s->woken = 0;
        pid_t pids[MAX_CHILDREN];
        for (int k = 0; k < nkids; k++)
            pids[k] = spawn(s, kinds[k]);
        CHECK_EQ(afx_wait_async(mine, WORD_VALUE), 0);
        const int total = nkids + 1;
        t_await_waiters(&s->word, 0, total);
        CHECK_EQ(afx_wake(f, 0), 0);
        CHECK_EQ(t_waiters(&s->word, 0), total);
        if (round % 2) {
            CHECK_EQ(afx_wake(f, UINT32_MAX), total);
        } else {
            /* 2, then more than there is. */
            CHECK_EQ(afx_wake(f, 2), 2);
            t_await_waiters(&s->word, 0, total - 2);
            CHECK_EQ(afx_wake(f, (uint32_t)total + 5), total - 2);
        }
        t_await(&s->woken, (uint32_t)nkids);
        CHECK_READY(mine, "wake-all, async wait in the parent");
        CHECK_EQ(afx_ack(mine), 1);
        for (int k = 0; k < nkids; k++)
            t_reap(pids[k]);
        CHECK_EQ(t_waiters(&s->word, 0), 0);
        CHECK_EQ(afx_wake(f, UINT32_MAX), 0);
    }
    afx_free(mine);
    afx_free(f);
    munmap(s, sizeof *s);
    t_pass("wake(0) = 0 with waiters; 20 x wake(1) woke exactly one of two processes; 5 x "
           "wake-all of %d waiters of every kind",
           nkids + 1);
    return 0;
}
