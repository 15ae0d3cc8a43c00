/*
 * private_flag: AFX_PRIVATE handles on process-local memory.
 * - a blocking afx_wait in one thread is woken by afx_wake from another;
 * - an async wait is completed by a pthread waker;
 * - private and shared keys never match: a private waiter is not woken by
 *   a shared wake on the same address (wake returns 0, eventfd quiet), and
 *   a shared waiter is not woken by a private wake; each is woken by a wake
 *   of its own kind;
 * - raw FUTEX_WAKE|FUTEX_PRIVATE_FLAG wakes a private async wait.
 */
#include "common.h"

#include <pthread.h>

enum { ROUNDS = 100 };

struct ctx {
    uint32_t *word;
    afx_t *f;
    uint32_t expected;
    int result;
    uint32_t go; /* handshake for the waker thread */
};

static void *blocking_waiter(void *arg)
{
    struct ctx *c = arg;
    c->result = afx_wait(c->f, c->expected, -1);
    return NULL;
}

static void *waker(void *arg)
{
    struct ctx *c = arg;
    t_wake_one(c->f);
    return NULL;
}

int main(void)
{
    t_start("private_flag");
    uint32_t *word = malloc(sizeof *word);
    CHECK_NOT_NULL(word);
    *word = 0;
    afx_t *priv = afx_new(word, AFX_PRIVATE);
    CHECK_NOT_NULL(priv);
    afx_t *shared = afx_new(word, 0);
    CHECK_NOT_NULL(shared);

    /* Blocking wait in a thread, woken by this one. */
    for (uint32_t i = 0; i < ROUNDS; i++) {
        struct ctx c = {.word = word, .f = priv, .expected = i, .result = -1, .go = 0};
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, blocking_waiter, &c), 0);
        t_await_waiters(word, 1, 1);
        CHECK_EQ(t_waiters(word, 0), 0);
        if (i % 2) {
            /* A pure wake. */
            CHECK_EQ(afx_wake(priv, 1), 1);
        } else {
            t_store(word, i + 1);
            CHECK_EQ(afx_wake(priv, UINT32_MAX), 1);
        }
        CHECK_EQ(pthread_join(t, NULL), 0);
        CHECK_EQ(c.result, 0);
        if (i % 2)
            t_store(word, i + 1);
    }

    /* Async wait, woken by a pthread. */
    for (int i = 0; i < ROUNDS; i++) {
        uint32_t v = t_load(word);
        CHECK_EQ(afx_wait_async(priv, v), 0);
        struct ctx c = {.word = word, .f = priv, .expected = v, .result = 0, .go = 0};
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, waker, &c), 0);
        CHECK_READY(priv, "private async wait woken by a thread");
        CHECK_EQ(afx_ack(priv), 1);
        CHECK_EQ(pthread_join(t, NULL), 0);
        CHECK_EQ(t_load(word), v);
    }

    /* Keys never match: private waiter vs shared wake, and vice versa. */
    for (int i = 0; i < ROUNDS; i++) {
        uint32_t v = t_load(word);
        CHECK_EQ(afx_wait_async(priv, v), 0);
        t_await_waiters(word, 1, 1);
        CHECK_EQ(afx_wake(shared, 1), 0);
        CHECK_EQ(afx_wake(shared, UINT32_MAX), 0);
        CHECK_EQ(t_raw_wake(word, INT_MAX, 0), 0);
        CHECK_NOT_READY(priv, "private wait after shared wakes");
        CHECK_EQ(afx_ack(priv), 0);
        if (i % 2) {
            CHECK_EQ(afx_wake(priv, 1), 1);
        } else {
            CHECK_EQ(t_raw_wake(word, 1, 1), 1); /* raw private wake */
        }
        CHECK_READY(priv, "private wait after a private wake");
        CHECK_EQ(afx_ack(priv), 1);

        CHECK_EQ(afx_wait_async(shared, v), 0);
        t_await_waiters(word, 0, 1);
        CHECK_EQ(t_waiters(word, 1), 0);
        CHECK_EQ(afx_wake(priv, 1), 0);
        CHECK_EQ(afx_wake(priv, UINT32_MAX), 0);
        CHECK_NOT_READY(shared, "shared wait after private wakes");
        CHECK_EQ(afx_ack(shared), 0);
        CHECK_EQ(afx_wake(shared, 1), 1);
        CHECK_READY(shared, "shared wait after a shared wake");
        CHECK_EQ(afx_ack(shared), 1);
    }

    afx_free(priv);
    afx_free(shared);
    free(word);
    t_pass("%d blocking + %d async private waits woken by threads, %d rounds of private/shared "
           "key separation",
           ROUNDS, ROUNDS, ROUNDS);
    return 0;
}
