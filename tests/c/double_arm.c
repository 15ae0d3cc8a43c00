/*
 * double_arm: the one-armed-wait state machine of a handle.
 * - ack / cancel with nothing armed: 0, eventfd quiet;
 * - a second arm without ack: -EBUSY (pending, and completed-unacked);
 * - ack before completion: 0; after cancel, arming works again;
 * - stale expected value: eventfd readable at once, ack 1 and drained;
 * - a wake (own handle, or another handle on the word) completes the wait:
 *   readable, ack 1, drained, re-armable;
 * - cancel of a completed, unacked wait drains the eventfd.
 */
#include "common.h"

#include <fcntl.h>

int main(void)
{
    t_start("double_arm");
    uint32_t *word = t_shared(4096);
    *word = 5;
    afx_t *f = afx_new(word, 0);
    CHECK_NOT_NULL(f);
    afx_t *other = afx_new(word, 0);
    CHECK_NOT_NULL(other);
    int fd = afx_eventfd(f);
    CHECK(fd >= 0);
    CHECK_EQ(afx_eventfd(f), fd); /* stable for the handle's life */
    CHECK(afx_eventfd(other) != fd);
    /* Created EFD_NONBLOCK | EFD_CLOEXEC. */
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);

    /* Nothing armed. */
    CHECK_EQ(afx_ack(f), 0);
    CHECK_EQ(afx_cancel(f), 0);
    CHECK_EQ(afx_cancel(f), 0);
    CHECK_NOT_READY(f, "fresh handle");

    for (int round = 0; round < 50; round++) {
        /* Pending wait: second arm is refused, ack says "not yet". */
        CHECK_EQ(afx_wait_async(f, 5), 0);
        CHECK_EQ(afx_wait_async(f, 5), -EBUSY);
        CHECK_EQ(afx_wait_async(f, 6), -EBUSY);
        CHECK_EQ(afx_ack(f), 0);
        CHECK_EQ(afx_ack(f), 0);
        CHECK_NOT_READY(f, "pending wait");
        /* Still armed after those: cancel, then arming works again. */
        CHECK_EQ(afx_wait_async(f, 5), -EBUSY);
        CHECK_EQ(afx_cancel(f), 0);
        CHECK_NOT_READY(f, "cancelled wait");
        CHECK_EQ(afx_ack(f), 0);
        CHECK_EQ(afx_cancel(f), 0);

        /* Stale expected value: readable at once. */
        CHECK_EQ(afx_wait_async(f, 4), 0);
        if (!t_readable(fd, 0))
            FAIL("stale arm: eventfd not readable at once");
        CHECK_EQ(afx_wait_async(f, 5), -EBUSY); /* completed but not acked */
        CHECK_EQ(afx_ack(f), 1);
        CHECK_NOT_READY(f, "acked stale arm");
        CHECK_EQ(afx_ack(f), 0);

        /* Stale, then cancel without ack: drained, re-armable. */
        CHECK_EQ(afx_wait_async(f, 4), 0);
        CHECK(t_readable(fd, 0));
        CHECK_EQ(afx_cancel(f), 0);
        CHECK_NOT_READY(f, "cancelled stale arm");
        CHECK_EQ(afx_ack(f), 0);

        /* A kernel wait completed by a wake: own handle or another one. */
        CHECK_EQ(afx_wait_async(f, 5), 0);
        t_wake_one(round % 2 ? other : f);
        CHECK_READY(f, "woken wait");
        CHECK_EQ(afx_wait_async(f, 5), -EBUSY); /* completed but not acked */
        CHECK_EQ(afx_ack(f), 1);
        CHECK_NOT_READY(f, "acked woken wait");
        CHECK_EQ(afx_ack(f), 0);
        CHECK_EQ(t_load(word), 5);

        /* Woken, then cancelled without ack: drained (the wake it consumed
         * is passed on; nobody else waits, so it is simply spent). */
        CHECK_EQ(afx_wait_async(f, 5), 0);
        t_wake_one(other);
        CHECK_READY(f, "woken wait (to cancel)");
        CHECK_EQ(afx_cancel(f), 0);
        CHECK_NOT_READY(f, "cancelled woken wait");
        CHECK_EQ(afx_ack(f), 0);
    }

    /* A wake stored between read and arm is never lost: the arm hands the
     * kernel the value read before the store. */
    uint32_t seen = t_load(word);
    t_store(word, seen + 1);
    CHECK_EQ(afx_wake(other, 1), 0);
    CHECK_EQ(afx_wait_async(f, seen), 0);
    CHECK_READY(f, "arm after store+wake");
    CHECK_EQ(afx_ack(f), 1);

    /* Free with a wait armed and with a completion not acked. */
    CHECK_EQ(afx_wait_async(f, seen + 1), 0);
    CHECK_EQ(afx_wait_async(other, seen), 0);
    afx_free(f);
    afx_free(other);
    munmap(word, 4096);
    t_pass("50 rounds of arm/EBUSY/ack/cancel/stale/wake");
    return 0;
}
