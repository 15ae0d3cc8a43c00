/*
 * producer_consumer: a producer process and a consumer process over a ring
 * buffer in shared memory, with two futex words: `head` (items produced,
 * written by the producer) and `tail` (items consumed, written by the
 * consumer).
 *
 * - The consumer is event-loop style: when the ring is empty it arms
 *   afx_wait_async(head, tail) and poll()s the handle's eventfd.
 * - The producer is plain blocking code: when the ring is full it calls
 *   afx_wait(tail, tail, timeout).
 * - Each side wakes the other only when it can be asleep: the producer when
 *   the ring was empty before its push, the consumer when it was full
 *   before its pop. Both publish their counter, then read the other's
 *   (sequentially consistent), and sleep only on the exact value they
 *   checked, so no wake is missed.
 *
 * Checks: every item arrives once, in order, and the checksums agree.
 */
#include "example.h"

#include <poll.h>

enum { CAP = 1024, DEFAULT_ITEMS = 100000 };
#define WAIT_NS (10 * 1000000000LL) /* no wait may last longer */

struct ring {
    uint32_t head;
    uint32_t pad1[15]; /* head and tail on separate cache lines */
    uint32_t tail;
    uint32_t pad2[15];
    uint32_t producer_checksum, producer_waits, producer_wakes, producer_woke;
    uint32_t slot[CAP];
};

static uint32_t item(uint32_t i) { return (i * 2654435761u) ^ 0x5bd1e995u; }
static uint64_t fold(uint64_t sum, uint32_t v) { return ((sum << 5) | (sum >> 59)) ^ v; }

static void produce(struct ring *r, uint32_t items)
{
    afx_t *head_f = afx_new(&r->head, 0), *tail_f = afx_new(&r->tail, 0);
    if (!head_f || !tail_f)
        ex_fail("afx_new: %s", strerror(errno));
    uint64_t sum = 0;
    uint32_t waits = 0, wakes = 0, woke = 0;
    for (uint32_t head = 0; head < items; head++) {
        for (;;) { /* full? wait for `tail` to move on from what we saw */
            uint32_t tail = ex_load(&r->tail);
            if (head - tail < CAP)
                break;
            waits++;
            int w = afx_wait(tail_f, tail, WAIT_NS);
            if (w == -ETIMEDOUT)
                ex_fail("producer: ring full and no wake for 10 s");
            if (w != -EINTR)
                AFX_OK(w);
        }
        r->slot[head % CAP] = item(head);
        sum = fold(sum, item(head));
        ex_store(&r->head, head + 1);      /* publish the item, */
        if (ex_load(&r->tail) == head) {   /* then wake if the ring was empty */
            wakes++;
            woke += (uint32_t)AFX_OK(afx_wake(head_f, 1));
        }
    }
    r->producer_checksum = (uint32_t)sum;
    r->producer_waits = waits;
    r->producer_wakes = wakes;
    r->producer_woke = woke;
    afx_free(head_f);
    afx_free(tail_f);
}

int main(int argc, char **argv)
{
    const char *backend = ex_start();
    uint32_t items = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : DEFAULT_ITEMS;
    if (items == 0)
        ex_fail("usage: producer_consumer [items > 0]");
    printf("producer_consumer: %u items through a %d-slot ring in shared memory (backend %s)\n",
           items, CAP, backend);
    struct ring *r = ex_shared(sizeof *r);
    double start = ex_now();

    pid_t pid = ex_fork();
    if (pid == 0) {
        produce(r, items);
        _exit(0);
    }

    /* The consumer, event-loop style. */
    afx_t *head_f = afx_new(&r->head, 0), *tail_f = afx_new(&r->tail, 0);
    if (!head_f || !tail_f)
        ex_fail("afx_new: %s", strerror(errno));
    struct pollfd pfd = {.fd = AFX_OK(afx_eventfd(head_f)), .events = POLLIN, .revents = 0};
    uint64_t sum = 0;
    uint32_t waits = 0, wakes = 0, woke = 0;
    for (uint32_t tail = 0; tail < items; tail++) {
        while (ex_load(&r->head) == tail) { /* empty: arm with what we saw */
            waits++;
            AFX_OK(afx_wait_async(head_f, tail));
            while (AFX_OK(afx_ack(head_f)) != 1) { /* ... other work would go here */
                int n = poll(&pfd, 1, 10000);
                if (n == 0)
                    ex_fail("consumer: ring empty and no wake for 10 s");
                if (n < 0 && errno != EINTR)
                    ex_fail("poll: %s", strerror(errno));
            }
        }
        uint32_t v = r->slot[tail % CAP];
        if (v != item(tail))
            ex_fail("item %u is 0x%08x, expected 0x%08x (lost or reordered)", tail, v, item(tail));
        sum = fold(sum, v);
        ex_store(&r->tail, tail + 1);             /* free the slot, */
        if (ex_load(&r->head) - tail == CAP) {    /* then wake if the ring was full */
            wakes++;
            woke += (uint32_t)AFX_OK(afx_wake(tail_f, 1));
        }
    }
    ex_reap(pid);
    double secs = ex_now() - start;

    printf("  consumer: %u items in order, checksum 0x%08x (producer's 0x%08x)\n", items,
           (uint32_t)sum, r->producer_checksum);
    printf("  %.3f s, %.0f items/s\n", secs, items / secs);
    printf("  consumer found the ring empty %u times (poll on the eventfd); the producer sent %u "
           "wakes, %u found it asleep\n",
           waits, r->producer_wakes, r->producer_woke);
    printf("  producer found the ring full %u times (blocking afx_wait); the consumer sent %u "
           "wakes, %u found it asleep\n",
           r->producer_waits, wakes, woke);
    if ((uint32_t)sum != r->producer_checksum)
        ex_fail("checksums differ");
    if (ex_load(&r->head) != items || ex_load(&r->tail) != items)
        ex_fail("head %u, tail %u, expected %u", ex_load(&r->head), ex_load(&r->tail), items);
    afx_free(head_f);
    afx_free(tail_f);
    printf("OK: every item arrived once, in order\n");
    return 0;
}
