/*
 * eintr_loop: the EINTR promise of the io_uring backend's caller-submitted
 * waits (src/backend/uring/caller.rs).
 *
 * With io_uring in its default mode, the thread that arms a wait submits it
 * on a ring of its own, linked to a kernel write of the handle's eventfd.
 * The completion runs as task_work on that thread: if it sleeps in
 * epoll_wait on the eventfd, the kernel interrupts it with EINTR to run it.
 * The promise: retrying epoll_wait after EINTR is all an event loop needs;
 * the eventfd is then readable and every wake is observed.
 *
 * Each mode runs in a forked child (the backend starts afresh there, after
 * AFX_URING_SUBMIT is set): 2,000 round trips in which the child arms a
 * wait and sleeps in epoll_wait on its eventfd, and a peer process (forked
 * from it) waits for that wait to be queued in the kernel, then bumps the
 * word and wakes it. The number of EINTRs is printed.
 * - default (caller) mode: any EINTR count passes, as long as every wake is
 *   observed (EINTR retried);
 * - AFX_URING_SUBMIT=thread: the ring thread submits every wait, so the
 *   arming thread is never interrupted: the EINTR count must be 0.
 */
#include "common.h"

#include <sys/epoll.h>

enum { ROUNDS = 2000 };

struct shm {
    uint32_t word;
    uint32_t eintr[2];
};

static void peer(struct shm *s, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        /* The loop's wait for word == i is queued in the kernel. */
        while (t_load(&s->word) != (uint32_t)i || t_waiters(&s->word, 0) != 1)
            sched_yield();
        t_store(&s->word, (uint32_t)i + 1);
        int n = t_raw_wake(&s->word, 1, 0);
        if (n != 1)
            FAIL("round %d: the peer's wake woke %d", i, n);
    }
    t_child_exit(0);
}

/* One mode, in its own process: returns through s->eintr[slot]. */
static void run_mode(struct shm *s, int slot, const char *submit)
{
    if (submit)
        setenv("AFX_URING_SUBMIT", submit, 1);
    else
        unsetenv("AFX_URING_SUBMIT");
    t_backend();
    t_store(&s->word, 0);
    int rounds = t_scale(ROUNDS);
    afx_t *f = afx_new(&s->word, 0);
    CHECK_NOT_NULL(f);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0xAF};
    CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, afx_eventfd(f), &ev), 0);

    /* The peer is this process's child (t_fork checks its parent). */
    t_parent_pid = getpid();
    pid_t pid = t_fork();
    if (pid == 0)
        peer(s, rounds);

    uint32_t eintr = 0, spurious = 0;
    for (int i = 0; i < rounds; i++) {
        for (;;) {
            uint32_t v = t_load(&s->word);
            if (v == (uint32_t)i + 1)
                break;
            if (v != (uint32_t)i)
                FAIL("round %d: word is %u", i, v);
            CHECK_EQ(afx_wait_async(f, v), 0);
            struct epoll_event got;
            int n;
            for (;;) {
                n = epoll_wait(ep, &got, 1, T_READY_MS);
                if (n >= 0 || errno != EINTR)
                    break;
                eintr++;
            }
            if (n < 0)
                FAIL("epoll_wait: %s", strerror(errno));
            if (n == 0)
                FAIL("round %d: wake not observed within %d ms (word %u, %u EINTR so far)", i,
                     T_READY_MS, t_load(&s->word), eintr);
            CHECK_EQ(got.data.u32, 0xAF);
            CHECK_EQ(afx_ack(f), 1);
            if (t_load(&s->word) == v)
                spurious++;
        }
    }
    t_reap(pid);
    CHECK_EQ(afx_ack(f), 0);
    CHECK_EQ(t_waiters(&s->word, 0), 0);
    close(ep);
    afx_free(f);
    printf("%s mode (backend %s): %d round trips, %u EINTR from epoll_wait, %u spurious\n",
           submit ? submit : "default", afx_backend_name(afx_backend()), rounds, eintr, spurious);
    t_store(&s->eintr[slot], eintr);
    t_child_exit(0);
}

int main(void)
{
    t_start_bare("eintr_loop");
    struct shm *s = t_shared(sizeof *s);
    const char *modes[2] = {NULL, "thread"};
    for (int slot = 0; slot < 2; slot++) {
        s->eintr[slot] = UINT32_MAX;
        pid_t pid = t_fork();
        if (pid == 0)
            run_mode(s, slot, modes[slot]);
        t_reap(pid);
    }
    /* The parent starts its backend last (so the children chose theirs). */
    t_backend();
    CHECK(s->eintr[0] != UINT32_MAX);
    /* With AFX_URING_SUBMIT=thread no completion runs on the arming
     * thread: it is never interrupted. */
    CHECK_EQ(s->eintr[1], 0);
    t_pass("every wake observed; EINTR: %u in the default mode, %u with AFX_URING_SUBMIT=thread",
           s->eintr[0], s->eintr[1]);
    munmap(s, sizeof *s);
    return 0;
}
