/*
 * process_lock: a lock shared between processes, afx_mutex_*.
 *
 * The mutex is a 16-byte afx_mutex_state in shared memory: afx_mutex_init
 * once, then each process opens its own handle (afx_mutex_open). An
 * uncontended lock/unlock makes no system call; the futex word holds the
 * holder's pid, so a holder that dies is noticed.
 *
 * 1. Exclusion: N processes increment two plain (non-atomic) counters
 *    under the lock. Process 0 locks the event-loop way: afx_mutex_lock_async
 *    and, on -EAGAIN, poll() on afx_mutex_eventfd with a timeout of at most
 *    AFX_MUTEX_CHECK_MS; the others block in afx_mutex_lock. The final
 *    count is exact only if the lock really excludes.
 * 2. Owner death: a child takes the lock, updates one counter of the pair
 *    and is SIGKILLed before the other. The parent, already waiting in its
 *    poll loop, gets AFX_OWNER_DIED: it holds the lock, repairs the pair
 *    (rolls the half update back) and calls afx_mutex_consistent.
 *
 * Checks: the counters end exact and equal, the dead holder's lock is
 * recovered with AFX_OWNER_DIED, and the mutex is clean afterwards.
 */
#include "example.h"

#include <poll.h>

enum { DEFAULT_PROCESSES = 4, DEFAULT_INCREMENTS = 50000, MAX_PROCESSES = 64 };
#define WAIT_NS (10 * 1000000000LL) /* no critical section lasts this long */

struct shared {
    afx_mutex_state lock;
    volatile uint32_t counter, twin; /* protected by `lock`: equal between sections */
    afx_sem_state ready;             /* workers that are ready to start */
    afx_event_state go;              /* published once: start */
    afx_event_state holding;         /* published by the doomed holder */
    uint32_t async_waits;            /* times process 0 waited in poll() */
};

static struct shared *s;

/* The async form: -EAGAIN means a wait is armed; poll the eventfd (with a
 * timeout, so a dead holder is noticed) and ask again. */
static int lock_async(afx_mutex_t *m, uint32_t *waits, pid_t kill_after_arming)
{
    int r;
    while ((r = afx_mutex_lock_async(m)) == -EAGAIN) {
        if (kill_after_arming > 0) {
            kill(kill_after_arming, SIGKILL); /* the holder dies while we wait */
            kill_after_arming = 0;
        }
        (*waits)++;
        struct pollfd pfd = {.fd = AFX_OK(afx_mutex_eventfd(m)), .events = POLLIN, .revents = 0};
        if (poll(&pfd, 1, AFX_MUTEX_CHECK_MS) < 0 && errno != EINTR)
            ex_fail("poll: %s", strerror(errno));
        /* (an event loop would serve its other fds here) */
    }
    return r;
}

/* A lock result, for messages. */
static const char *lock_result(int r)
{
    switch (r) {
    case 0:
        return "0";
    case AFX_OWNER_DIED:
        return "AFX_OWNER_DIED";
    case -ENOTRECOVERABLE:
        return "-ENOTRECOVERABLE (an AFX_OWNER_DIED lock was unlocked without "
               "afx_mutex_consistent)";
    default:
        return afx_strerror(r);
    }
}

static void critical_section(void)
{
    uint32_t v = s->counter; /* a plain read-modify-write */
    for (volatile int k = 0; k < 20; k++) {
    } /* widen the window: a broken lock shows at once */
    s->counter = v + 1;
    s->twin = s->twin + 1;
}

static void worker(unsigned p, unsigned increments)
{
    afx_mutex_t *m = afx_mutex_open(&s->lock); /* each process: its own handles */
    afx_sem_t *ready = afx_sem_open(&s->ready);
    afx_event_t *go = afx_event_open(&s->go);
    if (!m || !ready || !go)
        ex_fail("open: %s", strerror(errno));
    AFX_OK(afx_sem_release(ready, 1));      /* ready, */
    AFX_OK(afx_event_wait(go, 0, WAIT_NS)); /* wait for the start */
    uint32_t waits = 0;
    for (unsigned i = 0; i < increments; i++) {
        int r = p == 0 ? lock_async(m, &waits, 0) : afx_mutex_lock(m, WAIT_NS);
        if (r != 0)
            ex_fail("process %u: lock returned %s", p, lock_result(r));
        critical_section();
        AFX_OK(afx_mutex_unlock(m));
    }
    if (p == 0)
        s->async_waits = waits;
    afx_mutex_close(m);
    afx_sem_close(ready);
    afx_event_close(go);
}

