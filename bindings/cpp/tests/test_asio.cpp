// Tests of the C++ wrapper (bindings/cpp/include/asyncfutex.hpp) with Asio.
//
// Built by tests/bindings.rs with g++ -std=c++17 -Wall -Wextra -Werror
// -fsanitize=address,undefined against include/asyncfutex.h and the built
// libasyncfutex.so, and run once per backend (AFX_BACKEND passes through).
// Exit status: 0 pass (a PASS line per case), 77 skip (a "SKIP: reason"
// line: AFX_BACKEND asks for a backend this kernel cannot run), else fail.
// The harness (CHECK, fork_child, kernel_waiters, ...) is in harness.hpp.
//
// Ordering uses value handshakes and the kernel's waiter count, never
// sleeps; time is only a watchdog (alarm) and the subject of the timeout
// test.
#include "harness.hpp"

#include <asyncfutex.hpp>

#include <asio.hpp>

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace afx = asyncfutex;
using afx::Futex;
using namespace std::chrono_literals;

namespace {

using namespace afx_test;

// ---- Asio: await a value of the word --------------------------------------

/// Awaits, on `io`, the word of `futex` reaching `target`, then calls `done`.
/// The stream_descriptor wraps the handle's eventfd and is released (not
/// closed) when this object goes.
class ValueAwaiter {
  public:
    ValueAwaiter(asio::io_context &io, Futex &futex) : futex_(futex), fd_(io, futex.eventfd()) {}
    ~ValueAwaiter() { (void)fd_.release(); }
    ValueAwaiter(const ValueAwaiter &) = delete;
    ValueAwaiter &operator=(const ValueAwaiter &) = delete;

    void await(std::uint32_t target, std::function<void()> done)
    {
        target_ = target;
        done_ = std::move(done);
        check();
    }

    std::uint64_t completions = 0; // acknowledged completions
    std::uint64_t spurious = 0;    // readiness without a completion

  private:
    void check()
    {
        const std::uint32_t seen = futex_.load();
        if (seen == target_) {
            // Not from inside this call chain: post, so rounds do not recurse.
            asio::post(fd_.get_executor(), std::move(done_));
            return;
        }
        start_wait();
        futex_.wait_async(seen);
    }

    void start_wait()
    {
        fd_.async_wait(asio::posix::stream_descriptor::wait_read, [this](const asio::error_code &ec) {
            if (ec)
                FAIL("async_wait: " + ec.message());
            if (!futex_.ack()) {
                ++spurious;
                start_wait();
                return;
            }
            ++completions;
            check();
        });
    }

