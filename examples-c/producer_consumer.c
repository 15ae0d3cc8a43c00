/*
 * producer_consumer: a producer process and a consumer process over an SPSC
 * channel of frames in shared memory, afx_chan_*.
 *
 * The channel is a 192-byte afx_chan_header followed by the ring
 * (afx_chan_size bytes in all, 64-aligned): afx_chan_init once, then each
 * process opens its end (AFX_CHAN_SENDER, AFX_CHAN_RECEIVER).
 *
 * - The consumer is event-loop style: afx_chan_recv_async and, on -EAGAIN
 *   (ring empty, a wait armed), poll() on afx_chan_eventfd.
 * - The producer is plain blocking code: afx_chan_try_send, and when the
 *   ring is full (-EAGAIN) afx_chan_send, which blocks until there is room.
 * - A side wakes the other only if that one said it sleeps: while both
 *   keep up, frames flow with no system call at all.
 *
 * Frames have different lengths (8 to 39 bytes). Checks: every item
 * arrives once, in order, intact, and the checksums of both sides agree.
 */
#include "example.h"

#include <poll.h>

enum { CAPACITY = 1024, FRAME = 40, DEFAULT_ITEMS = 100000 };
#define WAIT_NS (10 * 1000000000LL) /* no wait may last longer */

struct results { /* written by the producer before it exits */
    uint64_t checksum;
    uint32_t full;
};

static uint32_t item(uint32_t i) { return (i * 2654435761u) ^ 0x5bd1e995u; }
static uint64_t fold(uint64_t sum, uint32_t v) { return ((sum << 5) | (sum >> 59)) ^ v; }

/* Frame i: its index, item(i), then i % 32 filler bytes. */
static uint32_t make_frame(uint32_t i, unsigned char *f)
{
    uint32_t v = item(i), len = 8 + i % 32;
    memcpy(f, &i, 4);
    memcpy(f + 4, &v, 4);
    for (uint32_t k = 8; k < len; k++)
        f[k] = (unsigned char)(i + k);
    return len;
}

static void produce(afx_chan_header *h, struct results *out, uint32_t items)
{
    afx_chan_t *tx = afx_chan_open(h, AFX_CHAN_SENDER); /* this process's end */
    if (!tx)
        ex_fail("afx_chan_open: %s", strerror(errno));
    uint64_t sum = 0;
    uint32_t full = 0;
    for (uint32_t i = 0; i < items; i++) {
        unsigned char f[FRAME];
        uint32_t len = make_frame(i, f);
        int r = afx_chan_try_send(tx, f, len);
        if (r == -EAGAIN) { /* full: block until the consumer makes room */
            full++;
            r = afx_chan_send(tx, f, len, WAIT_NS);
            if (r == -ETIMEDOUT)
                ex_fail("producer: ring full and no room for 10 s");
        }
        AFX_OK(r);
        sum = fold(sum, item(i));
    }
    out->checksum = sum;
    out->full = full;
    afx_chan_close(tx);
}

int main(int argc, char **argv)
{
    const char *backend = ex_start();
    uint32_t items = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : DEFAULT_ITEMS;
    if (items == 0)
        ex_fail("usage: producer_consumer [items > 0]");
    printf("producer_consumer: %u items through a %d-frame afx_chan (backend %s)\n", items,
           CAPACITY, backend);
    size_t size = (size_t)afx_chan_size(FRAME, CAPACITY);
    if (size == 0)
        ex_fail("afx_chan_size: invalid parameters");
    /* [results][channel at offset 64]: mmap is page-aligned, so 64-aligned. */
    unsigned char *mem = ex_shared(64 + size);
    struct results *res = (struct results *)mem;
    afx_chan_header *h = (afx_chan_header *)(mem + 64);
    AFX_OK(afx_chan_init(h, FRAME, CAPACITY));
    double start = ex_now();

    pid_t pid = ex_fork();
    if (pid == 0) {
        produce(h, res, items);
        _exit(0);
    }

    /* The consumer, event-loop style. */
    afx_chan_t *rx = afx_chan_open(h, AFX_CHAN_RECEIVER);
    if (!rx)
        ex_fail("afx_chan_open: %s", strerror(errno));
    struct pollfd pfd = {.fd = AFX_OK(afx_chan_eventfd(rx)), .events = POLLIN, .revents = 0};
    uint64_t sum = 0;
    uint32_t empty = 0;
    for (uint32_t i = 0; i < items; i++) {
        unsigned char got[FRAME], want[FRAME];
        int n;
        while ((n = afx_chan_recv_async(rx, got, sizeof got)) == -EAGAIN) {
            empty++; /* ... other work of the event loop would go here */
            int ready = poll(&pfd, 1, 10000);
            if (ready == 0)
                ex_fail("consumer: ring empty and no wake for 10 s");
            if (ready < 0 && errno != EINTR)
                ex_fail("poll: %s", strerror(errno));
        }
        AFX_OK(n);
        uint32_t len = make_frame(i, want), seq, v;
        memcpy(&seq, got, 4);
        memcpy(&v, got + 4, 4);
        if ((uint32_t)n != len || memcmp(got, want, len) != 0)
            ex_fail("frame %u: got item #%u (%d bytes), expected #%u (%u bytes): lost, "
                    "reordered or damaged",
                    i, seq, n, i, len);
        sum = fold(sum, v);
    }
    unsigned char spare[FRAME];
    if (afx_chan_try_recv(rx, spare, sizeof spare) != -EAGAIN)
        ex_fail("a frame more than was sent");
    ex_reap(pid);
    double secs = ex_now() - start;

    printf("  consumer: %u items in order, checksum 0x%016llx (producer's 0x%016llx)\n", items,
           (unsigned long long)sum, (unsigned long long)res->checksum);
    printf("  %.3f s, %.0f items/s; the consumer found the ring empty %u times (then poll()), "
           "the producer found it full %u times (then afx_chan_send)\n",
           secs, items / secs, empty, res->full);
    if (sum != res->checksum)
        ex_fail("checksums differ");
    afx_chan_close(rx);
    printf("OK: every item arrived once, in order\n");
    return 0;
}
