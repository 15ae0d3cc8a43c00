/*
 * broadcast: one publisher, several subscriber processes, afx_event_*.
 *
 * The event count is an 8-byte afx_event_state in shared memory holding a
 * sequence number. afx_event_publish bumps it and wakes every waiter — with
 * a system call only if someone waits. A subscriber remembers the last seq
 * it handled and waits for a change from it: even-numbered subscribers the
 * event-loop way (afx_event_wait_async and, on -EAGAIN, poll() on
 * afx_event_eventfd), odd ones blocking in afx_event_wait.
 *
 * An event count is a level, not a queue: a subscriber that wakes up reads
 * the newest seq, so publications made while it was waking up coalesce
 * into one step. What it can never miss is the last one: it only sleeps
 * while the seq equals the value it has already handled.
 *
 * Checks: every subscriber ends with the final seq; seqs only go up.
 */
#include "example.h"

#include <poll.h>

enum { DEFAULT_SUBSCRIBERS = 4, DEFAULT_EVENTS = 2000, MAX_SUBSCRIBERS = 64, BURST = 100 };
#define WAIT_NS (10 * 1000000000LL)

struct shared {
    afx_event_state event;
    afx_sem_state ready; /* subscribers listening */
    struct {
        uint32_t distinct, last;
    } result[MAX_SUBSCRIBERS];
};

/* Waits for a change from `last`: the new seq. */
static uint32_t next_seq(afx_event_t *e, uint32_t last, int event_loop, unsigned k)
{
    if (!event_loop) {
        int r = afx_event_wait(e, last, WAIT_NS);
        if (r == -ETIMEDOUT)
            ex_fail("subscriber %u: nothing for 10 s after %u", k, last);
        return (uint32_t)AFX_OK(r);
    }
    int r;
    while ((r = afx_event_wait_async(e, last)) == -EAGAIN) {
        struct pollfd pfd = {.fd = AFX_OK(afx_event_eventfd(e)), .events = POLLIN, .revents = 0};
        int n = poll(&pfd, 1, 10000); /* (an event loop would watch its other fds too) */
        if (n == 0)
            ex_fail("subscriber %u: nothing for 10 s after %u", k, last);
        if (n < 0 && errno != EINTR)
            ex_fail("poll: %s", strerror(errno));
    }
    return (uint32_t)AFX_OK(r);
}

static void subscriber(struct shared *s, unsigned k, uint32_t events)
{
    afx_event_t *e = afx_event_open(&s->event); /* each process: its own handles */
    afx_sem_t *ready = afx_sem_open(&s->ready);
    if (!e || !ready)
        ex_fail("open: %s", strerror(errno));
    uint32_t last = (uint32_t)AFX_OK(afx_event_seq(e)), distinct = 0;
    AFX_OK(afx_sem_release(ready, 1)); /* tell the publisher we listen */
    while (last != events) {
        uint32_t now = next_seq(e, last, k % 2 == 0, k);
        if (now <= last)
            ex_fail("subscriber %u: seq went from %u to %u", k, last, now);
        distinct++; /* now - last publications, seen as one step */
        last = now;
    }
    s->result[k].distinct = distinct;
    s->result[k].last = last;
    afx_event_close(e);
    afx_sem_close(ready);
}

int main(int argc, char **argv)
{
    const char *backend = ex_start();
    unsigned subscribers = argc > 1 ? (unsigned)atoi(argv[1]) : DEFAULT_SUBSCRIBERS;
    uint32_t events = argc > 2 ? (uint32_t)atoi(argv[2]) : DEFAULT_EVENTS;
    if (subscribers == 0 || subscribers > MAX_SUBSCRIBERS || events == 0 || events > INT32_MAX)
        ex_fail("usage: broadcast [subscribers 1..%d] [events > 0]", MAX_SUBSCRIBERS);
    printf("broadcast: 1 publisher, %u subscriber processes, %u events in bursts of %d "
           "(backend %s)\n",
           subscribers, events, BURST, backend);
    struct shared *s = ex_shared(sizeof *s);
    AFX_OK(afx_event_init(&s->event));
    AFX_OK(afx_sem_init(&s->ready, 0));
    pid_t pids[MAX_SUBSCRIBERS];
    for (unsigned k = 0; k < subscribers; k++) {
        pids[k] = ex_fork();
        if (pids[k] == 0) {
            subscriber(s, k, events);
            _exit(0);
        }
    }

    /* The publisher: once everyone listens, publish. */
    afx_event_t *e = afx_event_open(&s->event);
    afx_sem_t *ready = afx_sem_open(&s->ready);
    if (!e || !ready)
        ex_fail("open: %s", strerror(errno));
    for (unsigned k = 0; k < subscribers; k++)
        AFX_OK(afx_sem_acquire(ready, WAIT_NS));
    double start = ex_now();
    for (uint32_t i = 1; i <= events; i++) {
        uint32_t seq = (uint32_t)AFX_OK(afx_event_publish(e));
        if (seq != i)
            ex_fail("publish returned seq %u, expected %u", seq, i);
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

    printf("  publisher: %u events in %.1f ms\n", events, secs * 1e3);
    unsigned missed = 0;
    for (unsigned k = 0; k < subscribers; k++) {
        uint32_t last = s->result[k].last, distinct = s->result[k].distinct;
        missed += last != events;
        printf("  subscriber %u (%s): final seq %u, %u distinct seqs seen (%u coalesced)%s\n", k,
               k % 2 == 0 ? "async + poll" : "blocking    ", last, distinct, events - distinct,
               last == events ? "" : " MISSED THE FINAL EVENT");
    }
    printf("  (coalescing is expected: a woken subscriber reads the newest seq)\n");
    if (missed)
        ex_fail("%u subscriber(s) missed the final event", missed);
    afx_event_close(e);
    afx_sem_close(ready);
    printf("OK: every subscriber saw the final event\n");
    return 0;
}
