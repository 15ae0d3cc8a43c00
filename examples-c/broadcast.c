/*
 * broadcast: a publisher process bumps an event counter and wakes every
 * waiter (afx_wake(f, UINT32_MAX)); subscriber processes each remember the
 * last value they handled and wait while the counter still holds it.
 * Even-numbered subscribers wait the event-loop way (afx_wait_async + poll
 * on the eventfd + afx_ack), odd ones block in afx_wait.
 *
 * A futex word is a level, not a queue: a subscriber that wakes up reads
 * the newest value, so events published while it was waking up coalesce
 * into one step. What it can never miss is the last one: it only sleeps
 * while the counter equals the value it has already handled.
 *
 * Checks: every subscriber ends with the final value; values only go up.
 */
#include "example.h"

#include <poll.h>

enum { DEFAULT_SUBSCRIBERS = 4, DEFAULT_EVENTS = 2000, MAX_SUBSCRIBERS = 64, BURST = 100 };
#define WAIT_NS (10 * 1000000000LL)

struct shared {
    uint32_t counter;
    uint32_t pad[15];
    uint32_t ready;
    uint32_t pad2[15];
    struct {
        uint32_t observed, last;
    } result[MAX_SUBSCRIBERS];
};

static void subscriber(struct shared *s, unsigned k, uint32_t events)
{
    afx_t *f = afx_new(&s->counter, 0), *ready = afx_new(&s->ready, 0);
    if (!f || !ready)
        ex_fail("afx_new: %s", strerror(errno));
    int event_loop = k % 2 == 0;
    struct pollfd pfd = {.fd = AFX_OK(afx_eventfd(f)), .events = POLLIN, .revents = 0};
    uint32_t last_seen = ex_load(&s->counter), observed = 0;
    ex_add(&s->ready, 1); /* tell the publisher we listen */
    AFX_OK(afx_wake(ready, 1));
    while (last_seen != events) {
        if (event_loop) {
            AFX_OK(afx_wait_async(f, last_seen));
            while (AFX_OK(afx_ack(f)) != 1) {
                int n = poll(&pfd, 1, 10000);
                if (n == 0)
                    ex_fail("subscriber %u: nothing for 10 s after %u", k, last_seen);
                if (n < 0 && errno != EINTR)
                    ex_fail("poll: %s", strerror(errno));
            }
        } else {
            int r = afx_wait(f, last_seen, WAIT_NS);
            if (r == -ETIMEDOUT)
                ex_fail("subscriber %u: nothing for 10 s after %u", k, last_seen);
            if (r != -EINTR)
                AFX_OK(r);
        }
        uint32_t now = ex_load(&s->counter);
        if (now == last_seen)
            continue; /* spurious: nothing new */
        if (now < last_seen)
            ex_fail("counter went back: %u -> %u", last_seen, now);
        observed++; /* now - last_seen events, seen as one step */
        last_seen = now;
    }
    s->result[k].observed = observed;
    ex_store(&s->result[k].last, last_seen);
    afx_free(f);
    afx_free(ready);
}

int main(int argc, char **argv)
{
    const char *backend = ex_start();
    unsigned subscribers = argc > 1 ? (unsigned)atoi(argv[1]) : DEFAULT_SUBSCRIBERS;
    uint32_t events = argc > 2 ? (uint32_t)atoi(argv[2]) : DEFAULT_EVENTS;
    if (subscribers == 0 || subscribers > MAX_SUBSCRIBERS || events == 0)
        ex_fail("usage: broadcast [subscribers 1..%d] [events > 0]", MAX_SUBSCRIBERS);
    printf("broadcast: 1 publisher, %u subscriber processes, %u events in bursts of %d "
           "(backend %s)\n",
           subscribers, events, BURST, backend);
    struct shared *s = ex_shared(sizeof *s);
    pid_t pids[MAX_SUBSCRIBERS];
    for (unsigned k = 0; k < subscribers; k++) {
        pids[k] = ex_fork();
        if (pids[k] == 0) {
            subscriber(s, k, events);
            _exit(0);
        }
    }

    /* The publisher: once everyone listens, publish then wake all. */
    afx_t *f = afx_new(&s->counter, 0), *ready = afx_new(&s->ready, 0);
    if (!f || !ready)
        ex_fail("afx_new: %s", strerror(errno));
    for (uint32_t n; (n = ex_load(&s->ready)) < subscribers;)
        if (afx_wait(ready, n, WAIT_NS) == -ETIMEDOUT)
            ex_fail("subscribers never got ready");
    double start = ex_now();
    uint64_t woken = 0;
    for (uint32_t i = 1; i <= events; i++) {
        ex_add(&s->counter, 1);                             /* publish, */
        woken += (uint64_t)AFX_OK(afx_wake(f, UINT32_MAX)); /* then wake all */
        if (i % BURST == 0 || i + 1 == events) {
            /* A pause between bursts: subscribers catch up and sleep again.
             * The final event comes alone after a pause: it must wake them. */
            struct timespec pause = {0, 1000000};
            nanosleep(&pause, NULL);
        }
    }
    double secs = ex_now() - start;
    for (unsigned k = 0; k < subscribers; k++)
        ex_reap(pids[k]);

    printf("  publisher: %u events in %.1f ms; its wakes woke %llu sleeping subscribers in all\n",
           events, secs * 1e3, (unsigned long long)woken);
    unsigned missed = 0;
    for (unsigned k = 0; k < subscribers; k++) {
        uint32_t last = ex_load(&s->result[k].last), observed = s->result[k].observed;
        missed += last != events;
        printf("  subscriber %u (%s): final value %u, saw %u distinct values (the other %u "
               "coalesced)%s\n",
               k, k % 2 == 0 ? "poll + afx_ack" : "afx_wait     ", last, observed,
               events - observed, last == events ? "" : " MISSED THE FINAL EVENT");
    }
    printf("  (coalescing is expected: a woken subscriber reads the newest value)\n");
    if (missed)
        ex_fail("%u subscriber(s) missed the final event", missed);
    afx_free(f);
    afx_free(ready);
    printf("OK: every subscriber saw the final event\n");
    return 0;
}
