// The test harness shared by the C++ binding's test programs
// (test_asio.cpp, test_wait_any.cpp): failure reporting that works in
// forked children, a watchdog, PASS/SKIP lines, MAP_SHARED words, raw
// futex handshakes and the kernel's waiter count, processes, fds.
//
// Exit status of a program: 0 pass (a PASS line per case), 77 skip (a
// "SKIP: reason" line: AFX_BACKEND asks for a backend this kernel cannot
// run), else fail. A case that cannot run here prints "SKIP <case>:
// <reason>" and the program goes on (tests/bindings.rs counts it).
#ifndef AFX_TEST_HARNESS_HPP
#define AFX_TEST_HARNESS_HPP

#include <asyncfutex.hpp>

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

namespace afx_test {

// ---- a tiny test harness ---------------------------------------------------

inline bool in_child = false;
inline pid_t parent_pid = 0;

[[noreturn]] inline void fail_at(const char *file, int line, const std::string &msg)
{
    std::fprintf(stderr, "FAIL %s:%d%s: %s\n", file, line, in_child ? " (in child)" : "", msg.c_str());
    std::fflush(stderr);
    if (in_child)
        _exit(1);
    std::exit(1);
}

#define FAIL(msg) ::afx_test::fail_at(__FILE__, __LINE__, (msg))
#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            FAIL("check failed: " #cond);                                                                              \
    } while (0)
#define CHECK_EQ(actual, expected)                                                                                     \
    do {                                                                                                               \
        const auto a_ = (actual);                                                                                      \
        const auto e_ = (expected);                                                                                    \
        if (!(a_ == e_)) {                                                                                             \
            std::ostringstream os_;                                                                                    \
            os_ << #actual << " is " << +a_ << ", expected " << #expected << " = " << +e_;                             \
            FAIL(os_.str());                                                                                           \
        }                                                                                                              \
    } while (0)

/// Runs `f`, which must throw std::system_error with generic_category and
/// errno `err`.
template <class F> void expect_system_error(int err, F &&f, const char *what, int line)
{
    try {
        f();
    } catch (const std::system_error &e) {
        if (e.code().category() != std::generic_category() || e.code().value() != err) {
            std::ostringstream os;
            os << what << ": system_error " << e.code().category().name() << ":" << e.code().value() << " ("
               << e.what() << "), expected generic:" << err << " (" << std::strerror(err) << ")";
            fail_at(__FILE__, line, os.str());
        }
        return;
    }
    std::ostringstream os;
    os << what << ": no exception, expected system_error " << std::strerror(err);
    fail_at(__FILE__, line, os.str());
}
#define EXPECT_SYSTEM_ERROR(err, expr)                                                                                 \
    ::afx_test::expect_system_error((err), [&] { (void)(expr); }, #expr, __LINE__)

inline void on_alarm(int)
{
    static const char msg[] = "FAIL: watchdog expired: the test is stuck\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(3);
}

inline void watchdog(unsigned seconds)
{
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, nullptr);
    alarm(seconds);
}

inline void pass(const char *name, const std::string &detail = "")
{
    std::printf("PASS %s [backend %s]%s%s\n", name, std::string(asyncfutex::backend_name()).c_str(),
                detail.empty() ? "" : ": ", detail.c_str());
}

// ---- shared memory, raw futex handshakes, processes -----------------------

inline std::uint32_t *shared_words(std::size_t bytes = 4096)
{
    void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        FAIL(std::string("mmap: ") + std::strerror(errno));
    return static_cast<std::uint32_t *>(p);
}

inline std::uint32_t load(const std::uint32_t *w) { return __atomic_load_n(w, __ATOMIC_SEQ_CST); }
inline void store(std::uint32_t *w, std::uint32_t v) { __atomic_store_n(w, v, __ATOMIC_SEQ_CST); }

/// Plain FUTEX_WAIT (no timeout) / FUTEX_WAKE on a shared key: the test's
/// own handshakes.
inline void raw_wait(std::uint32_t *w, std::uint32_t expected)
{
    syscall(SYS_futex, w, FUTEX_WAIT, expected, nullptr);
}
inline void raw_wake_all(std::uint32_t *w) { syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX); }

