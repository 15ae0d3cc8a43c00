/*
 * process_lock: a lock shared between processes on one futex word, with
 * the classic protocol (Ulrich Drepper, "Futexes Are Tricky", mutex 3).
 * The word is 0 (unlocked), 1 (locked) or 2 (locked, waiters possible):
 *
 *   lock:   if CAS(0 -> 1) succeeds, done (no system call);
 *           else c = swap(2) (unless it already was 2) and, while c != 0,
 *           wait while the word is 2, then c = swap(2) again;
 *   unlock: if swap(0) was 2, wake(1) (only then can someone be asleep).
 *
 * Process 0 waits the event-loop way (afx_wait_async + poll on the
 * eventfd + afx_ack); the others block in afx_wait. The lock protects a
 * counter updated with a plain, non-atomic read and write: the final count
 * is exact only if the lock really excludes.
 */
#include "example.h"

#include <poll.h>

enum { DEFAULT_PROCESSES = 4, DEFAULT_INCREMENTS = 100000 };
#define WAIT_NS (10 * 1000000000LL) /* no critical section lasts this long */

struct shared {
    uint32_t lock;
    uint32_t pad[15];
    volatile uint32_t counter; /* protected by `lock`, never atomic */
    uint32_t pad2[15];
    uint32_t locks, contended, unlock_wakes, woke; /* statistics (atomic adds) */
    uint32_t ready, go; /* start line: everybody starts at once */
};

static struct shared *s;

static int cas(uint32_t *w, uint32_t old, uint32_t new_)
{
    return __atomic_compare_exchange_n(w, &old, new_, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}
static uint32_t swap(uint32_t *w, uint32_t v, int order) { return __atomic_exchange_n(w, v, order); }

/* Sleeps while the lock word is 2: blocking, or through the eventfd. */
static void wait_while_2(afx_t *f, int event_loop)
{
    if (!event_loop) {
        int r = afx_wait(f, 2, WAIT_NS);
        if (r == -ETIMEDOUT)
            ex_fail("no unlock wake for 10 s");
        if (r != -EINTR)
            AFX_OK(r);
        return;
    }
    AFX_OK(afx_wait_async(f, 2));
    struct pollfd pfd = {.fd = AFX_OK(afx_eventfd(f)), .events = POLLIN, .revents = 0};
    while (AFX_OK(afx_ack(f)) != 1) {
        int n = poll(&pfd, 1, 10000);
        if (n == 0)
            ex_fail("no unlock wake for 10 s");
        if (n < 0 && errno != EINTR)
            ex_fail("poll: %s", strerror(errno));
    }
}

static void lock(afx_t *f, int event_loop)
{
    ex_add(&s->locks, 1);
    if (cas(&s->lock, 0, 1))
        return; /* fast path: no system call */
    ex_add(&s->contended, 1);
    uint32_t c = __atomic_load_n(&s->lock, __ATOMIC_RELAXED);
    if (c != 2)
        c = swap(&s->lock, 2, __ATOMIC_ACQUIRE);
    while (c != 0) {
        wait_while_2(f, event_loop);
        c = swap(&s->lock, 2, __ATOMIC_ACQUIRE);
    }
}

static void unlock(afx_t *f)
{
    if (swap(&s->lock, 0, __ATOMIC_RELEASE) == 2) {
        ex_add(&s->unlock_wakes, 1);
        if (AFX_OK(afx_wake(f, 1)) == 1)
            ex_add(&s->woke, 1);
    }
}

static void worker(int event_loop, unsigned increments)
{
    afx_t *f = afx_new(&s->lock, 0); /* each process: its own handle */
    if (!f)
        ex_fail("afx_new: %s", strerror(errno));
    /* Start line: report ready, wait (blocking) until the parent says go. */
    afx_t *go = afx_new(&s->go, 0), *ready = afx_new(&s->ready, 0);
    if (!go || !ready)
        ex_fail("afx_new: %s", strerror(errno));
    ex_add(&s->ready, 1);
    AFX_OK(afx_wake(ready, 1));
    while (ex_load(&s->go) == 0)
        if (afx_wait(go, 0, WAIT_NS) == -ETIMEDOUT)
            ex_fail("never told to go");
    afx_free(go);
    afx_free(ready);
    for (unsigned i = 0; i < increments; i++) {
        lock(f, event_loop);
        uint32_t v = s->counter; /* a plain read-modify-write */
        for (volatile int k = 0; k < 20; k++) {
        } /* widen the window: a broken lock shows at once */
        s->counter = v + 1;
        unlock(f);
    }
    afx_free(f);
}

int main(int argc, char **argv)
{
    const char *backend = ex_start();
    unsigned processes = argc > 1 ? (unsigned)atoi(argv[1]) : DEFAULT_PROCESSES;
    unsigned increments = argc > 2 ? (unsigned)atoi(argv[2]) : DEFAULT_INCREMENTS;
    if (processes == 0 || processes > 64 || increments == 0)
        ex_fail("usage: process_lock [processes 1..64] [increments > 0]");
    printf("process_lock: %u processes x %u increments under one futex lock (backend %s)\n",
           processes, increments, backend);
    s = ex_shared(sizeof *s);
    double start = ex_now();
    pid_t pids[64];
    for (unsigned p = 0; p < processes; p++) {
        pids[p] = ex_fork();
        if (pids[p] == 0) {
            worker(p == 0, increments);
            _exit(0);
        }
    }
    /* Wait until all are ready, then release them together. */
    afx_t *ready = afx_new(&s->ready, 0), *go = afx_new(&s->go, 0);
    if (!ready || !go)
        ex_fail("afx_new: %s", strerror(errno));
    for (uint32_t n; (n = ex_load(&s->ready)) < processes;)
        if (afx_wait(ready, n, WAIT_NS) == -ETIMEDOUT)
            ex_fail("workers never got ready");
    ex_store(&s->go, 1);
    AFX_OK(afx_wake(go, UINT32_MAX));
    afx_free(ready);
    afx_free(go);
    for (unsigned p = 0; p < processes; p++)
        ex_reap(pids[p]);
    double secs = ex_now() - start;

    uint32_t expected = processes * increments;
    printf("  counter = %u (expected %u), %.3f s; process 0 waited through poll(), the others "
           "in afx_wait\n",
           s->counter, expected, secs);
    printf("  %u lock operations: %u found the lock taken; %u unlocks called wake(1) "
           "(%.1f%%), %u of those woke a sleeper\n",
           s->locks, s->contended, s->unlock_wakes, 100.0 * s->unlock_wakes / s->locks, s->woke);
    printf("  (the other unlocks made no system call)\n");
    if (s->counter != expected)
        ex_fail("counter is %u, expected %u: mutual exclusion failed", s->counter, expected);
    if (s->locks != expected || s->lock != 0)
        ex_fail("%u lock operations (expected %u), lock word %u", s->locks, expected, s->lock);
    printf("OK: no increment lost\n");
    return 0;
}
