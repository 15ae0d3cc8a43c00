// Tests of the C++ wrapper's vector waits (waiting for any of many words:
// asyncfutex::wait_any / wait_any_for, Futex::entry, wait_any_async and
// ack_index) with Asio.
//
// Built by tests/bindings.rs like test_asio.cpp (g++ -std=c++17 -Wall
// -Wextra -Werror -fsanitize=address,undefined) and run once per backend.
// Exit status: 0 pass, 77 skip (the backend cannot run here), else fail.
// In the thread backend's per-wait mode (AFX_THREAD_WAITV=0, or a kernel
// without futex_waitv) async vector waits are ENOSYS: per_wait_mode_enosys
// checks that, and the cases that need them print a SKIP line. Blocking
// vector waits need only the kernel's futex_waitv.
//
// Ordering uses the kernel's waiter count and value handshakes, never
// sleeps; time is only a watchdog (alarm) and the subject of the timeout
// checks.
#include "harness.hpp"

#include <asyncfutex.hpp>

#include <asio.hpp>

#include <pthread.h>

#include <array>
#include <atomic>
#include <cctype>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace afx = asyncfutex;
using afx::Futex;
using afx::wait_entry;
using namespace std::chrono_literals;

namespace {

using namespace afx_test;

constexpr std::size_t N = 4; // words in most cases

/// "" if this kernel has futex_waitv(2) (Linux 5.16+) and lets us call it,
/// else why not.
std::string futex_waitv_missing()
{
#ifdef SYS_futex_waitv
    const long nr = SYS_futex_waitv;
#else
    const long nr = 449; // the same on every architecture
#endif
    // An empty vector: EINVAL where futex_waitv exists.
    if (syscall(nr, nullptr, 0, 0, nullptr, 0) < 0 && errno == EINVAL)
        return "";
    return std::string("futex_waitv(2) is not available here (") + std::strerror(errno) + ")";
}

/// Why async vector waits are ENOSYS in this process (the thread backend
/// in per-wait mode), or "" where they are served.
std::string per_wait_mode()
{
    if (afx::backend() != afx::backend_kind::thread)
        return "";
    if (const char *env = std::getenv("AFX_THREAD_WAITV")) {
        std::string v(env);
        for (char &c : v)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (v == "0" || v == "off" || v == "no" || v == "false")
            return "AFX_THREAD_WAITV=" + std::string(env) + " forces the thread backend's per-wait mode";
    }
    const std::string missing = futex_waitv_missing();
    return missing.empty() ? "" : "the thread backend runs in per-wait mode: " + missing;
}

/// Prints a SKIP line for a case that needs async vector waits, if they
/// are ENOSYS here; returns whether to skip.
bool skip_without_async_waits(const char *name)
{
    const std::string why = per_wait_mode();
    if (why.empty())
        return false;
    skip_case(name, why + ": async vector waits are ENOSYS there (per_wait_mode_enosys checks it)");
    return true;
}

/// The same for a case that needs blocking vector waits (futex_waitv).
bool skip_without_blocking_waits(const char *name)
{
    const std::string why = futex_waitv_missing();
    if (why.empty())
        return false;
    skip_case(name, why + ": blocking vector waits are ENOSYS/EPERM (per_wait_mode_enosys checks it)");
    return true;
}

/// `n` handles on `n` consecutive words of MAP_SHARED memory, all 0.
struct Words {
    explicit Words(std::size_t n = N) : mem(shared_words())
    {
        for (std::size_t i = 0; i < n; ++i) {
            store(&mem[i], 0);
            fs.emplace_back(&mem[i]);
        }
    }
    ~Words()
    {
        fs.clear();
        munmap(mem, 4096);
    }
    Words(const Words &) = delete;
    Words &operator=(const Words &) = delete;

    /// Every word expected to hold `value`.
    [[nodiscard]] std::vector<wait_entry> entries(std::uint32_t value = 0) const
    {
        std::vector<wait_entry> e;
        for (const Futex &f : fs)
            e.push_back(f.entry(value));
        return e;
    }

    /// Waits until exactly `n` kernel waiters are queued on every word.
    void queued(int n) const
    {
        for (const Futex &f : fs)
            await_kernel_waiters(f.word(), n);
    }

    /// Waits until exactly `n` kernel waiters are queued on every word,
    /// allowing more for a moment: a 128-word wait is split over two of
    /// the thread backend's helpers, and the one that did not complete it
    /// lets go of its part just after the completion (the watchdog bounds
    /// this).
    void settle(int n) const
    {
        for (const Futex &f : fs)
            while (kernel_waiters(f.word()) != n)
                std::this_thread::yield();
    }

