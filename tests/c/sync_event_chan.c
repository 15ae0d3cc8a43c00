/*
 * sync_event_chan: afx_event_*, afx_sem_* and afx_chan_* across processes,
 * through their eventfd async forms.
 * - event: lock-step rounds; the subscriber (async, poll loop) is asleep
 *   in the kernel before each publication and must see every one;
 *   publishing with nobody asleep returns the new seq;
 * - semaphore: an async acquirer in another process asleep on an empty
 *   semaphore gets the permit of a release(1); tryacquire/value;
 * - channel: an async sender (poll loop) pushes 20000 frames through a
 *   4-slot ring to a blocking receiver: every frame once, in order; then
 *   lock-step rounds the other way round: an async receiver (poll loop) is
 *   asleep in the kernel on `head` with its sleeper flag (bit 0) set before
 *   each blocking send, which clears the flag and must wake it.
 */
#include "common.h"

struct shm {
    afx_event_state ev;
    afx_sem_state sem;
    uint32_t acks;
};

enum { ROUNDS = 200, FRAMES = 20000, FRAME = 32, SLOTS = 4 };

static void wait_fd(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
    while (poll(&p, 1, -1) < 0) /* the watchdog bounds it */
        CHECK(errno == EINTR);
}

static void make_frame(uint32_t i, unsigned char *f, uint32_t *len)
{
    *len = 4 + i % (FRAME - 3);
    memcpy(f, &i, 4);
    for (uint32_t j = 4; j < *len; j++)
        f[j] = (unsigned char)(i * 7 + j);
}