    Futex &futex_;
    asio::posix::stream_descriptor fd_;
    std::uint32_t target_ = 0;
    std::function<void()> done_;
};

// ---- the tests ---------------------------------------------------------------

/// Two processes, each with its own Asio loop on its own handle of one
/// MAP_SHARED word, bounce it back and forth.
void test_asio_ping_pong()
{
    constexpr std::uint32_t rounds = 300;
    std::uint32_t *mem = shared_words();
    std::uint32_t *word = &mem[0];
    store(word, 0);
    const pid_t pid = fork_child();
    if (pid == 0) {
        // The child answers odd values: awaits 1, 3, 5, ... and stores 2, 4, ...
        Futex futex(word);
        asio::io_context io;
        ValueAwaiter awaiter(io, futex);
        std::uint32_t round = 0;
        std::function<void()> step = [&] {
            futex.store(2 * round + 2);
            futex.wake(afx::all);
            if (++round < rounds)
                awaiter.await(2 * round + 1, step);
        };
        awaiter.await(1, step);
        io.run();
        if (round != rounds)
            FAIL("child loop stopped early at round " + std::to_string(round));
        _exit(0);
    }
    // The parent pings: stores 1, awaits 2, stores 3, awaits 4, ...
    Futex futex(word);
    asio::io_context io;
    ValueAwaiter awaiter(io, futex);
    std::uint32_t round = 0;
    std::function<void()> ping = [&] {
        if (round == rounds)
            return;
        futex.store(2 * round + 1);
        futex.wake(afx::all);
        ++round;
        awaiter.await(2 * round, ping);
    };
    const auto start = std::chrono::steady_clock::now();
    ping();
    io.run();
    const auto elapsed = std::chrono::steady_clock::now() - start;
    reap(pid);
    CHECK_EQ(round, rounds);
    CHECK_EQ(load(word), 2 * rounds);
    CHECK(awaiter.completions >= 1);
    const double us = std::chrono::duration<double, std::micro>(elapsed).count() / rounds;
    pass("asio_ping_pong", std::to_string(rounds) + " cross-process rounds, " + std::to_string(us) +
                               " us each, " + std::to_string(awaiter.completions) + " completions, " +
                               std::to_string(awaiter.spurious) + " spurious readiness");
    munmap(mem, 4096);
}

/// A forked process wakes an Asio waiter that is asleep in the kernel (the
/// parent waits until its wait is queued before letting the child store).
void test_asio_woken_by_child()
{
    std::uint32_t *mem = shared_words();
    std::uint32_t *word = &mem[0];
    std::uint32_t *go = &mem[16]; // another futex line
    store(word, 7);
    store(go, 0);
    Futex futex(word);
    asio::io_context io;
    asio::posix::stream_descriptor sd(io, futex.eventfd());
    bool fired = false;
    sd.async_wait(asio::posix::stream_descriptor::wait_read, [&](const asio::error_code &ec) {
        CHECK(!ec);
        CHECK(futex.ack());
        fired = true;
    });
    futex.wait_async(7);
    const pid_t pid = fork_child();
    if (pid == 0) {
        Futex g(word);
        // Wait for the parent's go, then store and wake exactly one waiter.
        while (load(go) == 0)
            raw_wait(go, 0);
        g.store(8);
        const std::uint32_t woken = g.wake(1);
        _exit(woken == 1 ? 0 : 2);
    }
    await_kernel_waiters(word, 1); // our async wait is a real kernel waiter
    CHECK(!readable(futex.eventfd(), 0));
    store(go, 1);
    raw_wake_all(go);
    io.run();
    reap(pid);
    CHECK(fired);
    CHECK_EQ(futex.load(), 8u);
    (void)sd.release();
    CHECK(fd_open(futex.eventfd())); // release() left the handle's fd open
    pass("asio_woken_by_child");
    munmap(mem, 4096);
}

/// Cancelling the Asio operation and releasing the descriptor leaves the
/// handle and its fd intact; an armed futex wait is disarmed by cancel()
/// and can be armed again.
void test_asio_cancel_and_release()
{
    std::uint32_t word = 3;
    Futex futex(&word, true);
    asio::io_context io;
    asio::error_code got;
    {
        asio::posix::stream_descriptor sd(io, futex.eventfd());
        sd.async_wait(asio::posix::stream_descriptor::wait_read, [&](const asio::error_code &ec) { got = ec; });
        futex.wait_async(3);
        sd.cancel(); // before the loop ran: the handler sees operation_aborted
        io.run();
        CHECK(got == asio::error::operation_aborted);
        const int fd = sd.release();
        CHECK_EQ(fd, futex.eventfd());
    }
    CHECK(fd_open(futex.eventfd()));
    futex.cancel();
    CHECK(!futex.ack()); // disarmed
    CHECK(!readable(futex.eventfd(), 0));
    futex.wait_async(3); // re-armable after cancel
    wake_one(futex);
    CHECK(readable(futex.eventfd(), 10000));
    CHECK(futex.ack());
    // And Asio again on the same fd.
    io.restart();
    asio::posix::stream_descriptor sd(io, futex.eventfd());
    bool fired = false;
    sd.async_wait(asio::posix::stream_descriptor::wait_read, [&](const asio::error_code &ec) {
        CHECK(!ec);
        fired = futex.ack();
    });
    futex.wait_async(2); // stale: completes at once
    io.run();
    CHECK(fired);
    (void)sd.release();
    pass("asio_cancel_and_release");
}

/// Move construction / assignment, reset, release, empty handles.
void test_raii_and_move()
{
    static_assert(!std::is_copy_constructible_v<Futex>, "move-only");
    static_assert(!std::is_copy_assignable_v<Futex>, "move-only");
    static_assert(std::is_nothrow_move_constructible_v<Futex>, "noexcept move");
    static_assert(std::is_nothrow_move_assignable_v<Futex>, "noexcept move");

    std::uint32_t words[2] = {0, 0};
    Futex a(&words[0]);
    CHECK(static_cast<bool>(a));
    const int fd_a = a.eventfd();
    CHECK(fd_open(fd_a));
    CHECK_EQ(a.word(), &words[0]);

    Futex b(std::move(a));
    CHECK(!a); // NOLINT(bugprone-use-after-move): moved-from is empty
    CHECK(a.native_handle() == nullptr);
    CHECK_EQ(b.eventfd(), fd_a);
    EXPECT_SYSTEM_ERROR(EINVAL, a.eventfd());
    EXPECT_SYSTEM_ERROR(EINVAL, a.wake(1));
    EXPECT_SYSTEM_ERROR(EINVAL, a.wait_async(0));
    EXPECT_SYSTEM_ERROR(EINVAL, a.ack());
    EXPECT_SYSTEM_ERROR(EINVAL, a.cancel());
    EXPECT_SYSTEM_ERROR(EINVAL, a.wait_for(0, 1ms));
    std::error_code ec;
    CHECK_EQ(a.wake(1, ec), 0u);
    CHECK(ec == std::errc::invalid_argument);

    // Move-assigning over a live handle frees it (its fd closes).
    Futex c(&words[1]);
    const int fd_c = c.eventfd();
    b.wait_async(0); // armed: freeing must cancel it
    c = std::move(b);
    CHECK(fd_closes(fd_c));
    CHECK_EQ(c.eventfd(), fd_a);
    CHECK_EQ(c.word(), &words[0]);
    Futex &alias = c;
    c = std::move(alias); // self-move is harmless
    CHECK(static_cast<bool>(c));

    // reset() frees; the eventfd closes.
    c.reset();
    CHECK(!c);
    CHECK(fd_closes(fd_a));
    c.reset(); // twice is fine

    // release() hands the C handle over.
    Futex d(&words[0], true);
    afx_t *raw = d.release();
    CHECK(raw != nullptr);
    CHECK(!d);
    CHECK_EQ(afx_wake(raw, 0), 0);
    afx_free(raw);

    // A default-constructed handle is empty and destructible.
    Futex e;
    CHECK(!e);
    pass("raii_and_move");
}

/// Bad input: system_error with generic_category, and the error_code
/// overloads; a failed constructor leaks nothing.
void test_error_paths()
{
    EXPECT_SYSTEM_ERROR(EINVAL, Futex(nullptr));
    alignas(4) unsigned char bytes[8] = {};
    auto *misaligned = reinterpret_cast<std::uint32_t *>(bytes + 1);
    EXPECT_SYSTEM_ERROR(EINVAL, Futex(misaligned));
    EXPECT_SYSTEM_ERROR(EINVAL, Futex(misaligned, true));

    try {
        Futex bad(nullptr);
        FAIL("no exception");
    } catch (const std::system_error &e) {
        CHECK(e.code() == std::errc::invalid_argument);
        CHECK(std::string(e.what()).find("afx_new") != std::string::npos);
    }

    std::error_code ec;
    Futex none(nullptr, false, ec);
    CHECK(!none);
    CHECK(ec == std::errc::invalid_argument);
    CHECK(ec.category() == std::generic_category());

    std::uint32_t word = 0;
    Futex ok(&word, false, ec);
    CHECK(!ec);
    CHECK(static_cast<bool>(ok));

    // Unreadable memory: EFAULT.
    void *page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(page != MAP_FAILED);
    EXPECT_SYSTEM_ERROR(EFAULT, Futex(static_cast<std::uint32_t *>(page)));
    munmap(page, 4096);

    // Many failed and successful constructions: no fd or memory leak
    // (LeakSanitizer checks the memory at exit).
    const int fds_before = count_open_fds();
    for (int i = 0; i < 300; ++i) {
        try {
            Futex f(misaligned);
            FAIL("misaligned accepted");
        } catch (const std::system_error &) {
        }
        Futex f(&word, (i & 1) != 0);
        f.wait_async(word + 1); // stale: completes at once; freed armed
    }
    for (int i = 0; i < 50000 && count_open_fds() != fds_before; ++i) // see fd_closes()
        usleep(100);
    CHECK_EQ(count_open_fds(), fds_before);

    CHECK_EQ(afx::strerror(-EBUSY).empty(), false);
    pass("error_paths");
}

/// A second arm before the first is acknowledged is EBUSY; after ack or
/// cancel, arming works again.
void test_double_arm()
{
    std::uint32_t word = 1;
    Futex f(&word, true);
    f.wait_async(1);
    EXPECT_SYSTEM_ERROR(EBUSY, f.wait_async(1));
    std::error_code ec;
    f.wait_async(1, ec);
    CHECK(ec == std::errc::device_or_resource_busy);
    CHECK(!f.ack(ec));
    CHECK(!ec);
    f.cancel();
    f.wait_async(1, ec);
    CHECK(!ec);
    f.cancel(ec);
    CHECK(!ec);

    // A stale value completes at once; still EBUSY until acknowledged.
    f.wait_async(0);
    CHECK(readable(f.eventfd(), 10000));
    EXPECT_SYSTEM_ERROR(EBUSY, f.wait_async(0));
    CHECK(f.ack());
    CHECK(!readable(f.eventfd(), 0)); // drained
    CHECK(!f.ack());                  // nothing armed
    f.wait_async(0);
    CHECK(readable(f.eventfd(), 10000));
    CHECK(f.ack());
    pass("double_arm");
}

/// wait_for: timeout, stale value, a real wake from another thread,
/// durations of every shape.
void test_wait_for()
{
    std::uint32_t word = 5;
    Futex f(&word, true);

    auto start = std::chrono::steady_clock::now();
    CHECK(f.wait_for(5, 20ms) == afx::wait_status::timeout);
    CHECK(std::chrono::steady_clock::now() - start >= 20ms);

    std::error_code ec;
    CHECK(f.wait_for(5, std::chrono::microseconds(500), ec) == afx::wait_status::timeout);
    CHECK(!ec);
    CHECK(f.wait_for(5, 0s) == afx::wait_status::timeout);
    CHECK(f.wait_for(5, -1s) == afx::wait_status::timeout);
    CHECK(f.wait_for(5, std::chrono::duration<double>(0.001)) == afx::wait_status::timeout);
    CHECK(f.wait_until(5, std::chrono::steady_clock::now() + 1ms) == afx::wait_status::timeout);

    // The word does not hold `expected`: returns at once, whatever the
    // timeout (also one too large for int64 nanoseconds).
    CHECK(f.wait_for(4, 10s) == afx::wait_status::woken);
    CHECK(f.wait_for(4, std::chrono::hours::max()) == afx::wait_status::woken);
    CHECK(f.wait_for(4, std::chrono::duration<double>(1e300)) == afx::wait_status::woken);
    f.wait(4);
    f.wait(4, ec);
    CHECK(!ec);

    // A real wake from another thread ends a long wait.
    std::thread waker([&] {
        await_kernel_waiters(&word, 1, true);
        __atomic_store_n(&word, 6, __ATOMIC_SEQ_CST);
        CHECK_EQ(f.wake(afx::all), 1u);
    });
    start = std::chrono::steady_clock::now();
    while (f.load() == 5) {
        const auto t0 = std::chrono::steady_clock::now();
        const afx::wait_status st = f.wait_for(5, 20s);
        if (st != afx::wait_status::woken)
            FAIL("wait_for(5, 20s) timed out after " +
                 std::to_string(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()) +
                 " s, word " + std::to_string(f.load()));
    }
    waker.join();
    CHECK(std::chrono::steady_clock::now() - start < 20s);
    CHECK_EQ(f.wake(0), 0u);
    pass("wait_for");
}

/// Cancel forwards a consumed wake: A (async) is queued before B
/// (blocking, in a thread); wake(1) goes to A; A is cancelled before it is
/// acknowledged; B must wake.
void test_cancel_forwards()
{
    std::uint32_t *mem = shared_words();
    std::uint32_t *word = &mem[0];
    store(word, 0);
    Futex a(word), b(word), waker(word);
    a.wait_async(0);
    await_kernel_waiters(word, 1);
    std::atomic<bool> b_woken{false};
    std::thread tb([&] { b_woken = b.wait_for(0, 20s) == afx::wait_status::woken; });
    await_kernel_waiters(word, 2);
    CHECK_EQ(waker.wake(1), 1u); // FIFO: A's wait is the one woken
    CHECK(readable(a.eventfd(), 10000));
    a.cancel(); // A consumed the wake and gives it up: forwarded to B
    tb.join();
    CHECK(b_woken.load());
    CHECK_EQ(kernel_waiters(word), 0);
    pass("cancel_forwards");
    munmap(mem, 4096);
}

/// version(), backend(), backend_name(), select_backend().
void test_helpers()
{
    const std::string expected = std::to_string(AFX_VERSION_MAJOR) + "." + std::to_string(AFX_VERSION_MINOR) + "." +
                                 std::to_string(AFX_VERSION_PATCH);
    CHECK(afx::version() == expected);
    const afx::backend_kind kind = afx::backend();
    CHECK(kind == afx::backend_kind::io_uring || kind == afx::backend_kind::thread);
    CHECK(afx::backend_name() == afx::backend_name(kind));
    CHECK(afx::backend_name(afx::backend_kind::thread) == "thread");
    CHECK(afx::backend_name(afx::backend_kind::io_uring) == "io_uring");
    // Selecting the running backend again is fine; another one is EBUSY.
    CHECK(afx::select_backend(kind) == kind);
    const auto other = kind == afx::backend_kind::thread ? afx::backend_kind::io_uring : afx::backend_kind::thread;
    std::error_code ec;
    (void)afx::select_backend(other, ec);
    CHECK(ec == std::errc::device_or_resource_busy);
    const char *env = std::getenv("AFX_BACKEND");
    if (env && *env && std::strcmp(env, "auto") != 0)
        CHECK(afx::backend_name() == env);
    pass("helpers", "asyncfutex " + std::string(afx::version()));
}

} // namespace

int main()
{
    start_tests(60);

    test_helpers();
    test_error_paths();
    test_raii_and_move();
    test_double_arm();
    test_wait_for();
    test_cancel_forwards();
    test_asio_cancel_and_release();
    test_asio_woken_by_child();
    test_asio_ping_pong();
    if (late_closes > 0)
        std::printf("NOTE: %d eventfd(s) still open right after the handle was freed (closed later)\n",
                    late_closes);
    std::printf("PASS all C++ binding tests [backend %s]\n", std::string(afx::backend_name()).c_str());
    return 0;
}
