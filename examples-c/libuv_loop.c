/*
 * libuv_loop: the epoll_loop example on a libuv loop. The afx eventfd is
 * watched with a uv_poll_t (UV_READABLE), next to a uv_timer_t and a
 * uv_pipe_t reading lines that another process writes; that process also
 * bumps the futex word. Checks that every event of every source was handled.
 *
 * Build: cc ... libuv_loop.c $(pkg-config --cflags --libs libuv) -lasyncfutex
 */
#include "example.h"

#include <fcntl.h>
#include <uv.h>

enum { BUMPS = 60, LINES = 30, MIN_TICKS = 3, STUCK_TICKS = 300 /* 3 s */ };

static uint32_t *counter;
static afx_t *f;
static uint32_t seen;
static unsigned completions, ticks, lines, last_progress;
static uint32_t last_seen;
static int pipe_open = 1;
static char buf[256];
static size_t buffered;

static uv_poll_t futex_watcher;
static uv_timer_t timer;
static uv_pipe_t input;

static void peer(int pipe_w)
{
    afx_t *g = afx_new(counter, 0); /* its own handle on its own mapping */
    if (!g)
        ex_fail("afx_new: %s", strerror(errno));
    for (int i = 1; i <= BUMPS; i++) {
        ex_add(counter, 1);     /* publish first, */
        AFX_OK(afx_wake(g, 1)); /* then wake */
        if (i % 2 == 0) {
            char line[32];
            int n = snprintf(line, sizeof line, "line %d\n", i / 2);
            if (write(pipe_w, line, (size_t)n) != n)
                ex_fail("write: %s", strerror(errno));
        }
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    close(pipe_w);
    afx_free(g);
}

static void stop_when_done(void)
{
    if (seen == BUMPS && !pipe_open && ticks >= MIN_TICKS) {
        uv_poll_stop(&futex_watcher);
        uv_timer_stop(&timer);
    }
}

/* The afx eventfd is readable: the armed wait completed. */
static void on_futex(uv_poll_t *handle, int status, int events)
{
    (void)handle;
    (void)events;
    if (status < 0)
        ex_fail("uv_poll: %s", uv_strerror(status));
    if (AFX_OK(afx_ack(f)) != 1)
        return; /* not ours to handle yet */
    completions++;
    uint32_t now = ex_load(counter); /* the word is the truth */
    if (now < seen || now > BUMPS)
        ex_fail("counter %u after %u", now, seen);
    seen = now;
    if (seen < BUMPS)
        AFX_OK(afx_wait_async(f, seen)); /* re-arm with what we saw */
    stop_when_done();
}

static void on_tick(uv_timer_t *handle)
{
    (void)handle;
    ticks++;
    /* The timer keeps the loop busy: notice a word that is stuck. */
    if (seen != last_seen) {
        last_seen = seen;
        last_progress = ticks;
    } else if (seen < BUMPS && ticks - last_progress > STUCK_TICKS) {
        ex_fail("futex word stuck at %u (of %d) for %u ticks: a wake was missed",
                ex_load(counter), BUMPS, ticks - last_progress);
    }
    stop_when_done();
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out)
{
    (void)handle;
    (void)suggested;
    *out = uv_buf_init(buf + buffered, (unsigned)(sizeof buf - buffered - 1));
}

static void on_read(uv_stream_t *stream, ssize_t got, const uv_buf_t *b)
{
    (void)b;
    if (got == UV_EOF) {
        uv_close((uv_handle_t *)stream, NULL);
        pipe_open = 0;
        stop_when_done();
        return;
    }
    if (got < 0)
        ex_fail("read: %s", uv_strerror((int)got));
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
}

int main(void)
{
    const char *backend = ex_start();
    printf("libuv_loop: libuv %s watching a futex word, a timer and a pipe (backend %s)\n",
           uv_version_string(), backend);

    counter = ex_shared(4096);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        ex_fail("pipe: %s", strerror(errno));
    pid_t pid = ex_fork(); /* before the loop exists: the child never sees it */
    if (pid == 0) {
        close(pipefd[0]);
        peer(pipefd[1]);
        _exit(0);
    }
    close(pipefd[1]);

    f = afx_new(counter, 0);
    if (!f)
        ex_fail("afx_new: %s", strerror(errno));
    uv_loop_t *loop = uv_default_loop();

    /* Watch the handle's eventfd; never read or close it ourselves. */
    int r = uv_poll_init(loop, &futex_watcher, AFX_OK(afx_eventfd(f)));
    if (r == 0)
        r = uv_poll_start(&futex_watcher, UV_READABLE, on_futex);
    if (r == 0)
        r = uv_timer_init(loop, &timer);
    if (r == 0)
        r = uv_timer_start(&timer, on_tick, 10, 10);
    if (r == 0)
        r = uv_pipe_init(loop, &input, 0);
    if (r == 0)
        r = uv_pipe_open(&input, pipefd[0]);
    if (r == 0)
        r = uv_read_start((uv_stream_t *)&input, on_alloc, on_read);
    if (r != 0)
        ex_fail("libuv setup: %s", uv_strerror(r));

    seen = ex_load(counter);
    AFX_OK(afx_wait_async(f, seen));
    uv_run(loop, UV_RUN_DEFAULT); /* returns once every handle stopped */
    ex_reap(pid);

    printf("  futex: counter reached %u (of %d bumps) in %u completions "
           "(bumps that land together coalesce)\n",
           seen, BUMPS, completions);
    printf("  pipe : %u lines, in order, then EOF\n", lines);
    printf("  timer: %u ticks\n", ticks);
    if (seen != BUMPS || lines != LINES || ticks < MIN_TICKS || completions == 0)
        ex_fail("not every event was handled");

    /* Close the libuv handles before freeing the afx handle (and its fd). */
    uv_close((uv_handle_t *)&futex_watcher, NULL);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    if (uv_loop_close(loop) != 0)
        ex_fail("uv_loop_close: handles left open");
    afx_free(f);
    printf("OK: every event of the three sources was handled\n");
    return 0;
}
