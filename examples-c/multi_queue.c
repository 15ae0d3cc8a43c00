/*
 * multi_queue: one consumer serving eight producer processes' rings with a
 * single vector wait (afx_waitv_async) announced on one eventfd in epoll.
 *
 * Each producer (a forked process) owns a small ring in one MAP_SHARED
 * region with two counters, each a futex word:
 *   head  items published (written only by the producer),
 *   tail  items taken     (written only by the consumer).
 * A producer writes the slot, stores head + 1, then afx_wake()s head (store
 * first, then wake). When its ring is full it sleeps in afx_wait() on tail
 * with the value it saw; the consumer wakes tail after each drain. Nobody
 * spins.
 *
 * The consumer's loop (one handle, one eventfd, whatever the number of
 * rings):
 *   for each ring: head = load(ring.head); drain up to head; store + wake tail
 *   entries[p] = { &ring[p].head, head seen, 0 }
 *   afx_waitv_async(f, entries, 8);           -- sleeps only while all 8
 *   ... epoll says afx_eventfd(f) is readable ...  hold what was seen
 *   afx_ack_index(f, &index) == 1             -- completed: index is a hint
 *   ... back to the top: re-check all 8 words
 * Several rings may have advanced by the time the consumer looks, and a
 * completion may be spurious: the words are the truth, the index a hint.
 *
 * Checks: every item of every producer arrives exactly once, in order, with
 * its value; every producer exits 0. Where vector waits are unavailable (the
 * thread backend's per-wait mode: AFX_THREAD_WAITV=0, or a kernel without
 * futex_waitv) it prints "SKIP: ..." and exits 77.
 */
#include "example.h"

#include <sys/epoll.h>

enum { PRODUCERS = 8, CAP = 16, ITEMS = 20000, STUCK_MS = 10000 };

/* One producer's ring: the counters on cache lines of their own. */
struct ring {
    uint32_t head;
    char pad1[60];
    uint32_t tail;
    char pad2[60];
    uint32_t slot[CAP];
    uint32_t full_waits; /* how often the producer found the ring full */
    char pad3[60];
};

static uint32_t item(unsigned p, uint32_t i) { return (uint32_t)p << 24 | i; }

/* A producer process: ITEMS items into its ring. */
static void produce(struct ring *r, unsigned p)
{
    afx_t *head = afx_new(&r->head, 0); /* its own handles */
    afx_t *tail = afx_new(&r->tail, 0);
    if (!head || !tail)
        ex_fail("afx_new: %s", strerror(errno));
    uint32_t full = 0;
    for (uint32_t i = 0; i < ITEMS; i++) {
        for (;;) {
            uint32_t taken = ex_load(&r->tail);
            if (i - taken < CAP)
                break;
            /* Full: sleep while tail still holds what we saw. */
            full++;
            int w = afx_wait(tail, taken, (int64_t)STUCK_MS * 1000000);
            if (w == -EINTR)
                continue;
            if (w == -ETIMEDOUT)
                ex_fail("producer %u: ring full for %d ms (tail stuck at %u): a wake was lost",
                        p, STUCK_MS, taken);
            AFX_OK(w);
        }
        ex_store(&r->slot[i % CAP], item(p, i));
        ex_store(&r->head, i + 1);  /* publish first, */
        AFX_OK(afx_wake(head, 1));  /* then wake */
    }
    ex_store(&r->full_waits, full);
    afx_free(head);
    afx_free(tail);
}

/* Kills the producers and leaves with 77: vector waits are unavailable. */
static void skip(const char *backend, int err)
{
    const char *mode = getenv("AFX_THREAD_WAITV");
    printf("SKIP: vector waits are unavailable with the %s backend here (%s): its per-wait "
           "mode (AFX_THREAD_WAITV=%s, or a kernel/seccomp profile without futex_waitv)\n",
           backend, afx_strerror(err), mode ? mode : "");
    ex_kill_children();
    for (int i = 0; i < EX_MAX_CHILDREN; i++)
        if (ex_children[i] > 0) {
            while (waitpid(ex_children[i], NULL, 0) < 0 && errno == EINTR) {
            }
            ex_children[i] = 0;
        }
    exit(77);
}

