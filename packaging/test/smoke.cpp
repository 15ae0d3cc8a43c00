// C++ smoke test of an installed asyncfutex (see smoke.c): the header must
// be usable from C++ as it is (extern "C", no C-only constructs).
#include <asyncfutex.h>

#include <poll.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>

static_assert(AFX_VERSION_NUMBER ==
                  AFX_VERSION_MAJOR * 10000 + AFX_VERSION_MINOR * 100 + AFX_VERSION_PATCH,
              "AFX_VERSION_NUMBER");

namespace {

struct Unmap {
    void operator()(std::uint32_t *p) const { munmap(p, 4096); }
};
struct Free {
    void operator()(afx_t *f) const { afx_free(f); }
};

bool check(bool ok, const char *what) {
    if (!ok) std::cerr << "smoke.cpp: check failed: " << what << '\n';
    return ok;
}

}  // namespace

#define CHECK(cond) \
    if (!check((cond), #cond)) return 1

int main() {
    void *mem = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    std::unique_ptr<std::uint32_t, Unmap> word(static_cast<std::uint32_t *>(mem));
    std::unique_ptr<afx_t, Free> f(afx_new(word.get(), 0));
    if (!f) {
        std::cerr << "afx_new: " << std::strerror(errno) << '\n';
        return 1;
    }
    CHECK(afx_wake(f.get(), 1) == 0);

    __atomic_store_n(word.get(), 1u, __ATOMIC_SEQ_CST);
    CHECK(afx_wait_async(f.get(), 0) == 0);
    pollfd pfd{afx_eventfd(f.get()), POLLIN, 0};
    CHECK(pfd.fd >= 0);
    CHECK(poll(&pfd, 1, 10000) == 1);
    CHECK(afx_ack(f.get()) == 1);
    CHECK(afx_ack(f.get()) == 0);

    const int backend = afx_backend();
    CHECK(backend == AFX_BACKEND_IO_URING || backend == AFX_BACKEND_THREAD);
    std::cout << "c++: asyncfutex " << afx_version() << " (AFX_VERSION_NUMBER "
              << AFX_VERSION_NUMBER << "), backend " << afx_backend_name(backend) << '\n';
    return 0;
}