    /// No kernel waiter is left on any word.
    void drained() const
    {
        for (std::size_t i = 0; i < fs.size(); ++i)
            if (kernel_waiters(fs[i].word()) != 0)
                FAIL("a kernel waiter is left on word " + std::to_string(i));
    }

    std::uint32_t *mem;
    std::vector<Futex> fs;
};

/// Waits until the handle's eventfd is readable (the armed wait
/// completed), failing after 10 s.
void completed(const Futex &owner)
{
    if (!readable(owner.eventfd(), 10000))
        FAIL("the armed vector wait did not complete within 10 s");
}

// ---- blocking ----------------------------------------------------------------

/// Each index completes a blocking wait: a stale expected value at once, a
/// pure wake (counted exactly) from another thread; timeouts; every way
/// of passing the entries.
void test_blocking_each_index()
{
    if (skip_without_blocking_waits("blocking_each_index"))
        return;
    Words w;
    for (std::size_t i = 0; i < N; ++i) {
        std::vector<wait_entry> e = w.entries();
        e[i].expected = 1; // the word holds 0
        CHECK_EQ(afx::wait_any(e), i);
        CHECK(afx::wait_any_for(e, 0s) == i); // 0 only checks
        CHECK(afx::wait_any_for(e, 20s) == i);
        CHECK(afx::wait_any_until(e, std::chrono::steady_clock::now() + 20s) == i);
    }
    const std::vector<wait_entry> all = w.entries();
    const auto start = std::chrono::steady_clock::now();
    CHECK(!afx::wait_any_for(all, 20ms).has_value());
    CHECK(std::chrono::steady_clock::now() - start >= 20ms);
    CHECK(!afx::wait_any_for(all, 0s).has_value());
    CHECK(!afx::wait_any_for(all, -1s).has_value()); // like wait_for: <= 0 only checks
    CHECK(!afx::wait_any_until(all, std::chrono::system_clock::now() + 1ms).has_value());

    for (std::size_t i = 0; i < N; ++i) {
        std::size_t got = N;
        std::thread t([&] { got = afx::wait_any(all); });
        w.queued(1);
        CHECK_EQ(w.fs[i].wake(1), 1u); // exactly the one vector waiter
        t.join();
        CHECK_EQ(got, i);
        w.drained();
    }

    // The entries as a braced list, a C array, a std::array, pointer + count.
    store(&w.mem[2], 5);
    CHECK_EQ(afx::wait_any({w.fs[0].entry(0), w.fs[2].entry(0)}), 1u);
    const wait_entry arr[] = {w.fs[1].entry(0), w.fs[2].entry(0)};
    CHECK_EQ(afx::wait_any(arr), 1u);
    const std::array<wait_entry, 3> std_arr = {w.fs[0].entry(0), w.fs[1].entry(0), w.fs[2].entry(0)};
    CHECK(afx::wait_any_for(std_arr, 1s) == 2u);
    CHECK_EQ(afx::wait_any(afx::wait_entries(std_arr.data(), 3)), 2u);
    std::error_code ec;
    CHECK_EQ(afx::wait_any(arr, ec), 1u);
    CHECK(!ec);
    pass("blocking_each_index");
}

std::atomic<int> usr1_handled{0};
void on_usr1(int) { usr1_handled.fetch_add(1); }

/// A signal handler that runs while a thread sleeps in wait_any /
/// wait_any_for does not end the wait: it goes on and takes the wake.
void test_blocking_eintr()
{
    if (skip_without_blocking_waits("blocking_eintr"))
        return;
    struct sigaction sa, old;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; // no SA_RESTART: the kernel returns EINTR
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old);
    Words w;
    const std::vector<wait_entry> all = w.entries();
    for (int timed = 0; timed < 2; ++timed) {
        std::atomic<bool> done{false};
        std::optional<std::size_t> got;
        std::thread t([&] {
            got = timed ? afx::wait_any_for(all, 20s) : std::optional<std::size_t>(afx::wait_any(all));
            done = true;
        });
        w.queued(1);
        const int before = usr1_handled.load();
        pthread_kill(t.native_handle(), SIGUSR1);
        while (usr1_handled.load() == before) // it ran in `t`, out of the kernel
            std::this_thread::yield();
        w.queued(1); // and it waits again
        CHECK(!done.load());
        CHECK_EQ(w.fs[1].wake(1), 1u);
        t.join();
        CHECK(got == 1u);
    }
    sigaction(SIGUSR1, &old, nullptr);
    pass("blocking_eintr");
}

// ---- async, with Asio ----------------------------------------------------