int main(void)
{
    const char *backend = ex_start();
    printf("multi_queue: 8 producer processes x %d items, rings of %d slots, one consumer: "
           "afx_waitv_async over the 8 head words + epoll on one eventfd (backend %s)\n",
           ITEMS, CAP, backend);

    struct ring *rings = ex_shared(sizeof(struct ring) * PRODUCERS);
    pid_t pids[PRODUCERS];
    for (unsigned p = 0; p < PRODUCERS; p++) {
        pids[p] = ex_fork();
        if (pids[p] == 0) {
            produce(&rings[p], p);
            _exit(0);
        }
    }

    /* The consumer: one handle for the vector wait (any handle will do: it
     * only owns the armed wait and its eventfd), one per tail to wake. */
    afx_t *f = afx_new(&rings[0].head, 0);
    if (!f)
        ex_fail("afx_new: %s", strerror(errno));
    afx_t *tails[PRODUCERS];
    for (unsigned p = 0; p < PRODUCERS; p++)
        if (!(tails[p] = afx_new(&rings[p].tail, 0)))
            ex_fail("afx_new: %s", strerror(errno));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        ex_fail("epoll_create1: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, AFX_OK(afx_eventfd(f)), &ev) != 0)
        ex_fail("epoll_ctl: %s", strerror(errno));

    double start = ex_now();
    uint32_t next[PRODUCERS] = {0}; /* items received from each producer */
    uint32_t seen[PRODUCERS] = {0}, before[PRODUCERS] = {0};
    unsigned long completions = 0, spurious = 0, several = 0, eintr = 0;
    unsigned long by_index[PRODUCERS] = {0};
    for (;;) {
        /* 1. Re-check every word, drain every ring. */
        unsigned done = 0, advanced = 0;
        for (unsigned p = 0; p < PRODUCERS; p++) {
            uint32_t head = ex_load(&rings[p].head);
            seen[p] = head;
            if (completions > 0 && head != before[p])
                advanced++;
            if (head - next[p] > CAP || head > ITEMS)
                ex_fail("producer %u: head %u with %u taken: corrupt counter", p, head, next[p]);
            if (head != next[p]) {
                for (; next[p] != head; next[p]++) {
                    uint32_t got = ex_load(&rings[p].slot[next[p] % CAP]);
                    if (got != item(p, next[p]))
                        ex_fail("producer %u, item %u: got 0x%08x, expected 0x%08x "
                                "(lost, repeated or reordered)",
                                p, next[p], got, item(p, next[p]));
                }
                ex_store(&rings[p].tail, next[p]); /* store first, */
                AFX_OK(afx_wake(tails[p], 1));    /* then wake */
            }
            done += next[p] == ITEMS;
        }
        if (completions > 0) {
            spurious += advanced == 0;
            several += advanced > 1;
        }
        if (done == PRODUCERS)
            break;

        /* 2. One wait over all eight words, each with the value just read
         * (the vector is copied: a stack array is fine). */
        afx_wait_entry entries[PRODUCERS];
        for (unsigned p = 0; p < PRODUCERS; p++) {
            entries[p] = (afx_wait_entry){.addr = &rings[p].head, .expected = seen[p], .flags = 0};
            before[p] = seen[p];
        }
        AFX_OK(afx_waitv_async(f, entries, PRODUCERS));
        uint32_t index = UINT32_MAX;
        for (;;) {
            struct epoll_event out;
            int n = epoll_wait(ep, &out, 1, STUCK_MS);
            if (n < 0 && errno == EINTR) { /* io_uring completions run as task_work */
                eintr++;
                continue;
            }
            if (n < 0)
                ex_fail("epoll_wait: %s", strerror(errno));
            if (n == 0)
                ex_fail("no ring advanced for %d ms: a wake was lost or a producer died",
                        STUCK_MS);
            int r = afx_ack_index(f, &index);
            if (r == 1)
                break;
            if (r == 0)
                continue; /* not completed yet: keep polling */
            if ((r == -ENOSYS || r == -EPERM) && strcmp(backend, "thread") == 0)
                skip(backend, r);
            ex_fail("afx_ack_index: %s", afx_strerror(r));
        }
        if (index >= PRODUCERS)
            ex_fail("afx_ack_index reported index %u of %d", index, PRODUCERS);
        completions++;
        by_index[index]++;
    }
    double elapsed = ex_now() - start;
    for (unsigned p = 0; p < PRODUCERS; p++)
        ex_reap(pids[p]);

    unsigned long total = (unsigned long)PRODUCERS * ITEMS;
    printf("  consumer: %lu items, each producer's %d exactly once and in order, in %.2f s\n",
           total, ITEMS, elapsed);
    printf("  vector-wait completions: %lu (%.1f items each); %lu found several rings "
           "advanced, %lu none (spurious); epoll_wait EINTR: %lu\n",
           completions, (double)total / (double)(completions ? completions : 1), several,
           spurious, eintr);
    printf("  completions by index:");
    for (unsigned p = 0; p < PRODUCERS; p++)
        printf(" %lu", by_index[p]);
    printf("\n  producers' sleeps on a full ring:");
    for (unsigned p = 0; p < PRODUCERS; p++)
        printf(" %u", ex_load(&rings[p].full_waits));
    printf("\n");
    for (unsigned p = 0; p < PRODUCERS; p++)
        if (next[p] != ITEMS)
            ex_fail("producer %u: %u of %d items", p, next[p], ITEMS);
    for (unsigned p = 0; p < PRODUCERS; p++)
        afx_free(tails[p]);
    afx_free(f);
    close(ep);
    munmap(rings, sizeof(struct ring) * PRODUCERS);
    printf("OK: every item of the 8 producers arrived exactly once, in order\n");
    return 0;
}