/// How many kernel futex waiters are queued on `w` (shared or private key),
/// without waking any: FUTEX_CMP_REQUEUE of every waiter onto the same word
/// (the kernel re-keys them in place) returns the number requeued.
inline int kernel_waiters(std::uint32_t *w, bool private_key = false)
{
    for (;;) {
        const std::uint32_t cur = load(w);
        const long r = syscall(SYS_futex, w, FUTEX_CMP_REQUEUE | (private_key ? FUTEX_PRIVATE_FLAG : 0), 0,
                               static_cast<unsigned long>(INT_MAX), w, cur);
        if (r >= 0)
            return static_cast<int>(r);
        if (errno != EAGAIN)
            FAIL(std::string("FUTEX_CMP_REQUEUE: ") + std::strerror(errno));
    }
}

/// Waits (watchdog-bounded) until exactly `n` kernel waiters are queued.
inline void await_kernel_waiters(std::uint32_t *w, int n, bool private_key = false)
{
    for (int seen; (seen = kernel_waiters(w, private_key)) != n;) {
        if (seen > n)
            FAIL("more kernel waiters than expected: " + std::to_string(seen));
        std::this_thread::yield();
    }
}

/// Wakes until a kernel waiter is found (an async wait is queued by the
/// backend asynchronously, so the first wakes may find none).
inline void wake_one(const asyncfutex::Futex &f)
{
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (f.wake(1) != 1) {
        if (std::chrono::steady_clock::now() > deadline)
            FAIL("no kernel waiter to wake after 20 s");
        std::this_thread::yield();
    }
}

/// fork(); the child dies with the parent and has its own watchdog.
inline pid_t fork_child()
{
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0)
        FAIL(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        in_child = true;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent_pid)
            _exit(4);
        watchdog(30);
    }
    return pid;
}

inline void reap(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) != pid) {
        if (errno != EINTR)
            FAIL(std::string("waitpid: ") + std::strerror(errno));
    }
    if (WIFSIGNALED(status))
        FAIL("child killed by signal " + std::to_string(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("child exited with status " + std::to_string(WEXITSTATUS(status)));
}

inline bool readable(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    for (;;) {
        const int r = poll(&p, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL(std::string("poll: ") + std::strerror(errno));
        return r > 0;
    }
}

inline bool fd_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

/// Whether `fd` is closed within a few seconds. afx_free documents the
/// eventfd as closed when it returns, but the library can close it a moment
/// later from its backend thread (reported as a library bug); that delay is
/// tolerated here and counted, a leak is not.
inline int late_closes = 0;
inline bool fd_closes(int fd)
{
    if (!fd_open(fd))
        return true;
    ++late_closes;
    for (int i = 0; i < 50000; ++i) {
        if (!fd_open(fd))
            return true;
        usleep(100);
    }
    return false;
}

inline int count_open_fds()
{
    int n = 0;
    for (int fd = 0; fd < 4096; ++fd)
        n += fd_open(fd) ? 1 : 0;
    return n;
}

/// Prints "SKIP <name>: <reason>": a case that cannot run here (counted by
/// tests/bindings.rs), while the program goes on.
inline void skip_case(const char *name, const std::string &reason)
{
    std::printf("SKIP %s: %s [backend %s]\n", name, reason.c_str(), std::string(asyncfutex::backend_name()).c_str());
}

/// What every test program does first: unbuffered stdout, the watchdog,
/// and exit 77 (a SKIP line) if AFX_BACKEND asks for a backend this kernel
/// cannot run.
inline void start_tests(unsigned watchdog_seconds)
{
    setvbuf(stdout, nullptr, _IONBF, 0);
    parent_pid = getpid();
    watchdog(watchdog_seconds);

    std::error_code ec;
    (void)asyncfutex::backend(ec);
    if (ec) {
        const char *env = std::getenv("AFX_BACKEND");
        if (env && *env && std::strcmp(env, "auto") != 0) {
            std::printf("SKIP: AFX_BACKEND=%s cannot run here: %s\n", env, ec.message().c_str());
            std::exit(77);
        }
        FAIL("afx_backend(): " + ec.message());
    }
}

} // namespace afx_test

#endif // AFX_TEST_HARNESS_HPP
