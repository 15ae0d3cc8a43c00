// Tests of the C++ wrappers of the cross-process primitives
// (bindings/cpp/include/asyncfutex_sync.hpp) and their Asio completion
// (asyncfutex_asio.hpp): Mutex, Semaphore, EventCount, Channel.
//
// Built by tests/bindings.rs with g++ -std=c++17 -Wall -Wextra -Werror
// -fsanitize=address,undefined and run once per backend (AFX_BACKEND passes
// through). Exit status: 0 pass (a PASS line per case), 77 skip, else fail.
//
// Every case forks: the shared states live in MAP_SHARED memory and each
// process opens its own handles after the fork. Ordering uses handshakes
// (shared words with raw futex waits, the kernel's waiter count, eventfd
// readiness), never sleeps; time is only the watchdog and the subject of
// the timeout checks.
#include "harness.hpp"

#include <asyncfutex_asio.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace afx = asyncfutex;
using namespace std::chrono_literals;

namespace {

using namespace afx_test;

/// Every shared state and the test's own handshake words, each on its own
/// cache line, in one MAP_SHARED mapping.
struct Shared {
    alignas(64) afx_mutex_state mutex;
    alignas(64) afx_sem_state sem;
    alignas(64) afx_event_state event;
    alignas(64) std::uint32_t counter;
    alignas(64) std::uint32_t inside;
    alignas(64) std::uint32_t max_inside;
    alignas(64) std::uint32_t go;
    alignas(64) std::uint32_t ready;
    alignas(64) std::uint32_t acks;
    alignas(64) std::uint32_t violations;
    alignas(64) unsigned char chan[1]; // the channel: Channel::size() bytes from here
};

constexpr std::size_t shared_bytes = 1 << 20;

Shared *map_shared()
{
    void *p = mmap(nullptr, shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        FAIL(std::string("mmap: ") + std::strerror(errno));
    return new (p) Shared{};
}

void unmap(Shared *s) { munmap(s, shared_bytes); }

afx_chan_header *chan_of(Shared *s) { return reinterpret_cast<afx_chan_header *>(s->chan); }

void add(std::uint32_t *w, std::uint32_t n) { __atomic_add_fetch(w, n, __ATOMIC_SEQ_CST); }

/// Raises `*w` by one and wakes its raw waiters.
void bump(std::uint32_t *w)
{
    add(w, 1);
    raw_wake_all(w);
}

/// Waits (raw futex, watchdog-bounded) until `*w >= n`.
void await_at_least(std::uint32_t *w, std::uint32_t n)
{
    for (std::uint32_t v; (v = load(w)) < n;)
        raw_wait(w, v);
}

/// The critical section of the mutex and semaphore tests: a non-atomic
/// increment (separate load and store, a preemption window between) and
/// an occupancy count; `limit` holders may be inside at once.
void critical_section(Shared *s, std::uint32_t limit)
{
    const std::uint32_t now = __atomic_add_fetch(&s->inside, 1, __ATOMIC_SEQ_CST);
    if (now > limit)
        add(&s->violations, 1);
    for (std::uint32_t m = load(&s->max_inside); now > m;) {
        if (__atomic_compare_exchange_n(&s->max_inside, &m, now, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            break;
    }
    if (limit == 1) {
        const std::uint32_t v = load(&s->counter);
        for (int i = 0; i < 64; ++i)
            __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if ((v & 31) == 0)
            sched_yield();
        store(&s->counter, v + 1);
    } else {
        add(&s->counter, 1);
        sched_yield();
    }
    __atomic_sub_fetch(&s->inside, 1, __ATOMIC_SEQ_CST);
}

/// Runs `io` until `done`, failing if it runs out of work first.
void run_until(asio::io_context &io, const bool &done, const char *what)
{
    io.restart(); // a run that ran out of work left it stopped
    while (!done) {
        if (io.run_one() == 0)
            FAIL(std::string(what) + ": io_context ran out of work");
    }
}

/// Runs `io` until a kernel waiter is queued on `word` (an async operation
/// armed its wait).
void run_until_waiting(asio::io_context &io, std::uint32_t *word)
{
    io.restart();
    while (kernel_waiters(word) == 0) {
        io.run_one_for(std::chrono::milliseconds(10));
        if (io.stopped()) // out of work: the operation completed instead
            FAIL("no operation waits on the word");
    }
}

// ---- Mutex ------------------------------------------------------------------

/// Three processes increment a shared counter under the mutex: one with
/// std::lock_guard, one with try_lock/try_lock_for, one through Asio's
/// async_lock. No two are ever inside at once and no increment is lost.
void test_mutex_counter()
{
    constexpr std::uint32_t rounds = 300;
    Shared *s = map_shared();
    afx::Mutex::init(&s->mutex);
    std::vector<pid_t> pids;
    for (int kind = 0; kind < 3; ++kind) {
        const pid_t pid = fork_child();
        if (pid == 0) {
            afx::Mutex m(&s->mutex);
            bump(&s->ready);
            await_at_least(&s->go, 1);
            if (kind == 0) {
                for (std::uint32_t i = 0; i < rounds; ++i) {
                    std::lock_guard<afx::Mutex> guard(m);
                    CHECK(!m.owner_died());
                    critical_section(s, 1);
                }
            } else if (kind == 1) {
                for (std::uint32_t i = 0; i < rounds; ++i) {
                    if (!m.try_lock()) {
                        while (!m.try_lock_for(5ms)) {
                        }
                    }
                    std::unique_lock<afx::Mutex> guard(m, std::adopt_lock);
                    critical_section(s, 1);
                }
            } else {
                asio::io_context io;
                afx::AsyncMutex am(io, std::move(m));
                std::uint32_t done = 0;
                std::function<void()> next = [&] {
                    if (done == rounds)
                        return;
                    am.async_lock([&](std::error_code ec, bool owner_died) {
                        if (ec)
                            FAIL("async_lock: " + ec.message());
                        CHECK(!owner_died);
                        critical_section(s, 1);
                        am->unlock();
                        ++done;
                        next();
                    });
                };
                next();
                io.run();
                CHECK_EQ(done, rounds);
            }
            _exit(0);
        }
        pids.push_back(pid);
    }
    await_at_least(&s->ready, 3);
    bump(&s->go);
    for (pid_t pid : pids)
        reap(pid);
    CHECK_EQ(load(&s->violations), 0u);
    CHECK_EQ(load(&s->max_inside), 1u);
    CHECK_EQ(load(&s->counter), 3 * rounds);
    pass("mutex_counter", "3 processes (lock_guard, try_lock_for, Asio async_lock) x " + std::to_string(rounds) +
                              " increments, never two inside");
    unmap(s);
}

/// Asio on two threads, each AsyncMutex on its own strand (two handles of
/// this process contend like two processes: the lock is the process's, and
/// a second handle's lock waits), plus a blocking locker in another
/// process: still never two inside, no increment lost.
void test_mutex_strands()
{
    constexpr std::uint32_t rounds = 200;
    Shared *s = map_shared();
    afx::Mutex::init(&s->mutex);
    const pid_t pid = fork_child();
    if (pid == 0) {
        afx::Mutex m(&s->mutex);
        bump(&s->ready);
        await_at_least(&s->go, 1);
        for (std::uint32_t i = 0; i < rounds; ++i) {
            std::lock_guard<afx::Mutex> guard(m);
            critical_section(s, 1);
        }
        _exit(0);
    }
    asio::io_context io;
    afx::AsyncMutex a(asio::make_strand(io), afx::Mutex(&s->mutex));
    afx::AsyncMutex b(asio::make_strand(io), afx::Mutex(&s->mutex));
    std::atomic<std::uint32_t> done{0};
    std::function<void(afx::AsyncMutex &, std::uint32_t)> next = [&](afx::AsyncMutex &am, std::uint32_t left) {
        if (left == 0)
            return;
        am.async_lock([&, left](std::error_code ec, bool) {
            if (ec)
                FAIL("async_lock: " + ec.message());
            critical_section(s, 1);
            am->unlock();
            done.fetch_add(1);
            next(am, left - 1);
        });
    };
    await_at_least(&s->ready, 1);
    bump(&s->go);
    // Started from the strands, as the objects' rules ask.
    asio::post(a.get_executor(), [&] { next(a, rounds); });
    asio::post(b.get_executor(), [&] { next(b, rounds); });
    std::thread other([&] { io.run(); });
    io.run();
    other.join();
    reap(pid);
    CHECK_EQ(done.load(), 2 * rounds);
    CHECK_EQ(load(&s->violations), 0u);
    CHECK_EQ(load(&s->counter), 3 * rounds);
    pass("mutex_strands", "2 strands on 2 threads + a blocking process, " + std::to_string(3 * rounds) +
                              " increments, never two inside");
    unmap(s);
}

/// A holder killed with the lock: the next locker gets it with
/// owner_died(), blocking and through Asio (while its async_lock waits);
/// consistent() makes it normal again; unlocking without consistent()
/// makes it not recoverable.
void test_mutex_owner_died()
{
    Shared *s = map_shared();
    afx::Mutex::init(&s->mutex);
    afx::Mutex m(&s->mutex);

    auto holder_killed = [&](const std::function<void()> &while_held) {
        store(&s->ready, 0);
        const pid_t pid = fork_child();
        if (pid == 0) {
            afx::Mutex mine(&s->mutex);
            mine.lock();
            bump(&s->ready);
            for (;;)
                pause(); // killed holding the lock
        }
        await_at_least(&s->ready, 1);
        CHECK(!afx::Mutex(&s->mutex).try_lock());
        while_held();
        kill(pid, SIGKILL);
        int status = 0;
        while (waitpid(pid, &status, 0) != pid)
            CHECK(errno == EINTR);
        CHECK(WIFSIGNALED(status));
    };

    // Blocking lock after the holder died.
    holder_killed([] {});
    m.lock();
    CHECK(m.owner_died());
    m.consistent();
    CHECK(!m.owner_died());
    m.unlock();
    CHECK(m.try_lock());
    CHECK(!m.owner_died());
    m.unlock();

    // Asio: async_lock waits (armed in the kernel), the holder is killed,
    // the re-check timer notices.
    {
        asio::io_context io;
        afx::AsyncMutex am(io, std::move(m));
        bool done = false;
        holder_killed([&] {
            am.async_lock([&](std::error_code ec, bool owner_died) {
                CHECK(!ec);
                CHECK(owner_died);
                done = true;
            });
            // Run until its wait is armed.
            run_until_waiting(io, &s->mutex.state);
        });
        run_until(io, done, "async_lock owner died");
        CHECK(am->owner_died());
        am->consistent();
        am->unlock();
        m = am.take();
    }
    CHECK(static_cast<bool>(m));

    // Unlocking without consistent(): not recoverable from then on.
    holder_killed([] {});
    std::error_code ec;
    m.lock(ec);
    CHECK(!ec);
    CHECK(m.owner_died());
    m.unlock();
    EXPECT_SYSTEM_ERROR(ENOTRECOVERABLE, m.lock());
    CHECK(!m.try_lock(ec));
    CHECK(ec == std::errc::state_not_recoverable);
    pass("mutex_owner_died", "blocking and Asio lockers get owner_died; consistent(); ENOTRECOVERABLE");
    unmap(s);
}

/// Timeouts, errors, and cancel/destruction of a pending async_lock that
/// lose no unlock.
void test_mutex_timeouts_cancel()
{
    Shared *s = map_shared();
    afx::Mutex m = afx::Mutex::create(&s->mutex);

    // A process holds the lock until told.
    store(&s->ready, 0);
    store(&s->go, 0);
    const pid_t pid = fork_child();
    if (pid == 0) {
        afx::Mutex mine(&s->mutex);
        mine.lock();
        bump(&s->ready);
        await_at_least(&s->go, 1);
        mine.unlock();
        _exit(0);
    }
    await_at_least(&s->ready, 1);

    CHECK(!m.try_lock());
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(!m.try_lock_for(30ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
    CHECK(!m.try_lock_until(std::chrono::steady_clock::now() + 5ms));
    CHECK(!m.try_lock_for(-1s)); // <= 0: only tries
    EXPECT_SYSTEM_ERROR(EPERM, m.unlock());
    std::error_code ec;
    m.unlock(ec);
    CHECK(ec == std::errc::operation_not_permitted);

    asio::io_context io;
    afx::AsyncMutex am(io, std::move(m));
    CHECK(!m);
    // cancel(): the pending lock completes with operation_aborted.
    std::error_code got;
    bool done = false;
    am.async_lock([&](std::error_code e, bool) {
        got = e;
        done = true;
    });
    run_until_waiting(io, &s->mutex.state);
    // A second operation while one is pending: EBUSY.
    std::error_code busy;
    bool busy_done = false;
    am.async_lock([&](std::error_code e, bool) {
        busy = e;
        busy_done = true;
    });
    run_until(io, busy_done, "second async_lock");
    CHECK(busy == std::errc::device_or_resource_busy);
    CHECK(!done);
    am.cancel();
    run_until(io, done, "cancelled async_lock");
    CHECK(got == asio::error::operation_aborted);

    // Armed again, then the holder unlocks (the wait completes, unread),
    // then cancel: the lock is free, nothing is lost.
    done = false;
    am.async_lock([&](std::error_code e, bool) {
        got = e;
        done = true;
    });
    run_until_waiting(io, &s->mutex.state);
    bump(&s->go);
    reap(pid);
    CHECK(readable(am->eventfd(), 20000));
    am.cancel();
    run_until(io, done, "cancelled async_lock after unlock");
    CHECK(got == asio::error::operation_aborted);
    CHECK(am->try_lock());
    am->unlock();

    // Uncontended: completes at once (no wait).
    done = false;
    am.async_lock([&](std::error_code e, bool died) {
        CHECK(!e);
        CHECK(!died);
        done = true;
    });
    run_until(io, done, "uncontended async_lock");
    am->unlock();

    // Destroyed while pending: the handler runs later with
    // operation_aborted and touches nothing of the object.
    {
        afx::Mutex holder(&s->mutex);
        holder.lock(); // held by this process: another handle's lock waits
        auto doomed = std::make_unique<afx::AsyncMutex>(io, afx::Mutex(&s->mutex));
        const int fd = doomed->get().eventfd();
        done = false;
        doomed->async_lock([&](std::error_code e, bool) {
            got = e;
            done = true;
        });
        run_until_waiting(io, &s->mutex.state);
        CHECK(!done);
        doomed.reset();
        CHECK(fd_closes(fd));
        run_until(io, done, "async_lock of a destroyed object");
        CHECK(got == asio::error::operation_aborted);
        holder.unlock();
    }

    // Bad states.
    EXPECT_SYSTEM_ERROR(EINVAL, afx::Mutex(nullptr));
    EXPECT_SYSTEM_ERROR(EINVAL, afx::Mutex::init(nullptr));
    alignas(8) afx_mutex_state fresh{};
    EXPECT_SYSTEM_ERROR(EPROTO, afx::Mutex(&fresh));
    afx::Mutex none(&fresh, ec);
    CHECK(!none);
    CHECK(ec == std::errc::protocol_error);
    EXPECT_SYSTEM_ERROR(EINVAL, none.lock());
    EXPECT_SYSTEM_ERROR(EINVAL, afx::AsyncMutex(io, afx::Mutex()));
    afx::Mutex ok = afx::Mutex::create(&fresh, ec);
    CHECK(!ec);
    CHECK(static_cast<bool>(ok));
    EXPECT_SYSTEM_ERROR(EPERM, ok.consistent());
    ok.lock();
    EXPECT_SYSTEM_ERROR(EINVAL, ok.consistent()); // not inconsistent
    ok.unlock();
    pass("mutex_timeouts_cancel", "try_lock_for/until, EPERM, EBUSY, cancel and destruction lose no unlock");
    unmap(s);
}

// ---- Semaphore --------------------------------------------------------------

/// Four processes (blocking, try_acquire_for, two Asio) share 2 permits:
/// never more than 2 inside, every permit back at the end.
void test_semaphore_permits()
{
    constexpr std::uint32_t rounds = 250;
    constexpr std::uint32_t permits = 2;
    Shared *s = map_shared();
    afx::Semaphore::init(&s->sem, permits);
    std::vector<pid_t> pids;
    for (int kind = 0; kind < 4; ++kind) {
        const pid_t pid = fork_child();
        if (pid == 0) {
            afx::Semaphore sem(&s->sem);
            bump(&s->ready);
            await_at_least(&s->go, 1);
            if (kind == 0) {
                for (std::uint32_t i = 0; i < rounds; ++i) {
                    sem.acquire();
                    critical_section(s, permits);
                    sem.release();
                }
            } else if (kind == 1) {
                for (std::uint32_t i = 0; i < rounds; ++i) {
                    while (!sem.try_acquire_for(3ms)) {
                    }
                    critical_section(s, permits);
                    sem.release(1);
                }
            } else {
                asio::io_context io;
                afx::AsyncSemaphore as(io, std::move(sem));
                std::uint32_t done = 0;
                std::function<void()> next = [&] {
                    if (done == rounds)
                        return;
                    as.async_acquire([&](std::error_code ec) {
                        if (ec)
                            FAIL("async_acquire: " + ec.message());
                        critical_section(s, permits);
                        as->release();
                        ++done;
                        next();
                    });
                };
                next();
                io.run();
                CHECK_EQ(done, rounds);
            }
            _exit(0);
        }
        pids.push_back(pid);
    }
    await_at_least(&s->ready, 4);
    bump(&s->go);
    for (pid_t pid : pids)
        reap(pid);
    afx::Semaphore sem(&s->sem);
    CHECK_EQ(load(&s->violations), 0u);
    CHECK(load(&s->max_inside) <= permits);
    CHECK_EQ(load(&s->counter), 4 * rounds);
    CHECK_EQ(sem.value(), permits);
    pass("semaphore_permits", "4 processes (2 via Asio) x " + std::to_string(rounds) + " on " +
                                  std::to_string(permits) + " permits, max inside " +
                                  std::to_string(load(&s->max_inside)));
    unmap(s);
}

/// Timeouts, overflow, and a cancelled async_acquire that a release had
/// already woken: the permit stays in the semaphore.
void test_semaphore_timeouts_cancel()
{
    Shared *s = map_shared();
    afx::Semaphore sem = afx::Semaphore::create(&s->sem, 0);
    CHECK(!sem.try_acquire());
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(!sem.try_acquire_for(20ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
    CHECK(!sem.try_acquire_until(std::chrono::system_clock::now() + 1ms));
    sem.release(3);
    CHECK_EQ(sem.value(), 3u);
    EXPECT_SYSTEM_ERROR(EOVERFLOW, sem.release(UINT32_MAX));
    CHECK(sem.try_acquire());
    sem.acquire();
    CHECK(sem.try_acquire_for(1s));
    CHECK_EQ(sem.value(), 0u);

    asio::io_context io;
    afx::AsyncSemaphore as(io, std::move(sem));
    std::error_code got;
    bool done = false;
    as.async_acquire([&](std::error_code e) {
        got = e;
        done = true;
    });
    run_until_waiting(io, &s->sem.count);
    // Another process releases one permit: our wait completes (unread).
    const pid_t pid = fork_child();
    if (pid == 0) {
        afx::Semaphore other(&s->sem);
        other.release();
        _exit(0);
    }
    reap(pid);
    CHECK(readable(as->eventfd(), 20000));
    as.cancel();
    run_until(io, done, "cancelled async_acquire");
    CHECK(got == asio::error::operation_aborted);
    CHECK_EQ(as->value(), 1u); // not lost
    CHECK(as->try_acquire());

    // A wake our armed wait consumed is passed on by cancel(): with a
    // blocked acquirer in another process queued behind our wait, a
    // release(1) wakes our wait (the kernel wakes in queue order); we
    // cancel without taking the permit, and the other process must get it.
    CHECK_EQ(as->value(), 0u);
    done = false;
    as.async_acquire([&](std::error_code e) {
        got = e;
        done = true;
    });
    run_until_waiting(io, &s->sem.count);
    store(&s->ready, 0);
    const pid_t blocked = fork_child();
    if (blocked == 0) {
        afx::Semaphore other(&s->sem);
        other.acquire();
        bump(&s->ready);
        _exit(0);
    }
    await_kernel_waiters(&s->sem.count, 2);
    as->release(1);
    for (;;) {
        if (readable(as->eventfd(), 1))
            break;
        if (load(&s->ready) != 0)
            break;
    }
    const bool ours_woken = load(&s->ready) == 0;
    as.cancel();
    run_until(io, done, "cancelled async_acquire with a consumed wake");
    CHECK(got == asio::error::operation_aborted);
    reap(blocked); // it got the permit (its own watchdog fails a lost wake)
    CHECK_EQ(load(&s->ready), 1u);
    CHECK_EQ(as->value(), 0u);
    if (!ours_woken)
        skip_case("semaphore_cancel_forwards_wake", "the kernel woke the other waiter first");

    // Destroyed while pending.
    {
        auto doomed = std::make_unique<afx::AsyncSemaphore>(io, afx::Semaphore(&s->sem));
        done = false;
        doomed->async_acquire([&](std::error_code e) {
            got = e;
            done = true;
        });
        run_until_waiting(io, &s->sem.count);
        doomed.reset();
        run_until(io, done, "async_acquire of a destroyed object");
        CHECK(got == asio::error::operation_aborted);
    }
    as->release();
    CHECK_EQ(as->value(), 1u);

    // Any completion token: asio::use_future (io runs on another thread).
    {
        std::future<void> taken = as.async_acquire(asio::use_future);
        io.restart();
        std::thread runner([&] { io.run(); });
        taken.get(); // throws on error
        runner.join();
        CHECK_EQ(as->value(), 0u);
        std::future<void> busy = as.async_acquire(asio::use_future);
        run_until_waiting(io, &s->sem.count);
        as.cancel();
        io.run();
        try {
            busy.get();
            FAIL("a cancelled acquire succeeded");
        } catch (const std::system_error &e) {
            CHECK(e.code() == asio::error::operation_aborted);
        }
        as->release();
    }
    EXPECT_SYSTEM_ERROR(EINVAL, afx::Semaphore::init(nullptr, 1));
    alignas(4) afx_sem_state fresh{};
    EXPECT_SYSTEM_ERROR(EPROTO, afx::Semaphore(&fresh));
    pass("semaphore_timeouts_cancel", "try_acquire_for/until, EOVERFLOW, cancel and destruction lose no permit");
    unmap(s);
}

// ---- EventCount -------------------------------------------------------------

/// One publisher, three waiting processes (blocking wait, wait_for, Asio
/// async_wait): each sees every publication, in order. The publisher waits
/// for every waiter's ack of round r before publishing r + 1.
void test_event_broadcast()
{
    constexpr std::uint32_t rounds = 200;
    constexpr std::uint32_t waiters = 3;
    Shared *s = map_shared();
    afx::EventCount::init(&s->event);
    std::vector<pid_t> pids;
    for (std::uint32_t kind = 0; kind < waiters; ++kind) {
        const pid_t pid = fork_child();
        if (pid == 0) {
            afx::EventCount ev(&s->event);
            std::uint32_t seen = ev.seq();
            CHECK_EQ(seen, 0u);
            bump(&s->ready);
            if (kind == 0) {
                for (std::uint32_t r = 1; r <= rounds; ++r) {
                    seen = ev.wait(seen);
                    CHECK_EQ(seen, r);
                    bump(&s->acks);
                }
            } else if (kind == 1) {
                for (std::uint32_t r = 1; r <= rounds; ++r) {
                    std::optional<std::uint32_t> got;
                    while (!(got = ev.wait_for(seen, 2ms))) {
                    }
                    seen = *got;
                    CHECK_EQ(seen, r);
                    bump(&s->acks);
                }
            } else {
                asio::io_context io;
                afx::AsyncEventCount ae(io, std::move(ev));
                std::function<void()> next = [&] {
                    if (seen == rounds)
                        return;
                    ae.async_wait(seen, [&](std::error_code ec, std::uint32_t seq) {
                        if (ec)
                            FAIL("async_wait: " + ec.message());
                        CHECK_EQ(seq, seen + 1);
                        seen = seq;
                        bump(&s->acks);
                        next();
                    });
                };
                next();
                io.run();
                CHECK_EQ(seen, rounds);
            }
            _exit(0);
        }
        pids.push_back(pid);
    }
    afx::EventCount ev(&s->event);
    await_at_least(&s->ready, waiters);
    for (std::uint32_t r = 1; r <= rounds; ++r) {
        CHECK_EQ(ev.publish(), r);
        await_at_least(&s->acks, waiters * r);
    }
    for (pid_t pid : pids)
        reap(pid);
    CHECK_EQ(ev.seq(), rounds);

    // Timeouts; a stale last_seen returns at once.
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(!ev.wait_for(rounds, 20ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
    CHECK(!ev.wait_until(rounds, std::chrono::steady_clock::now()));
    CHECK_EQ(ev.wait(rounds - 1), rounds);

    // Asio: cancel after a publication woke the armed wait: aborted; the
    // publication is still there (seq moved on).
    asio::io_context io;
    afx::AsyncEventCount ae(io, std::move(ev));
    std::error_code got;
    bool done = false;
    ae.async_wait(rounds, [&](std::error_code e, std::uint32_t) {
        got = e;
        done = true;
    });
    run_until_waiting(io, &s->event.word);
    const pid_t pid = fork_child();
    if (pid == 0) {
        afx::EventCount other(&s->event);
        other.publish();
        _exit(0);
    }
    reap(pid);
    CHECK(readable(ae->eventfd(), 20000));
    ae.cancel();
    run_until(io, done, "cancelled async_wait");
    CHECK(got == asio::error::operation_aborted);
    // The next wait sees it at once.
    done = false;
    ae.async_wait(rounds, [&](std::error_code e, std::uint32_t seq) {
        CHECK(!e);
        CHECK_EQ(seq, rounds + 1);
        done = true;
    });
    run_until(io, done, "async_wait after cancel");
    alignas(4) afx_event_state fresh{};
    EXPECT_SYSTEM_ERROR(EPROTO, afx::EventCount(&fresh));
    pass("event_broadcast", std::to_string(waiters) + " processes (one via Asio) saw all " + std::to_string(rounds) +
                                " publications in order; timeouts; cancel");
    unmap(s);
}

// ---- Channel ----------------------------------------------------------------

constexpr std::uint32_t frame_size = 64;
constexpr std::uint32_t capacity = 8;

/// Frame i: its number, then (i % 57) bytes of a pattern.
std::size_t make_frame(std::uint32_t i, unsigned char *out)
{
    std::memcpy(out, &i, 4);
    const std::size_t extra = i % 57;
    for (std::size_t k = 0; k < extra; ++k)
        out[4 + k] = static_cast<unsigned char>(i * 31 + k);
    return 4 + extra;
}

void check_frame(std::uint32_t i, const unsigned char *got, std::size_t len)
{
    unsigned char want[frame_size];
    const std::size_t n = make_frame(i, want);
    CHECK_EQ(len, n);
    if (std::memcmp(want, got, n) != 0)
        FAIL("frame " + std::to_string(i) + ": wrong content");
}

/// A sending process (blocking send for the first half, Asio async_send for
/// the second) and a receiving one (Asio async_recv, then recv_for): every
/// frame exactly once, in order, through a ring of 8.
void test_channel_fifo()
{
    constexpr std::uint32_t frames = 3000;
    Shared *s = map_shared();
    CHECK(afx::Channel::size(frame_size, capacity) <= shared_bytes - offsetof(Shared, chan));
    afx::Channel::init(chan_of(s), frame_size, capacity);
    const pid_t pid = fork_child();
    if (pid == 0) {
        afx::Sender tx(chan_of(s));
        unsigned char buf[frame_size];
        std::uint32_t i = 0;
        for (; i < frames / 2; ++i)
            tx.send(buf, make_frame(i, buf));
        asio::io_context io;
        afx::AsyncSender atx(io, std::move(tx));
        std::function<void()> next = [&] {
            if (i == frames)
                return;
            const std::size_t n = make_frame(i, buf);
            atx.async_send(asio::buffer(buf, n), [&](std::error_code ec) {
                if (ec)
                    FAIL("async_send: " + ec.message());
                ++i;
                next();
            });
        };
        next();
        io.run();
        CHECK_EQ(i, frames);
        _exit(0);
    }
    afx::Receiver rx(chan_of(s));
    unsigned char buf[frame_size];
    std::uint32_t i = 0;
    {
        asio::io_context io;
        afx::AsyncReceiver arx(io, std::move(rx));
        std::function<void()> next = [&] {
            if (i == frames / 2)
                return;
            arx.async_recv(asio::buffer(buf), [&](std::error_code ec, std::size_t n) {
                if (ec)
                    FAIL("async_recv: " + ec.message());
                check_frame(i, buf, n);
                ++i;
                next();
            });
        };
        next();
        io.run();
        rx = arx.take();
    }
    for (; i < frames; ++i) {
        std::optional<std::size_t> n;
        while (!(n = rx.recv_for(buf, sizeof buf, 5ms))) {
        }
        check_frame(i, buf, *n);
    }
    reap(pid);
    CHECK(!rx.try_recv(buf, sizeof buf));
    pass("channel_fifo", std::to_string(frames) + " frames across processes (blocking and Asio on each side), " +
                             "each exactly once, in order, through a ring of " + std::to_string(capacity));
    unmap(s);
}

/// Errors and timeouts of both ends; a cancelled async_recv after a frame
/// arrived loses no frame; a cancelled async_send on a full ring sends
/// nothing; destruction while pending.
void test_channel_errors_cancel()
{
    Shared *s = map_shared();
    afx::Channel::init(chan_of(s), frame_size, capacity);
    afx::Receiver rx(chan_of(s));
    afx::Sender tx(chan_of(s));
    unsigned char buf[frame_size * 2] = {};

    CHECK(!rx.try_recv(buf, sizeof buf));
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(!rx.recv_for(buf, sizeof buf, 20ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
    EXPECT_SYSTEM_ERROR(EMSGSIZE, tx.send(buf, frame_size + 1));
    for (std::uint32_t k = 0; k < capacity; ++k)
        CHECK(tx.try_send(buf, 10));
    CHECK(!tx.try_send(buf, 10));
    CHECK(!tx.send_for(buf, 10, 5ms));
    CHECK(!tx.send_until(buf, 10, std::chrono::steady_clock::now()));
    EXPECT_SYSTEM_ERROR(EMSGSIZE, rx.recv(buf, 9)); // too small: stays queued
    for (std::uint32_t k = 0; k < capacity; ++k)
        CHECK_EQ(rx.recv(buf, sizeof buf), 10u);
    CHECK(!rx.try_recv(buf, sizeof buf));
    EXPECT_SYSTEM_ERROR(EINVAL, afx::Channel::init(chan_of(s), frame_size, 3)); // not a power of two
    CHECK_EQ(afx::Channel::size(frame_size, 3), 0u);

    asio::io_context io;
    afx::AsyncReceiver arx(io, std::move(rx));
    std::error_code got;
    bool done = false;
    arx.async_recv(asio::buffer(buf), [&](std::error_code e, std::size_t) {
        got = e;
        done = true;
    });
    std::uint32_t *head = &chan_of(s)->head;
    run_until_waiting(io, head);
    // A frame arrives (sent from this process: the futex wake reaches the
    // armed wait all the same), the wait completes unread; then cancel.
    const unsigned char f[4] = {1, 2, 3, 4};
    tx.send(f, sizeof f);
    CHECK(readable(arx->eventfd(), 20000));
    arx.cancel();
    run_until(io, done, "cancelled async_recv");
    CHECK(got == asio::error::operation_aborted);
    const std::optional<std::size_t> n = arx->try_recv(buf, sizeof buf);
    CHECK(n && *n == 4u); // not lost
    CHECK_EQ(buf[3], 4);

    // Full ring: async_send waits; cancel; nothing extra was sent.
    afx::AsyncSender atx(io, std::move(tx));
    for (std::uint32_t k = 0; k < capacity; ++k)
        CHECK(atx->try_send(buf, 1));
    done = false;
    unsigned char big[frame_size] = {};
    atx.async_send(asio::buffer(big), [&](std::error_code e) {
        got = e;
        done = true;
    });
    std::uint32_t *tail = &chan_of(s)->tail;
    run_until_waiting(io, tail);
    atx.cancel();
    run_until(io, done, "cancelled async_send");
    CHECK(got == asio::error::operation_aborted);
    for (std::uint32_t k = 0; k < capacity; ++k)
        CHECK_EQ(arx->recv(buf, sizeof buf), 1u);
    CHECK(!arx->try_recv(buf, sizeof buf));
    // Too long for async_send: EMSGSIZE through the handler.
    done = false;
    atx.async_send(asio::buffer(buf, frame_size + 1), [&](std::error_code e) {
        got = e;
        done = true;
    });
    run_until(io, done, "async_send too long");
    CHECK(got == std::errc::message_size);

    // A receiver destroyed while pending.
    {
        afx::Receiver tmp_rx = arx.take();
        auto doomed = std::make_unique<afx::AsyncReceiver>(io, std::move(tmp_rx));
        done = false;
        doomed->async_recv(asio::buffer(buf), [&](std::error_code e, std::size_t) {
            got = e;
            done = true;
        });
        run_until_waiting(io, head);
        doomed.reset();
        run_until(io, done, "async_recv of a destroyed object");
        CHECK(got == asio::error::operation_aborted);
    }
    afx::Receiver wrong;
    EXPECT_SYSTEM_ERROR(EINVAL, wrong.recv(buf, sizeof buf));
    pass("channel_errors_cancel", "timeouts, EMSGSIZE, full ring, cancel loses no frame and sends none");
    unmap(s);
}

} // namespace

int main()
{
    start_tests(120);
    test_mutex_counter();
    test_mutex_strands();
    test_mutex_owner_died();
    test_mutex_timeouts_cancel();
    test_semaphore_permits();
    test_semaphore_timeouts_cancel();
    test_event_broadcast();
    test_channel_fifo();
    test_channel_errors_cancel();
    return 0;
}
