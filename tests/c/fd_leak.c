/*
 * fd_leak: 10,000 afx_new/afx_free cycles leave the fd table (and the
 * thread count) as they found it, whatever state the handle was in at
 * free time:
 *   0: never armed;
 *   1: armed, pending in the kernel (possibly not yet queued);
 *   2: armed with a stale value (completed at once), not acked;
 *   3: armed, pending, confirmed queued in the kernel;
 *   4: armed, woken by a wake, completed, not acked;
 *   5: armed, completed, acked;
 *   6: armed and cancelled;
 *   7: private handle, armed, pending.
 * Memory leaks are LeakSanitizer's job (the driver enables it).
 */
#include "common.h"

#include <fcntl.h>

enum { KINDS = 8 };

int main(void)
{
    t_start("fd_leak");
    uint32_t *word = t_shared(4096);
    uint32_t *local = malloc(sizeof *local);
    CHECK_NOT_NULL(local);
    *word = 1;
    *local = 1;

    /* The backend is started (t_start): its own fds and threads exist now.
     * One arm and cancel gives this thread its io_uring ring too (with the
     * io_uring backend, a thread that arms a wait submits it on a ring of
     * its own: one fd per arming thread, kept until the thread exits). */
    afx_t *waker = afx_new(word, 0);
    CHECK_NOT_NULL(waker);
    CHECK_EQ(afx_wait_async(waker, 1), 0);
    CHECK_EQ(afx_cancel(waker), 0);
    int fds_before = t_open_fds();
    int threads_before = t_threads();
    int max_threads = threads_before;
    const int cycles = t_scale(10000);
    int64_t t0 = t_now_ns();

    for (int i = 0; i < cycles; i++) {
        int kind = i % KINDS;
        afx_t *f = afx_new(kind == 7 ? local : word, kind == 7 ? AFX_PRIVATE : 0);
        if (f == NULL)
            FAIL("cycle %d: afx_new: %s", i, strerror(errno));
        switch (kind) {
        case 0:
            break;
        case 1:
        case 7:
            CHECK_EQ(afx_wait_async(f, 1), 0);
            break;
        case 2:
            CHECK_EQ(afx_wait_async(f, 0), 0);
            break;
        case 3:
            CHECK_EQ(afx_wait_async(f, 1), 0);
            t_await_waiters(word, 0, 1);
            break;
        case 4:
            CHECK_EQ(afx_wait_async(f, 1), 0);
            t_wake_one(waker);
            CHECK_READY(f, "woken wait");
            break;
        case 5:
            CHECK_EQ(afx_wait_async(f, 1), 0);
            t_wake_one(waker);
            CHECK_READY(f, "woken wait");
            CHECK_EQ(afx_ack(f), 1);
            break;
        case 6:
            CHECK_EQ(afx_wait_async(f, 1), 0);
            CHECK_EQ(afx_cancel(f), 0);
            break;
        }
        afx_free(f);
        /* After afx_free no kernel wait of the handle remains. */
        if (kind != 7 && t_waiters(word, 0) != 0)
            FAIL("cycle %d (kind %d): a kernel waiter outlived afx_free", i, kind);
        if (kind == 7 && t_waiters(local, 1) != 0)
            FAIL("cycle %d (kind %d): a private kernel waiter outlived afx_free", i, kind);
        if (i % 500 == 0) {
            int t = t_threads();
            if (t > max_threads)
                max_threads = t;
        }
    }

    double secs = (double)(t_now_ns() - t0) / 1e9;
    int fds_after = t_open_fds();
    int threads_after = t_threads();
    if (fds_after != fds_before)
        FAIL("%d fds open before %d cycles, %d after", fds_before, cycles, fds_after);
    /* One wait at a time: the backend never needs more than a couple of
     * threads (io_uring: one ring thread; thread: one helper). */
    if (max_threads > threads_before + 2)
        FAIL("%d threads before, up to %d during the cycles", threads_before, max_threads);
    CHECK(threads_after <= threads_before + 2);

    /* afx_free closes the handle's eventfd before it returns, even with a
     * wait pending in the backend at that moment (no lingering fd). */
    for (int i = 0; i < t_scale(1000); i++) {
        afx_t *f = afx_new(word, 0);
        CHECK_NOT_NULL(f);
        int fd = afx_eventfd(f);
        CHECK(fd >= 0);
        CHECK_EQ(afx_wait_async(f, 1), 0);
        afx_free(f);
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            FAIL("round %d: eventfd %d still open after afx_free returned", i, fd);
    }
    afx_free(waker);
    free(local);
    munmap(word, 4096);
    t_pass("%d cycles in %.2f s, %d fds before and after, threads %d -> max %d", cycles, secs,
           fds_before, threads_before, max_threads);
    return 0;
}