/// An Asio loop awaits vector waits armed on an owner handle (a handle of
/// its own here); a thread wakes word i in round i with wake(1): each
/// index completes the wait, and each wake(1) counts exactly one waiter.
void test_asio_each_index()
{
    if (skip_without_async_waits("asio_each_index"))
        return;
    Words w;
    std::uint32_t owner_word = 0;
    Futex owner(&owner_word, true);
    const std::vector<wait_entry> all = w.entries();
    asio::io_context io;
    asio::posix::stream_descriptor sd(io, owner.eventfd());
    std::vector<std::size_t> got;
    std::atomic<std::size_t> rounds{0};
    std::uint64_t spurious = 0;

    std::function<void()> await_completion = [&] {
        sd.async_wait(asio::posix::stream_descriptor::wait_read, [&](const asio::error_code &ec) {
            if (ec)
                FAIL("async_wait: " + ec.message());
            const std::optional<std::size_t> index = owner.ack_index();
            if (!index) { // readiness without a completion: still armed
                ++spurious;
                await_completion();
                return;
            }
            got.push_back(*index);
            rounds.store(got.size());
            if (got.size() < N) {
                await_completion(); // Asio waits first, then the futex wait is armed
                owner.wait_any_async(all);
            }
        });
    };

    std::array<std::uint32_t, N> woken{};
    std::thread waker([&] {
        for (std::size_t i = 0; i < N; ++i) {
            while (rounds.load() != i) // round i is armed...
                std::this_thread::yield();
            w.queued(1); // ...and queued on every word
            woken[i] = w.fs[i].wake(1);
        }
    });
    await_completion();
    owner.wait_any_async(all);
    io.run();
    waker.join();
    (void)sd.release();
    CHECK_EQ(got.size(), N);
    for (std::size_t i = 0; i < N; ++i) {
        CHECK_EQ(got[i], i);
        CHECK_EQ(woken[i], 1u);
    }
    w.drained();
    pass("asio_each_index", std::to_string(spurious) + " spurious readiness");
}

/// A process that does not use the library wakes the Asio waiter with a
/// plain FUTEX_WAKE (it wakes exactly one waiter), on the first and the
/// last word.
void test_asio_raw_futex_peer()
{
    if (skip_without_async_waits("asio_raw_futex_peer"))
        return;
    Words w;
    Futex &owner = w.fs[0]; // one of the entries' handles owns the wait
    const std::vector<wait_entry> all = w.entries();
    asio::io_context io;
    asio::posix::stream_descriptor sd(io, owner.eventfd());
    for (const std::size_t i : {std::size_t{0}, N - 1}) {
        std::optional<std::size_t> got;
        sd.async_wait(asio::posix::stream_descriptor::wait_read, [&](const asio::error_code &ec) {
            CHECK(!ec);
            got = owner.ack_index();
        });
        owner.wait_any_async(all);
        w.queued(1);
        const pid_t pid = fork_child();
        if (pid == 0) {
            std::uint32_t *word = &w.mem[i];
            store(word, 1);
            const long woken = syscall(SYS_futex, word, FUTEX_WAKE, 1);
            _exit(woken == 1 ? 0 : 2);
        }
        reap(pid);
        io.restart();
        io.run();
        CHECK(got == i);
        CHECK_EQ(load(&w.mem[i]), 1u);
        store(&w.mem[i], 0);
        w.drained();
    }
    (void)sd.release();
    pass("asio_raw_futex_peer");
}

/// Two vector waits on the same words: wake(1) completes exactly one (the
/// first queued); the other stays queued and pending until the next wake.
void test_wake_counted_exactly()
{
    if (skip_without_async_waits("wake_counted_exactly"))
        return;
    Words w;
    std::uint32_t owner_words[2] = {0, 0};
    Futex a(&owner_words[0], true), b(&owner_words[1], true);
    const std::vector<wait_entry> all = w.entries();
    a.wait_any_async(all);
    await_kernel_waiters(w.fs[2].word(), 1);
    b.wait_any_async(all);
    w.queued(2);
    CHECK_EQ(w.fs[2].wake(1), 1u);
    completed(a);
    CHECK(a.ack_index() == 2u);
    w.queued(1); // b is still queued on every word...
    CHECK(!b.ack_index().has_value()); // ...and pending
    store(&w.mem[0], 1);
    CHECK_EQ(w.fs[0].wake(afx::all), 1u);
    completed(b);
    CHECK(b.ack_index() == 0u);
    CHECK(!b.ack_index().has_value()); // nothing armed any more
    w.drained();
    pass("wake_counted_exactly");
}

