/*
 * epoll_loop: a single-threaded epoll server loop that multiplexes
 *   - the afx eventfd of a futex word that another process bumps,
 *   - a timerfd ticking every 10 ms,
 *   - a pipe standing in for stdin-like input from that process,
 * and checks that every event of every source was handled.
 *
 * The pattern for the futex word (a counter here):
 *   seen = load(word); afx_wait_async(f, seen);     -- arm with what you saw
 *   ... epoll says the eventfd is readable ...
 *   if (afx_ack(f) == 1) { now = load(word); handle seen+1..now; seen = now;
 *                          afx_wait_async(f, seen); }  -- re-arm
 * Bumps that land while the loop is busy coalesce into one completion: the
 * loop reads the newest value and handles everything up to it.
 */
#include "example.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>

enum { BUMPS = 60, LINES = 30, MIN_TICKS = 3, STUCK_TICKS = 300 /* 3 s */ };
enum { TAG_FUTEX = 1, TAG_TIMER = 2, TAG_PIPE = 3 };

/* The other process: bumps the counter (and wakes), writes lines. */
static void peer(uint32_t *counter, int pipe_w)
{
    afx_t *f = afx_new(counter, 0); /* its own handle on its own mapping */
    if (!f)
        ex_fail("afx_new: %s", strerror(errno));
    for (int i = 1; i <= BUMPS; i++) {
        ex_add(counter, 1);  /* publish first, */
        AFX_OK(afx_wake(f, 1)); /* then wake */
        if (i % 2 == 0) {
            char line[32];
            int n = snprintf(line, sizeof line, "line %d\n", i / 2);
            if (write(pipe_w, line, (size_t)n) != n)
                ex_fail("write: %s", strerror(errno));
        }
        /* Pace the events a little, so the timer interleaves. */
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    close(pipe_w); /* EOF for the server */
    afx_free(f);
}

static void add(int ep, int fd, uint32_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        ex_fail("epoll_ctl: %s", strerror(errno));
}

int main(void)
{
    const char *backend = ex_start();
    printf("epoll_loop: one thread multiplexing a futex word, a timer and a pipe (backend %s)\n",
           backend);

    uint32_t *counter = ex_shared(4096);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        ex_fail("pipe: %s", strerror(errno));

    pid_t pid = ex_fork();
    if (pid == 0) {
        close(pipefd[0]);
        peer(counter, pipefd[1]);
        _exit(0);
    }
    close(pipefd[1]);

    /* The server: one epoll set, three sources. */
    afx_t *f = afx_new(counter, 0);
    if (!f)
        ex_fail("afx_new: %s", strerror(errno));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ep < 0 || tfd < 0)
        ex_fail("epoll_create1/timerfd_create: %s", strerror(errno));
    struct itimerspec every_10ms = {{0, 10000000}, {0, 10000000}};
    timerfd_settime(tfd, 0, &every_10ms, NULL);
    add(ep, AFX_OK(afx_eventfd(f)), TAG_FUTEX);
    add(ep, tfd, TAG_TIMER);
    add(ep, pipefd[0], TAG_PIPE);

    uint32_t seen = ex_load(counter);
    AFX_OK(afx_wait_async(f, seen));
    unsigned completions = 0, ticks = 0, lines = 0, last_progress = 0;
    uint32_t last_seen = seen;
    int pipe_open = 1;
    char buf[256];
    size_t buffered = 0;

    while (seen < BUMPS || pipe_open || ticks < MIN_TICKS) {
        struct epoll_event evs[4];
        int n = epoll_wait(ep, evs, 4, 5000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            ex_fail("epoll_wait: %s", n == 0 ? "nothing for 5 s" : strerror(errno));
        for (int i = 0; i < n; i++) {
            switch (evs[i].data.u32) {
            case TAG_FUTEX:
                /* Readable: the armed wait completed. Acknowledge it, then
                 * look at the word (the word is the truth). */
                if (AFX_OK(afx_ack(f)) == 1) {
                    completions++;
                    uint32_t now = ex_load(counter);
                    if (now < seen || now > BUMPS)
                        ex_fail("counter %u after %u", now, seen);
                    seen = now; /* handles every bump up to `now` */
                    if (seen < BUMPS)
                        AFX_OK(afx_wait_async(f, seen));
                }
                break;
            case TAG_TIMER: {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) == (ssize_t)sizeof expirations)
                    ticks += (unsigned)expirations;
                /* The timer keeps the loop busy: notice a word that is stuck. */
                if (seen != last_seen) {
                    last_seen = seen;
                    last_progress = ticks;
                } else if (seen < BUMPS && ticks - last_progress > STUCK_TICKS) {
                    ex_fail("futex word stuck at %u (of %d) for %u ticks: a wake was missed",
                            ex_load(counter), BUMPS, ticks - last_progress);
                }
                break;
            }
            case TAG_PIPE: {
                ssize_t got = read(pipefd[0], buf + buffered, sizeof buf - buffered - 1);
                if (got < 0 && errno == EINTR)
                    break;
                if (got < 0)
                    ex_fail("read: %s", strerror(errno));
                if (got == 0) { /* EOF */
                    epoll_ctl(ep, EPOLL_CTL_DEL, pipefd[0], NULL);
                    close(pipefd[0]);
                    pipe_open = 0;
                    break;
                }
                buffered += (size_t)got;
                char *nl;
                while ((nl = memchr(buf, '\n', buffered)) != NULL) {
                    *nl = '\0';
                    unsigned k;
                    if (sscanf(buf, "line %u", &k) != 1 || k != lines + 1)
                        ex_fail("unexpected input \"%s\" after line %u", buf, lines);
                    lines++;
                    size_t used = (size_t)(nl + 1 - buf);
                    memmove(buf, nl + 1, buffered - used);
                    buffered -= used;
                }
                break;
            }
            }
        }
    }
    ex_reap(pid);

    printf("  futex: counter reached %u (of %d bumps) in %u completions "
           "(bumps that land together coalesce)\n",
           seen, BUMPS, completions);
    printf("  pipe : %u lines, in order, then EOF\n", lines);
    printf("  timer: %u ticks\n", ticks);
    if (seen != BUMPS || lines != LINES || ticks < MIN_TICKS || completions == 0)
        ex_fail("not every event was handled");
    afx_free(f);
    close(tfd);
    close(ep);
    printf("OK: every event of the three sources was handled\n");
    return 0;
}
