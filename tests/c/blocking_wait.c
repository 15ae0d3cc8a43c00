/*
 * blocking_wait: afx_wait semantics.
 * - nobody wakes: -ETIMEDOUT after at least the timeout;
 * - word != expected: 0 at once (any timeout, also forever and INT64_MAX);
 * - timeout 0: 0 if word != expected, else -ETIMEDOUT, without sleeping;
 * - woken by a forked child (word unchanged: a pure wake), and by a child
 *   that stores + wakes; the child knows the parent sleeps because the
 *   kernel has a waiter queued on the word;
 * - a signal handler (no SA_RESTART) interrupts it: -EINTR.
 */
#include "common.h"

enum { CHILD_ROUNDS = 50 };

struct shm {
    uint32_t word;
    uint32_t round; /* parent -> child: round i may start */
};

static volatile sig_atomic_t got_signal;
static void on_usr1(int sig)
{
    (void)sig;
    got_signal = 1;
}

static void child(struct shm *s)
{
    afx_t *f = afx_new(&s->word, 0);
    CHECK_NOT_NULL(f);
    for (uint32_t i = 1; i <= CHILD_ROUNDS; i++) {
        t_await(&s->round, i);
        /* The parent is (about to be) asleep in afx_wait: wake it once a
         * kernel waiter is there. Odd rounds: a pure wake, word unchanged.
         * Even rounds: store, then wake (it may find the parent not yet
         * asleep: then the parent sees the new value at once). */
        if (i % 2) {
            t_await_waiters(&s->word, 0, 1);
            CHECK_EQ(afx_wake(f, 1), 1);
        } else {
            t_store(&s->word, i);
            int n = afx_wake(f, 1);
            CHECK(n == 0 || n == 1);
        }
    }
    afx_free(f);
    t_child_exit(0);
}

int main(void)
{
    t_start("blocking_wait");
    struct shm *s = t_shared(sizeof *s);
    s->word = 7;
    afx_t *f = afx_new(&s->word, 0);
    CHECK_NOT_NULL(f);

    /* Timeout with nobody waking. */
    const int64_t timeouts[] = {1000000, 20000000, 50000000};
    for (size_t k = 0; k < sizeof timeouts / sizeof timeouts[0]; k++) {
        int64_t t0 = t_now_ns();
        CHECK_EQ(afx_wait(f, 7, timeouts[k]), -ETIMEDOUT);
        int64_t elapsed = t_now_ns() - t0;
        if (elapsed < timeouts[k])
            FAIL("timed out after %" PRId64 " ns, before the %" PRId64 " ns timeout", elapsed,
                 timeouts[k]);
    }

    /* Word != expected: 0 at once, whatever the timeout. */
    const int64_t any[] = {-1, INT64_MIN, 1, 1000000000, 30LL * 1000000000, INT64_MAX};
    for (size_t k = 0; k < sizeof any / sizeof any[0]; k++) {
        int64_t t0 = t_now_ns();
        CHECK_EQ(afx_wait(f, 8, any[k]), 0);
        CHECK(t_now_ns() - t0 < 1000000000LL);
    }

    /* Timeout 0: only checks the word. */
    CHECK_EQ(afx_wait(f, 7, 0), -ETIMEDOUT);
    CHECK_EQ(afx_wait(f, 6, 0), 0);
    CHECK_EQ(afx_wait(f, 0, 0), 0);
    CHECK_EQ(afx_wait(f, UINT32_MAX, 0), 0);

    /* Woken by another process. */
    pid_t pid = t_fork();
    if (pid == 0)
        child(s);
    unsigned pure = 0;
    for (uint32_t i = 1; i <= CHILD_ROUNDS; i++) {
        uint32_t v = t_load(&s->word);
        t_signal(&s->round, i);
        /* Forever or INT64_MAX ns on pure-wake rounds (the watchdog bounds
         * it), a long timeout that must not expire on store rounds. */
        int64_t timeout = (i % 2) ? ((i % 4 == 1) ? -1 : INT64_MAX) : 20LL * 1000000000;
        int r = afx_wait(f, v, timeout);
        CHECK_EQ(r, 0);
        if (i % 2) {
            /* Woken, not a mismatch: the word did not change. */
            CHECK_EQ(t_load(&s->word), v);
            pure++;
        } else {
            /* Woken or mismatch: the word is the new one either way. */
            CHECK_EQ(t_load(&s->word), i);
        }
    }
    t_reap(pid);

    /* A signal handler interrupts the wait: -EINTR. A periodic timer, so a
     * signal surely lands while the thread sleeps. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART */
    CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
    timer_t timer;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGUSR1;
    CHECK_EQ(timer_create(CLOCK_MONOTONIC, &sev, &timer), 0);
    struct itimerspec its = {.it_interval = {0, 20000000}, .it_value = {0, 20000000}};
    CHECK_EQ(timer_settime(timer, 0, &its, NULL), 0);
    uint32_t v = t_load(&s->word);
    int r_forever = afx_wait(f, v, -1);
    int r_timeout = afx_wait(f, v, 20LL * 1000000000);
    struct itimerspec off;
    memset(&off, 0, sizeof off);
    CHECK_EQ(timer_settime(timer, 0, &off, NULL), 0);
    CHECK_EQ(timer_delete(timer), 0);
    CHECK_EQ(r_forever, -EINTR);
    CHECK_EQ(r_timeout, -EINTR);
    CHECK(got_signal);

    afx_free(f);
    munmap(s, sizeof *s);
    t_pass("timeouts, mismatch, timeout 0, %u pure wakes + %u store-wakes from a child, EINTR", pure,
           CHILD_ROUNDS - pure);
    return 0;
}
