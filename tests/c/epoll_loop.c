/*
 * epoll_loop: cross-process ping-pong through afx_eventfd in an epoll set.
 *
 * Parent and forked child share two words in MAP_SHARED memory: `ping`
 * (parent -> child) and `pong` (child -> parent); each side makes its own
 * handles after the fork. Round i: the parent stores ping = i and wakes;
 * the child sees it, stores pong = i and wakes; the parent waits for
 * pong == i through epoll on its handle's eventfd, acks (must return 1
 * after EPOLLIN) and re-arms while the word is still stale. The child waits
 * through its own epoll loop for the first half of the rounds and with the
 * blocking afx_wait for the rest. The last rounds run with EPOLLET on the
 * parent's side.
 */
#include "common.h"

#include <sys/epoll.h>

enum { ROUNDS_LT = 300, ROUNDS_ET = 60, ROUNDS = ROUNDS_LT + ROUNDS_ET, CHILD_EPOLL_ROUNDS = ROUNDS / 2 };

struct shm {
    uint32_t ping;
    uint32_t pong;
    uint32_t child_backend;
};

struct stats {
    unsigned completions, spurious;
};

/* Waits through epoll until *word == target (the word only moves forward
 * by one step per round). */
static void loop_until(int ep, afx_t *f, uint32_t *word, uint32_t target, struct stats *st)
{
    for (;;) {
        uint32_t v = t_load(word);
        if (v == target)
            return;
        if (v != target - 1)
            FAIL("word is %u, expected %u or %u", v, target - 1, target);
        CHECK_EQ(afx_wait_async(f, v), 0);
        struct epoll_event ev;
        int n;
        do
            n = epoll_wait(ep, &ev, 1, T_READY_MS);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            FAIL("epoll_wait: %s", strerror(errno));
        if (n == 0)
            FAIL("no EPOLLIN within %d ms waiting for %u (word %u)", T_READY_MS, target,
                 t_load(word));
        CHECK(ev.events & EPOLLIN);
        CHECK_EQ(ev.data.u32, 0xAF);
        /* Readiness means the armed wait completed: ack must say so. */
        CHECK_EQ(afx_ack(f), 1);
        st->completions++;
        if (t_load(word) == v)
            st->spurious++;
    }
}

static int epoll_for(afx_t *f, uint32_t events)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = events, .data.u32 = 0xAF};
    int fd = afx_eventfd(f);
    CHECK(fd >= 0);
    CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    return ep;
}

static void child(struct shm *s)
{
    /* A fork child makes its own handles on its own mapping. */
    afx_t *wait_ping = afx_new(&s->ping, 0);
    CHECK_NOT_NULL(wait_ping);
    afx_t *wake_pong = afx_new(&s->pong, 0);
    CHECK_NOT_NULL(wake_pong);
    t_store(&s->child_backend, (uint32_t)afx_backend());
    struct stats st = {0, 0};
    int ep = epoll_for(wait_ping, EPOLLIN);
    for (uint32_t i = 1; i <= ROUNDS; i++) {
        if (i <= CHILD_EPOLL_ROUNDS) {
            loop_until(ep, wait_ping, &s->ping, i, &st);
        } else {
            for (;;) {
                uint32_t v = t_load(&s->ping);
                if (v == i)
                    break;
                CHECK_EQ(v, i - 1);
                int r = afx_wait(wait_ping, v, 10 * 1000000000LL);
                if (r != 0)
                    FAIL("afx_wait for ping %u: %d (%s)", i, r, afx_strerror(r));
            }
        }
        t_store(&s->pong, i);
        int n = afx_wake(wake_pong, 1);
        if (n < 0 || n > 1)
            FAIL("afx_wake(pong, 1) = %d", n);
    }
    close(ep);
    afx_free(wait_ping);
    afx_free(wake_pong);
    t_child_exit(0);
}

int main(void)
{
    const char *backend = t_start("epoll_loop");
    struct shm *s = t_shared(sizeof *s);
    s->ping = 0;
    s->pong = 0;
    s->child_backend = 0;

    afx_t *wait_pong = afx_new(&s->pong, 0);
    CHECK_NOT_NULL(wait_pong);
    afx_t *wake_ping = afx_new(&s->ping, 0);
    CHECK_NOT_NULL(wake_ping);

    pid_t pid = t_fork();
    if (pid == 0)
        child(s);

    struct stats st = {0, 0};
    int ep = epoll_for(wait_pong, EPOLLIN);
    int ep_et = -1;
    for (uint32_t i = 1; i <= ROUNDS; i++) {
        if (i == ROUNDS_LT + 1) /* a fresh set: no events left from the level-triggered rounds */
            ep_et = epoll_for(wait_pong, EPOLLIN | EPOLLET);
        t_store(&s->ping, i);
        int n = afx_wake(wake_ping, 1);
        if (n < 0 || n > 1)
            FAIL("afx_wake(ping, 1) = %d", n);
        loop_until(i <= ROUNDS_LT ? ep : ep_et, wait_pong, &s->pong, i, &st);
    }
    t_reap(pid);
    CHECK_EQ((int)s->child_backend, afx_backend());
    /* Nothing armed any more: the eventfd is quiet. */
    CHECK_EQ(afx_ack(wait_pong), 0);
    CHECK_NOT_READY(wait_pong, "after the last round");
    close(ep);
    close(ep_et);
    afx_free(wait_pong);
    afx_free(wake_ping);
    munmap(s, sizeof *s);
    t_pass("%d rounds (%d edge-triggered), %u parent completions, %u spurious", ROUNDS, ROUNDS_ET,
           st.completions, st.spurious);
    (void)backend;
    return 0;
}
