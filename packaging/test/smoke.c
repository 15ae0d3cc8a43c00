/* Smoke test of an installed asyncfutex (tests/install.rs builds it through
 * pkg-config and CMake, linked shared, static, and fully static): a handle
 * on mmap'd memory, a wake, an async wait armed with a stale value that
 * completes at once, its ack, a wait armed before a fork that the child
 * wakes (the child starts a backend of its own and uses a handle of its own
 * and the inherited one), the version and the backend. Exit 0 on success. */
#define _GNU_SOURCE
#include <asyncfutex.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* poll(2) for POLLIN, retrying EINTR; 1 when readable. */
static int wait_readable(int fd) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int n;
    do {
        n = poll(&pfd, 1, 10000);
    } while (n < 0 && errno == EINTR);
    return n;
}

/* The fork child: its own handle and backend, then a wake through the
 * inherited handle. Returns the exit status (0: fine). */
static int child(afx_t *inherited, uint32_t *word) {
    afx_t *own = afx_new(word, 0);
    if (!own) return 10;
    __atomic_store_n(word, 3, __ATOMIC_SEQ_CST);
    if (afx_wait_async(own, 2) != 0) return 11; /* stale: completes at once */
    if (wait_readable(afx_eventfd(own)) != 1) return 12;
    if (afx_ack(own) != 1) return 13;
    afx_free(own);
    if (afx_wake(inherited, UINT32_MAX) < 0) return 14; /* wakes the parent's wait */
    afx_free(inherited); /* detached: touches nothing of the parent's */
    return 0;
}

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

    /* A wait armed before a fork, completed by the child's store + wake. */
    __atomic_store_n(word, 2, __ATOMIC_SEQ_CST);
    CHECK(afx_wait_async(f, 2) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(child(f, word));
    CHECK(wait_readable(pfd.fd) == 1);
    CHECK(afx_ack(f) == 1);
    CHECK(__atomic_load_n(word, __ATOMIC_SEQ_CST) == 3);
    int status = 0;
    pid_t reaped;
    do {
        reaped = waitpid(pid, &status, 0);
    } while (reaped < 0 && errno == EINTR);
    CHECK(reaped == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "smoke.c: fork child failed (wait status 0x%x)\n", (unsigned)status);
        return 1;
    }

    int backend = afx_backend();
    CHECK(backend == AFX_BACKEND_IO_URING || backend == AFX_BACKEND_THREAD);
    printf("c: asyncfutex %s (AFX_VERSION_NUMBER %d), backend %s\n", afx_version(),
           (int)AFX_VERSION_NUMBER, afx_backend_name(backend));
    afx_free(f);
    CHECK(munmap(word, 4096) == 0);
    return 0;
}