int main(void)
{
    t_start("sync_event_chan");
    struct shm *s = t_shared(sizeof *s);
    memset(s, 0, sizeof *s);

    /* Bad input. */
    errno = 0;
    CHECK(afx_event_open(&s->ev) == NULL && errno == EPROTO);
    CHECK_EQ(afx_event_publish(NULL), -EINVAL);
    CHECK_EQ(afx_sem_release(NULL, 1), -EINVAL);
    CHECK_EQ(afx_chan_size(FRAME, 3), 0);
    CHECK_EQ(afx_chan_init(NULL, FRAME, SLOTS), -EINVAL);

    /* Event count. */
    CHECK_EQ(afx_event_init(&s->ev), 0);
    afx_event_t *ev = afx_event_open(&s->ev);
    CHECK_NOT_NULL(ev);
    pid_t sub = t_fork();
    if (sub == 0) {
        afx_event_t *e = afx_event_open(&s->ev);
        CHECK_NOT_NULL(e);
        uint32_t last = 0;
        for (uint32_t round = 1; round <= ROUNDS; round++) {
            int r;
            while ((r = afx_event_wait_async(e, last)) == -EAGAIN)
                wait_fd(afx_event_eventfd(e));
            CHECK_EQ(r, round);
            last = (uint32_t)r;
            t_signal_add(&s->acks, 1);
        }
        afx_event_close(e);
        t_child_exit(0);
    }
    for (uint32_t round = 1; round <= ROUNDS; round++) {
        t_await_waiters(&s->ev.word, 0, 1);
        CHECK_EQ(afx_event_publish(ev), round);
        t_await(&s->acks, round);
    }
    t_reap(sub);
    CHECK_EQ(afx_event_seq(ev), ROUNDS);
    CHECK_EQ(afx_event_publish(ev), ROUNDS + 1);
    CHECK_EQ(afx_event_wait(ev, 0, 0), ROUNDS + 1);
    CHECK_EQ(afx_event_wait(ev, ROUNDS + 1, 1000000), -ETIMEDOUT);
    afx_event_close(ev);

    /* Semaphore. */
    CHECK_EQ(afx_sem_init(&s->sem, 0), 0);
    afx_sem_t *sem = afx_sem_open(&s->sem);
    CHECK_NOT_NULL(sem);
    CHECK_EQ(afx_sem_tryacquire(sem), -EAGAIN);
    s->acks = 0;
    pid_t acq = t_fork();
    if (acq == 0) {
        afx_sem_t *cs = afx_sem_open(&s->sem);
        CHECK_NOT_NULL(cs);
        int r;
        while ((r = afx_sem_acquire_async(cs)) == -EAGAIN)
            wait_fd(afx_sem_eventfd(cs));
        CHECK_EQ(r, 0);
        t_signal(&s->acks, 1);
        afx_sem_close(cs);
        t_child_exit(0);
    }
    t_await_waiters(&s->sem.count, 0, 1);
    CHECK_EQ(s->sem.waiters, 1);
    CHECK_EQ(afx_sem_release(sem, 1), 0);
    t_reap(acq);
    CHECK_EQ(s->acks, 1);
    CHECK_EQ(afx_sem_value(sem), 0);
    CHECK_EQ(s->sem.waiters, 0);
    CHECK_EQ(afx_sem_release(sem, 2), 0);
    CHECK_EQ(afx_sem_acquire(sem, -1), 0);
    CHECK_EQ(afx_sem_value(sem), 1);
    afx_sem_close(sem);

    /* Channel. */
    uint64_t size = afx_chan_size(FRAME, SLOTS);
    CHECK(size > 0);
    afx_chan_header *h = t_shared((size_t)size);
    CHECK_EQ(afx_chan_init(h, FRAME, SLOTS), 0);
    afx_chan_t *rx = afx_chan_open(h, AFX_CHAN_RECEIVER);
    CHECK_NOT_NULL(rx);
    pid_t producer = t_fork();
    if (producer == 0) {
        afx_chan_t *tx = afx_chan_open(h, AFX_CHAN_SENDER);
        CHECK_NOT_NULL(tx);
        unsigned char big[FRAME + 1] = {0};
        CHECK_EQ(afx_chan_try_send(tx, big, sizeof big), -EMSGSIZE);
        for (uint32_t i = 0; i < FRAMES; i++) {
            unsigned char f[FRAME];
            uint32_t len;
            make_frame(i, f, &len);
            int r;
            while ((r = afx_chan_send_async(tx, f, len)) == -EAGAIN)
                wait_fd(afx_chan_eventfd(tx));
            CHECK_EQ(r, 0);
        }
        afx_chan_close(tx);
        t_child_exit(0);
    }
    for (uint32_t i = 0; i < FRAMES; i++) {
        unsigned char want[FRAME], got[FRAME];
        uint32_t len;
        make_frame(i, want, &len);
        int n = afx_chan_recv(rx, got, sizeof got, -1);
        CHECK_EQ(n, (long long)len);
        if (memcmp(got, want, len) != 0)
            FAIL("frame %u differs", i);
    }
    unsigned char tmp[FRAME];
    CHECK_EQ(afx_chan_try_recv(rx, tmp, sizeof tmp), -EAGAIN);
    t_reap(producer);
    afx_chan_close(rx);

    /* Lock-step: async receiver asleep before every send. */
    CHECK_EQ(afx_chan_init(h, FRAME, SLOTS), 0);
    CHECK_EQ(h->version, AFX_CHAN_VERSION);
    s->acks = 0;
    pid_t consumer = t_fork();
    if (consumer == 0) {
        afx_chan_t *crx = afx_chan_open(h, AFX_CHAN_RECEIVER);
        CHECK_NOT_NULL(crx);
        for (uint32_t i = 0; i < ROUNDS; i++) {
            unsigned char want[FRAME], got[FRAME];
            uint32_t len;
            make_frame(i, want, &len);
            int n;
            while ((n = afx_chan_recv_async(crx, got, sizeof got)) == -EAGAIN)
                wait_fd(afx_chan_eventfd(crx));
            CHECK_EQ(n, (long long)len);
            if (memcmp(got, want, len) != 0)
                FAIL("lock-step frame %u differs", i);
            t_signal_add(&s->acks, 1);
        }
        afx_chan_close(crx);
        t_child_exit(0);
    }
    afx_chan_t *tx = afx_chan_open(h, AFX_CHAN_SENDER);
    CHECK_NOT_NULL(tx);
    for (uint32_t i = 0; i < ROUNDS; i++) {
        /* Asleep on "i frames sent, receiver sleeping". */
        t_await_waiters(&h->head, 0, 1);
        CHECK_EQ(t_load(&h->head), i << 1 | 1);
        unsigned char f[FRAME];
        uint32_t len;
        make_frame(i, f, &len);
        CHECK_EQ(afx_chan_send(tx, f, len, -1), 0);
        t_await(&s->acks, i + 1);
    }
    t_reap(consumer);
    CHECK_EQ(t_load(&h->head), ROUNDS << 1); /* flag cleared by the last send */
    CHECK_EQ(t_load(&h->tail), ROUNDS << 1);
    afx_chan_close(tx);
    munmap(h, (size_t)size);

    t_pass("%d lock-step publications seen, async semaphore acquire, %d frames in order "
           "through a %d-slot ring, %d lock-step frames to a sleeping async receiver",
           ROUNDS, FRAMES, SLOTS, ROUNDS);
    return 0;
}