/// Cancelling a vector wait that consumed a wake passes the wake on to
/// another waiter of that word; Asio cancel + release leaves the owner
/// re-armable; freeing an owner with an armed vector wait dequeues it.
void test_cancel()
{
    if (skip_without_async_waits("cancel"))
        return;
    Words w;
    std::uint32_t owner_word = 0;
    Futex a(&owner_word, true), b(w.fs[1].word());
    const std::vector<wait_entry> two = {w.fs[0].entry(0), w.fs[1].entry(0)};
    a.wait_any_async(two);
    await_kernel_waiters(w.fs[1].word(), 1);
    std::atomic<bool> b_woken{false};
    std::thread tb([&] { b_woken = b.wait_for(0, 20s) == afx::wait_status::woken; });
    await_kernel_waiters(w.fs[1].word(), 2);
    CHECK_EQ(w.fs[1].wake(1), 1u); // FIFO: the vector wait takes it
    completed(a);
    a.cancel(); // consumed, never acknowledged: forwarded to b
    tb.join();
    CHECK(b_woken.load());
    CHECK(!a.ack_index().has_value());
    w.drained();

    // Asio: the operation cancelled before the loop ran, the futex wait
    // cancelled, the descriptor released; then armed again (stale).
    asio::io_context io;
    {
        asio::posix::stream_descriptor sd(io, a.eventfd());
        asio::error_code got;
        sd.async_wait(asio::posix::stream_descriptor::wait_read, [&](const asio::error_code &ec) { got = ec; });
        a.wait_any_async(two);
        sd.cancel();
        io.run();
        CHECK(got == asio::error::operation_aborted);
        a.cancel();
        (void)sd.release();
    }
    w.drained();
    CHECK(!readable(a.eventfd(), 0));
    io.restart();
    asio::posix::stream_descriptor sd(io, a.eventfd());
    std::optional<std::size_t> index;
    sd.async_wait(asio::posix::stream_descriptor::wait_read, [&](const asio::error_code &ec) {
        CHECK(!ec);
        index = a.ack_index();
    });
    std::vector<wait_entry> stale = two;
    stale[1].expected = 9;
    a.wait_any_async(stale);
    io.run();
    CHECK(index == 1u);
    (void)sd.release();

    // Freeing the owner with a vector wait armed dequeues it.
    a.wait_any_async(w.entries());
    w.queued(1);
    a.reset();
    w.drained();
    pass("cancel");
}

/// 128 words work (each index reachable), 129 and 0 are EINVAL; EBUSY with
/// another wait armed; afx_ack works for vector waits, ack_index for plain
/// ones.
void test_limits_and_busy()
{
    if (skip_without_async_waits("limits_and_busy"))
        return;
    Words w(afx::wait_any_max);
    std::vector<wait_entry> all = w.entries();
    CHECK_EQ(all.size(), std::size_t{128});
    std::uint32_t owner_word = 0;
    Futex owner(&owner_word, true);
    for (const std::size_t i : {std::size_t{0}, std::size_t{64}, afx::wait_any_max - 1}) {
        owner.wait_any_async(all);
        w.settle(1);
        CHECK_EQ(w.fs[i].wake(1), 1u);
        completed(owner);
        CHECK(owner.ack_index() == i);
        w.settle(0);

        std::size_t got = 0;
        std::thread t([&] { got = afx::wait_any(all); });
        w.queued(1); // one kernel wait: queued on every word at once
        CHECK_EQ(w.fs[i].wake(1), 1u);
        t.join();
        CHECK_EQ(got, i);
        w.drained();
    }
    all.back().expected = 1;
    CHECK_EQ(afx::wait_any(all), std::size_t{127});
    all.push_back(w.fs[0].entry(0)); // 129
    EXPECT_SYSTEM_ERROR(EINVAL, afx::wait_any(all));
    EXPECT_SYSTEM_ERROR(EINVAL, owner.wait_any_async(all));

    // One wait per handle, plain or vector.
    const std::vector<wait_entry> few = {w.fs[0].entry(0), w.fs[1].entry(0)};
    owner.wait_async(0);
    EXPECT_SYSTEM_ERROR(EBUSY, owner.wait_any_async(few));
    owner.cancel();
    owner.wait_any_async(few);
    EXPECT_SYSTEM_ERROR(EBUSY, owner.wait_async(0));
    std::error_code ec;
    owner.wait_any_async(few, ec);
    CHECK(ec == std::errc::device_or_resource_busy);
    owner.cancel();

    // ack() acknowledges a vector wait; ack_index() a plain one (index 0).
    std::vector<wait_entry> stale = few;
    stale[1].expected = 1;
    owner.wait_any_async(stale);
    completed(owner);
    CHECK(owner.ack());
    owner.wait_async(1); // the owner's word is 0: completes at once
    completed(owner);
    CHECK(owner.ack_index(ec) == 0u);
    CHECK(!ec);
    pass("limits_and_busy");
}