int main(int argc, char **argv)
{
    const char *backend = ex_start();
    unsigned processes = argc > 1 ? (unsigned)atoi(argv[1]) : DEFAULT_PROCESSES;
    unsigned increments = argc > 2 ? (unsigned)atoi(argv[2]) : DEFAULT_INCREMENTS;
    if (processes == 0 || processes > MAX_PROCESSES || increments == 0)
        ex_fail("usage: process_lock [processes 1..%d] [increments > 0]", MAX_PROCESSES);
    printf("process_lock: %u processes x %u increments under one afx_mutex (backend %s)\n",
           processes, increments, backend);
    s = ex_shared(sizeof *s);
    AFX_OK(afx_mutex_init(&s->lock));
    AFX_OK(afx_sem_init(&s->ready, 0));
    AFX_OK(afx_event_init(&s->go));
    AFX_OK(afx_event_init(&s->holding));
    afx_mutex_t *m = afx_mutex_open(&s->lock);
    afx_sem_t *ready = afx_sem_open(&s->ready);
    afx_event_t *go = afx_event_open(&s->go), *holding = afx_event_open(&s->holding);
    if (!m || !ready || !go || !holding)
        ex_fail("open: %s", strerror(errno));

    /* 1. Exclusion. */
    pid_t pids[MAX_PROCESSES];
    for (unsigned p = 0; p < processes; p++) {
        pids[p] = ex_fork();
        if (pids[p] == 0) {
            worker(p, increments);
            _exit(0);
        }
    }
    for (unsigned p = 0; p < processes; p++) /* all ready: start them together */
        AFX_OK(afx_sem_acquire(ready, WAIT_NS));
    double start = ex_now();
    AFX_OK(afx_event_publish(go));
    for (unsigned p = 0; p < processes; p++)
        ex_reap(pids[p]);
    double secs = ex_now() - start;
    uint32_t expected = processes * increments;
    printf("  counter %u (expected %u), %.3f s; process 0 locked through poll() (%u waits), "
           "the others in afx_mutex_lock\n",
           s->counter, expected, secs, s->async_waits);
    if (s->counter != expected || s->twin != expected)
        ex_fail("counter %u, twin %u, expected %u: mutual exclusion failed", s->counter, s->twin,
                expected);

    /* 2. Owner death: a child dies holding the lock, mid-update. */
    pid_t doomed = ex_fork();
    if (doomed == 0) {
        afx_mutex_t *dm = afx_mutex_open(&s->lock);
        afx_event_t *dh = afx_event_open(&s->holding);
        if (!dm || !dh)
            ex_fail("open: %s", strerror(errno));
        int r = afx_mutex_lock(dm, WAIT_NS);
        if (r != 0)
            ex_fail("doomed child: lock returned %s", lock_result(r));
        s->counter = s->counter + 1; /* half an update: twin not yet */
        AFX_OK(afx_event_publish(dh));
        for (;;)
            pause(); /* SIGKILLed here, holding the lock */
    }
    AFX_OK(afx_event_wait(holding, 0, WAIT_NS));
    uint32_t waits = 0;
    double killed = ex_now();
    int r = lock_async(m, &waits, doomed); /* kills it once we are waiting */
    double recovered_ms = (ex_now() - killed) * 1e3;
    if (r != AFX_OWNER_DIED)
        ex_fail("after the holder's death the lock returned %s, expected AFX_OWNER_DIED",
                lock_result(r));
    printf("  owner death: a child SIGKILLed holding the lock mid-update (counter %u, twin %u);\n"
           "  the parent, waiting in poll(), got AFX_OWNER_DIED after %.1f ms: rolled back, "
           "afx_mutex_consistent\n",
           s->counter, s->twin, recovered_ms);
    s->counter = s->twin; /* repair: undo the half update */
    AFX_OK(afx_mutex_consistent(m));
    AFX_OK(afx_mutex_unlock(m));
    int status;
    if (waitpid(doomed, &status, 0) != doomed || !WIFSIGNALED(status))
        ex_fail("the holder did not die by the signal");
    ex_forget(doomed);

    /* The mutex is clean again: an ordinary lock, no AFX_OWNER_DIED. */
    r = afx_mutex_trylock(m);
    if (r != 0)
        ex_fail("after recovery trylock returned %s, expected 0", lock_result(r));
    critical_section();
    AFX_OK(afx_mutex_unlock(m));
    if (s->counter != expected + 1 || s->twin != expected + 1 || s->lock.state != 0)
        ex_fail("after recovery: counter %u, twin %u (expected %u), lock word 0x%x", s->counter,
                s->twin, expected + 1, s->lock.state);
    afx_mutex_close(m);
    afx_sem_close(ready);
    afx_event_close(go);
    afx_event_close(holding);
    printf("OK: no increment lost, and the lock survived its holder's death\n");
    return 0;
}
