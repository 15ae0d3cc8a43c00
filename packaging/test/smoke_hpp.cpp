// Smoke test of the installed C++ header <asyncfutex.hpp> (see smoke.c):
// an RAII handle on mmap'd memory, a wake, an async wait armed with a stale
// value that completes at once, and its ack. Exit 0 on success.
#include <asyncfutex.hpp>

#include <poll.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <iostream>
#include <system_error>

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            std::cerr << "smoke_hpp.cpp:" << __LINE__ << ": check failed: " \
                      << #cond << '\n';                                    \
            return 1;                                                      \
        }                                                                  \
    } while (0)

int main() {
    void *mem = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    auto *word = static_cast<std::uint32_t *>(mem);
    try {
        asyncfutex::Futex futex(word);
        CHECK(futex.wake(1) == 0);  // nobody waits
        futex.store(1);
        futex.wait_async(0);  // stale: completes at once
        pollfd pfd{futex.eventfd(), POLLIN, 0};
        int n;
        do {
            n = poll(&pfd, 1, 10000);
        } while (n < 0 && errno == EINTR);
        CHECK(n == 1);
        CHECK(futex.ack());
        CHECK(!futex.ack());  // disarmed
    } catch (const std::system_error &e) {
        std::cerr << "smoke_hpp.cpp: " << e.what() << '\n';
        return 1;
    }
    std::cout << "hpp: asyncfutex " << afx_version() << " (AFX_VERSION_NUMBER " << AFX_VERSION_NUMBER
              << "), backend " << afx_backend_name(afx_backend()) << '\n';
    CHECK(munmap(mem, 4096) == 0);
    return 0;
}