/// Bad vectors: the same errors in every mode (checked before any wait).
void test_bad_vectors()
{
    Words w;
    std::uint32_t owner_word = 0;
    Futex owner(&owner_word, true);
    const std::vector<wait_entry> none;
    const std::vector<wait_entry> too_many(afx::wait_any_max + 1, w.fs[0].entry(0));
    for (const std::vector<wait_entry> *bad : {&none, &too_many}) {
        EXPECT_SYSTEM_ERROR(EINVAL, afx::wait_any(*bad));
        EXPECT_SYSTEM_ERROR(EINVAL, afx::wait_any_for(*bad, 1s));
        EXPECT_SYSTEM_ERROR(EINVAL, owner.wait_any_async(*bad));
        std::error_code ec;
        CHECK_EQ(afx::wait_any(*bad, ec), 0u);
        CHECK(ec == std::errc::invalid_argument);
        CHECK(!afx::wait_any_for(*bad, 1s, ec).has_value());
        CHECK(ec == std::errc::invalid_argument);
        owner.wait_any_async(*bad, ec);
        CHECK(ec == std::errc::invalid_argument);
    }
    // A NULL word (an empty handle's entry), a misaligned one.
    Futex empty;
    EXPECT_SYSTEM_ERROR(EINVAL, afx::wait_any_for({w.fs[0].entry(0), empty.entry(0)}, 0s));
    EXPECT_SYSTEM_ERROR(EINVAL, owner.wait_any_async({empty.entry(0)}));
    wait_entry misaligned = w.fs[0].entry(0);
    misaligned.addr = reinterpret_cast<std::uint32_t *>(reinterpret_cast<char *>(w.mem) + 2);
    EXPECT_SYSTEM_ERROR(EINVAL, afx::wait_any_for({misaligned}, 0s));
    EXPECT_SYSTEM_ERROR(EINVAL, owner.wait_any_async({misaligned}));
    // An empty owner.
    EXPECT_SYSTEM_ERROR(EINVAL, empty.wait_any_async(w.entries()));
    EXPECT_SYSTEM_ERROR(EINVAL, empty.ack_index());
    // Entries remember the key: private handles make private entries.
    Futex priv(&owner_word, true);
    CHECK(priv.is_private() && priv.entry(3).flags == AFX_PRIVATE && priv.entry(3).expected == 3u);
    CHECK(!w.fs[0].is_private() && w.fs[0].entry(0).flags == 0u && w.fs[0].entry(0).addr == w.mem);
    Futex moved(std::move(priv));
    CHECK(moved.is_private() && !priv.is_private()); // NOLINT(bugprone-use-after-move)
    pass("bad_vectors");
}

/// In per-wait mode async vector waits are ENOSYS (from the ack); the
/// owner stays usable for plain async waits. Blocking ones work wherever
/// the kernel has futex_waitv.
void test_per_wait_mode_enosys()
{
    const std::string why = per_wait_mode();
    if (why.empty()) {
        skip_case("per_wait_mode_enosys", "vector waits are served here (not the thread backend's per-wait mode)");
        return;
    }
    Words w;
    store(&w.mem[0], 1); // stale: even an immediate completion is refused
    std::uint32_t owner_word = 0;
    Futex owner(&owner_word, true);
    std::error_code ec;
    const std::optional<std::size_t> blocking = afx::wait_any_for(w.entries(), 20s, ec);
    if (futex_waitv_missing().empty())
        CHECK(!ec && blocking == 0u);
    else
        CHECK(ec == std::errc::function_not_supported || ec == std::errc::operation_not_permitted);
    owner.wait_any_async(w.entries(), ec);
    if (!ec) { // armed: the error comes with the completion
        completed(owner);
        (void)owner.ack_index(ec);
    }
    CHECK(ec == std::errc::function_not_supported);
    owner.wait_async(1); // its word is 0: completes at once
    completed(owner);
    CHECK(owner.ack());
    pass("per_wait_mode_enosys", why);
}

} // namespace

int main()
{
    start_tests(60);

    test_bad_vectors();
    test_per_wait_mode_enosys();
    test_blocking_each_index();
    test_blocking_eintr();
    test_wake_counted_exactly();
    test_cancel();
    test_limits_and_busy();
    test_asio_each_index();
    test_asio_raw_futex_peer();
    std::printf("PASS all C++ vector-wait tests [backend %s]\n", std::string(afx::backend_name()).c_str());
    return 0;
}
