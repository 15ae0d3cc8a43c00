/* Smoke test of an installed asyncfutex (tests/install.rs builds it through
 * pkg-config and CMake): a handle on mmap'd memory, a wake, an async wait
 * armed with a stale value that completes at once, its ack, the version
 * and the backend. Exit 0 on success. */
#define _GNU_SOURCE
#include <asyncfutex.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

_Static_assert(AFX_VERSION_NUMBER ==
                   AFX_VERSION_MAJOR * 10000 + AFX_VERSION_MINOR * 100 + AFX_VERSION_PATCH,
               "AFX_VERSION_NUMBER");

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "smoke.c:%d: check failed: %s\n", __LINE__, #cond); \
            return 1;                                                       \
        }                                                                   \
    } while (0)

int main(void) {
    uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(word != MAP_FAILED);
    afx_t *f = afx_new(word, 0);
    if (!f) {
        fprintf(stderr, "afx_new: %s\n", strerror(errno));
        return 1;
    }
    CHECK(afx_wake(f, 1) == 0); /* nobody waits */

    __atomic_store_n(word, 1, __ATOMIC_SEQ_CST);
    CHECK(afx_wait_async(f, 0) == 0); /* stale: completes at once */
    struct pollfd pfd = {.fd = afx_eventfd(f), .events = POLLIN};
    CHECK(pfd.fd >= 0);
    CHECK(poll(&pfd, 1, 10000) == 1);
    CHECK(afx_ack(f) == 1);
    CHECK(afx_ack(f) == 0); /* disarmed */

    int backend = afx_backend();
    CHECK(backend == AFX_BACKEND_IO_URING || backend == AFX_BACKEND_THREAD);
    printf("c: asyncfutex %s (AFX_VERSION_NUMBER %d), backend %s\n", afx_version(),
           (int)AFX_VERSION_NUMBER, afx_backend_name(backend));
    afx_free(f);
    CHECK(munmap(word, 4096) == 0);
    return 0;
}
