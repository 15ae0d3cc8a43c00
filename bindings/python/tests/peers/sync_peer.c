/*
 * The C side of tests/test_cross_language.py: shares one mutex, two
 * semaphores, two event counts and two channels with a Python process, in a
 * memfd the Python side made, initialised and passed as an inherited fd.
 *
 *   sync_peer <fd> <scenario> <n>
 *
 * The layout (offsets) is repeated in test_cross_language.py. Every phase
 * starts and ends with a handshake on the event counts, never a sleep. On
 * any failure the program prints why and exits 1; alarm() bounds it.
 */
#define _GNU_SOURCE
#include <asyncfutex.h>

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM_SIZE 8192
#define OFF_MUTEX 0
#define OFF_COUNTER 16 /* uint64_t, plain (not atomic): the mutex guards it */
#define OFF_SEM_TO_C 64
#define OFF_SEM_TO_PY 80
#define OFF_EV_PY 96 /* published by Python */
#define OFF_EV_C 104 /* published by C */
#define OFF_CHAN_TO_C 1024
#define OFF_CHAN_TO_PY 4096
#define FOREVER_NS (-1)

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sync_peer: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void check(int rc, const char *what) {
    if (rc < 0) die("%s: %s", what, afx_strerror(rc));
}

static void *must(void *h, const char *what) {
    if (!h) die("%s: %s", what, afx_strerror(errno));
    return h;
}

static char *mem;
static afx_event_t *ev_py, *ev_c;

/* Tells Python "this step is done" (a publish on ev_c). */
static void signal_py(void) { check(afx_event_publish(ev_c), "afx_event_publish"); }

/* Waits for Python's next publish on ev_py after `*seen`. */
static void wait_py(uint32_t *seen) {
    int rc = afx_event_wait(ev_py, *seen, FOREVER_NS);
    check(rc, "afx_event_wait");
    *seen = (uint32_t)rc;
}

/* Both processes increment the plain counter n times under the mutex. */
static void mutex_counter(int n) {
    afx_mutex_t *m = must(afx_mutex_open((afx_mutex_state *)(mem + OFF_MUTEX)), "afx_mutex_open");
    volatile uint64_t *counter = (volatile uint64_t *)(mem + OFF_COUNTER);
    signal_py(); /* ready: open */
    for (int i = 0; i < n; i++) {
        int rc = afx_mutex_lock(m, FOREVER_NS);
        check(rc, "afx_mutex_lock");
        if (rc == AFX_OWNER_DIED) die("owner died during the counter phase");
        uint64_t v = *counter;
        if (i % 16 == 0) sched_yield(); /* widen the window a lost update needs */
        *counter = v + 1;
        check(afx_mutex_unlock(m), "afx_mutex_unlock");
    }
    afx_mutex_close(m);
}

/* Takes n permits Python releases to sem_to_c, giving one back on sem_to_py
 * for each; then checks none is left over. */
static void semaphore_relay(int n) {
    afx_sem_t *to_c = must(afx_sem_open((afx_sem_state *)(mem + OFF_SEM_TO_C)), "afx_sem_open");
    afx_sem_t *to_py = must(afx_sem_open((afx_sem_state *)(mem + OFF_SEM_TO_PY)), "afx_sem_open");
    signal_py();
    for (int i = 0; i < n; i++) {
        if (i % 2)
            check(afx_sem_acquire(to_c, FOREVER_NS), "afx_sem_acquire");
        else {
            /* the async protocol, polled on the eventfd with poll(2) */
            for (;;) {
                int rc = afx_sem_acquire_async(to_c);
                if (rc == 0) break;
                if (rc != -EAGAIN) check(rc, "afx_sem_acquire_async");
                int efd = afx_sem_eventfd(to_c);
                check(efd, "afx_sem_eventfd");
                struct pollfd p = {.fd = efd, .events = POLLIN};
                while (poll(&p, 1, -1) < 0)
                    if (errno != EINTR) die("poll: %s", strerror(errno));
            }
        }
        check(afx_sem_release(to_py, 1), "afx_sem_release");
    }
    if (afx_sem_tryacquire(to_c) != -EAGAIN) die("a permit too many on sem_to_c");
    afx_sem_close(to_c);
    afx_sem_close(to_py);
}

/* n rounds: wait for Python's publish, answer with one of ours. */
static void event_pingpong(int n) {
    uint32_t seen = (uint32_t)afx_event_seq(ev_py);
    signal_py();
    for (int i = 0; i < n; i++) {
        wait_py(&seen);
        signal_py();
    }
}

/* Receives n frames from Python, checks each (exactly once, in order) and
 * echoes it back on the other channel. */
static void channel_echo(int n) {
    afx_chan_t *rx = must(afx_chan_open((afx_chan_header *)(mem + OFF_CHAN_TO_C), AFX_CHAN_RECEIVER),
                          "afx_chan_open(receiver)");
    afx_chan_t *tx = must(afx_chan_open((afx_chan_header *)(mem + OFF_CHAN_TO_PY), AFX_CHAN_SENDER),
                          "afx_chan_open(sender)");
    signal_py();
    char buf[256], want[256];
    for (int i = 0; i < n; i++) {
        int len = afx_chan_recv(rx, buf, sizeof buf, FOREVER_NS);
        check(len, "afx_chan_recv");
        int wlen = snprintf(want, sizeof want, "frame %d %.*s", i, i % 40, "........................................");
        if (len != wlen || memcmp(buf, want, (size_t)len) != 0)
            die("frame %d: got %d bytes '%.*s', expected '%s'", i, len, len, buf, want);
        check(afx_chan_send(tx, buf, (uint32_t)len, FOREVER_NS), "afx_chan_send");
    }
    if (afx_chan_try_recv(rx, buf, sizeof buf) != -EAGAIN) die("a frame too many");
    afx_chan_close(rx);
    afx_chan_close(tx);
}

/* Locks the mutex and dies holding it. */
static void die_holding(void) {
    afx_mutex_t *m = must(afx_mutex_open((afx_mutex_state *)(mem + OFF_MUTEX)), "afx_mutex_open");
    int rc = afx_mutex_lock(m, FOREVER_NS);
    check(rc, "afx_mutex_lock");
    signal_py();
    _exit(0); /* holding it */
}

int main(int argc, char **argv) {
    if (argc != 4) die("usage: sync_peer <fd> <scenario> <n>");
    alarm(60);
    int fd = atoi(argv[1]);
    const char *scenario = argv[2];
    int n = atoi(argv[3]);
    mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) die("mmap: %s", strerror(errno));
    ev_py = must(afx_event_open((afx_event_state *)(mem + OFF_EV_PY)), "afx_event_open(ev_py)");
    ev_c = must(afx_event_open((afx_event_state *)(mem + OFF_EV_C)), "afx_event_open(ev_c)");
    if (!strcmp(scenario, "mutex"))
        mutex_counter(n);
    else if (!strcmp(scenario, "semaphore"))
        semaphore_relay(n);
    else if (!strcmp(scenario, "event"))
        event_pingpong(n);
    else if (!strcmp(scenario, "channel"))
        channel_echo(n);
    else if (!strcmp(scenario, "die-holding"))
        die_holding();
    else
        die("unknown scenario %s", scenario);
    signal_py(); /* done */
    afx_event_close(ev_py);
    afx_event_close(ev_c);
    return 0;
}
