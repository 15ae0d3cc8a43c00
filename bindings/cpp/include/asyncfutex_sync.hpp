// asyncfutex_sync.hpp — C++17 RAII wrappers over the asyncfutex C API's
// cross-process primitives: Mutex, Semaphore, EventCount and the SPSC
// channel's Sender and Receiver.
//
//   #include <asyncfutex_sync.hpp>  // includes asyncfutex.hpp; needs include/asyncfutex.h on the path
//   link with -lasyncfutex
//
// (asyncfutex.hpp alone still gives Futex and the helpers; for Asio
// completion of these primitives include asyncfutex_asio.hpp.)
//
// Each primitive has a shared state (afx_mutex_state, afx_sem_state,
// afx_event_state, afx_chan_header + ring) that the user places in memory
// every process maps (MAP_SHARED), initialises once (`init`, or `create` =
// init + open) and opens in each process (the constructor). The handles
// are move-only; their destructors close the C handle (noexcept). As in
// asyncfutex.hpp every throwing call throws std::system_error with
// std::generic_category() and the errno value, and has a noexcept overload
// taking a trailing std::error_code&. An empty or moved-from handle fails
// with EINVAL. Timeouts are std::chrono durations (rounded up to
// nanoseconds; <= 0 only tries) or time points.
//
// Semantics are the C library's (include/asyncfutex.h): a mutex is held by
// a *process* (robust: a holder that dies is detected and the next locker
// gets the lock with owner_died()); the semaphore, event count and channel
// lose no permit, publication or frame.
#ifndef ASYNCFUTEX_SYNC_HPP
#define ASYNCFUTEX_SYNC_HPP

#include <asyncfutex.hpp>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>

namespace asyncfutex {

namespace detail {

/// Sets `ec` from a C return value; returns it, or 0 on error.
inline int result(int rc, std::error_code &ec) noexcept
{
    if (rc < 0) {
        ec = make_error(rc);
        return 0;
    }
    ec.clear();
    return rc;
}

/// A handle from a C `_open` (NULL + errno on failure) as a unique_ptr.
template <class Handle, class Closer> std::unique_ptr<Handle, Closer> opened(Handle *h, std::error_code &ec) noexcept
{
    ec = h ? std::error_code() : make_error(errno);
    return std::unique_ptr<Handle, Closer>(h);
}

struct mutex_closer {
    void operator()(afx_mutex_t *m) const noexcept { afx_mutex_close(m); }
};
struct sem_closer {
    void operator()(afx_sem_t *s) const noexcept { afx_sem_close(s); }
};
struct event_closer {
    void operator()(afx_event_t *e) const noexcept { afx_event_close(e); }
};
struct chan_closer {
    void operator()(afx_chan_t *c) const noexcept { afx_chan_close(c); }
};

/// Runs a noexcept (..., ec) form and throws what it reported.
template <class F> auto throwing(const char *what, F &&f)
{
    std::error_code ec;
    if constexpr (std::is_void_v<decltype(f(ec))>) {
        f(ec);
        if (ec)
            throw_error(ec, what);
    } else {
        auto r = f(ec);
        if (ec)
            throw_error(ec, what);
        return r;
    }
}

} // namespace detail

// ---------------------------------------------------------------------------
// Mutex

/// A handle on a robust cross-process mutex (wraps `afx_mutex_t *`). It is
/// Lockable and TimedLockable: std::lock_guard, std::unique_lock and
/// std::scoped_lock work with it.
///
/// The lock belongs to the process (any of its threads may unlock it).
/// Robust: if the holder dies, the next lock succeeds with owner_died()
/// true — the data it protects may be half-updated: repair it, then call
/// consistent() before unlock(). Unlocking without consistent() makes the
/// mutex not recoverable: every later lock fails with ENOTRECOVERABLE
/// (std::errc::state_not_recoverable), as with pthread robust mutexes.
class Mutex {
  public:
    using state_type = afx_mutex_state;

    /// An empty handle (every operation fails with EINVAL).
    Mutex() noexcept = default;

    /// Opens a handle on an initialised state (afx_mutex_open). Throws
    /// EINVAL (NULL or misaligned), EFAULT (unmapped), EPROTO (not
    /// initialised), EMFILE, or why the backend cannot start.
    explicit Mutex(state_type *state)
        : Mutex(detail::throwing("afx_mutex_open", [&](std::error_code &ec) { return Mutex(state, ec); }))
    {
    }

    /// As above, without exceptions: on failure `ec` is set and the handle
    /// is empty.
    Mutex(state_type *state, std::error_code &ec) noexcept
        : handle_(detail::opened<afx_mutex_t, detail::mutex_closer>(afx_mutex_open(state), ec))
    {
    }

    Mutex(Mutex &&other) noexcept
        : handle_(std::move(other.handle_)), owner_died_(std::exchange(other.owner_died_, false))
    {
    }

    Mutex &operator=(Mutex &&other) noexcept
    {
        handle_ = std::move(other.handle_);
        owner_died_ = std::exchange(other.owner_died_, false);
        return *this;
    }

    /// Closes the handle (afx_mutex_close): a lock this process holds stays
    /// held; a pending async lock is abandoned.
    ~Mutex() = default;

    /// Initialises (unlocked, consistent) a state; only while no process
    /// uses it. Throws EINVAL for NULL/misaligned.
    static void init(state_type *state)
    {
        detail::throwing("afx_mutex_init", [&](std::error_code &ec) { init(state, ec); });
    }

    static void init(state_type *state, std::error_code &ec) noexcept
    {
        detail::result(afx_mutex_init(state), ec);
    }

    /// init() then open.
    static Mutex create(state_type *state)
    {
        init(state);
        return Mutex(state);
    }

    static Mutex create(state_type *state, std::error_code &ec) noexcept
    {
        init(state, ec);
        return ec ? Mutex() : Mutex(state, ec);
    }

    void reset() noexcept
    {
        handle_.reset();
        owner_died_ = false;
    }

    [[nodiscard]] afx_mutex_t *native_handle() const noexcept { return handle_.get(); }
    explicit operator bool() const noexcept { return handle_ != nullptr; }

    /// Blocks until this process holds the lock. If the previous holder
    /// died holding it, the lock is held and owner_died() is true. Throws
    /// ENOTRECOVERABLE, EINVAL.
    void lock()
    {
        detail::throwing("afx_mutex_lock", [&](std::error_code &ec) { lock(ec); });
    }

    void lock(std::error_code &ec) noexcept { acquired(afx_mutex_lock(native_handle(), -1), ec); }

    /// Locks if free (or if its holder died: then owner_died()). false if
    /// another process holds it.
    bool try_lock()
    {
        return detail::throwing("afx_mutex_trylock", [&](std::error_code &ec) { return try_lock(ec); });
    }

    bool try_lock(std::error_code &ec) noexcept
    {
        const int rc = afx_mutex_trylock(native_handle());
        if (rc == -EBUSY) {
            ec.clear();
            return false;
        }
        return acquired(rc, ec);
    }

    /// Locks, blocking at most `timeout`; false when it expired.
    template <class Rep, class Period> bool try_lock_for(const std::chrono::duration<Rep, Period> &timeout)
    {
        return detail::throwing("afx_mutex_lock",
                                [&](std::error_code &ec) { return try_lock_for(timeout, ec); });
    }

    template <class Rep, class Period>
    bool try_lock_for(const std::chrono::duration<Rep, Period> &timeout, std::error_code &ec) noexcept
    {
        const int rc = afx_mutex_lock(native_handle(), detail::timeout_ns(timeout));
        if (rc == -ETIMEDOUT) {
            ec.clear();
            return false;
        }
        return acquired(rc, ec);
    }

    template <class Clock, class Duration> bool try_lock_until(const std::chrono::time_point<Clock, Duration> &deadline)
    {
        return try_lock_for(deadline - Clock::now());
    }

    template <class Clock, class Duration>
    bool try_lock_until(const std::chrono::time_point<Clock, Duration> &deadline, std::error_code &ec) noexcept
    {
        return try_lock_for(deadline - Clock::now(), ec);
    }

    /// Unlocks. Throws EPERM if this process does not hold it.
    void unlock()
    {
        detail::throwing("afx_mutex_unlock", [&](std::error_code &ec) { unlock(ec); });
    }

    void unlock(std::error_code &ec) noexcept
    {
        if (detail::result(afx_mutex_unlock(native_handle()), ec), !ec)
            owner_died_ = false;
    }

    /// Whether this handle's last acquisition found the previous holder
    /// dead and consistent() has not been called since (nor unlock()).
    [[nodiscard]] bool owner_died() const noexcept { return owner_died_; }

    /// Marks the protected state consistent again after an owner-died
    /// acquisition. Throws EPERM (not held by this process), EINVAL (not
    /// inconsistent).
    void consistent()
    {
        detail::throwing("afx_mutex_consistent", [&](std::error_code &ec) { consistent(ec); });
    }

    void consistent(std::error_code &ec) noexcept
    {
        if (detail::result(afx_mutex_consistent(native_handle()), ec), !ec)
            owner_died_ = false;
    }

    /// The eventfd of the handle's async lock (never read or close it).
    [[nodiscard]] int eventfd() const
    {
        return detail::check(afx_mutex_eventfd(native_handle()), "afx_mutex_eventfd");
    }

    [[nodiscard]] int eventfd(std::error_code &ec) const noexcept
    {
        return detail::result(afx_mutex_eventfd(native_handle()), ec);
    }

    /// One step of the async lock (afx_mutex_lock_async): true when locked
    /// now (check owner_died()), false when a wait is armed: poll
    /// eventfd() with a timeout of at most AFX_MUTEX_CHECK_MS and call
    /// again on readiness or timeout (asyncfutex_asio.hpp does this).
    bool lock_async_step(std::error_code &ec) noexcept
    {
        const int rc = afx_mutex_lock_async(native_handle());
        if (rc == -EAGAIN) {
            ec.clear();
            return false;
        }
        return acquired(rc, ec);
    }

    /// Abandons a pending async lock (a consumed wake is passed on).
    void cancel() { detail::check(afx_mutex_cancel(native_handle()), "afx_mutex_cancel"); }

    void cancel(std::error_code &ec) noexcept { detail::result(afx_mutex_cancel(native_handle()), ec); }

  private:
    /// A lock call's result: 0 / AFX_OWNER_DIED = held.
    bool acquired(int rc, std::error_code &ec) noexcept
    {
        if (rc < 0) {
            ec = detail::make_error(rc);
            return false;
        }
        ec.clear();
        owner_died_ = rc == AFX_OWNER_DIED;
        return true;
    }

    std::unique_ptr<afx_mutex_t, detail::mutex_closer> handle_;
    bool owner_died_ = false;
};

// ---------------------------------------------------------------------------
// Semaphore

/// A handle on a cross-process counting semaphore (wraps `afx_sem_t *`);
/// the calls mirror std::counting_semaphore.
class Semaphore {
  public:
    using state_type = afx_sem_state;

    Semaphore() noexcept = default;

    /// Opens a handle on an initialised state (afx_sem_open); errors as
    /// for Mutex.
    explicit Semaphore(state_type *state)
        : Semaphore(detail::throwing("afx_sem_open", [&](std::error_code &ec) { return Semaphore(state, ec); }))
    {
    }

    Semaphore(state_type *state, std::error_code &ec) noexcept
        : handle_(detail::opened<afx_sem_t, detail::sem_closer>(afx_sem_open(state), ec))
    {
    }

    Semaphore(Semaphore &&) noexcept = default;
    Semaphore &operator=(Semaphore &&) noexcept = default;
    /// Closes the handle, cancelling a pending async acquire.
    ~Semaphore() = default;

    /// Initialises a state with `permits`; only while no process uses it.
    static void init(state_type *state, std::uint32_t permits)
    {
        detail::throwing("afx_sem_init", [&](std::error_code &ec) { init(state, permits, ec); });
    }

    static void init(state_type *state, std::uint32_t permits, std::error_code &ec) noexcept
    {
        detail::result(afx_sem_init(state, permits), ec);
    }

    static Semaphore create(state_type *state, std::uint32_t permits)
    {
        init(state, permits);
        return Semaphore(state);
    }

    static Semaphore create(state_type *state, std::uint32_t permits, std::error_code &ec) noexcept
    {
        init(state, permits, ec);
        return ec ? Semaphore() : Semaphore(state, ec);
    }

    void reset() noexcept { handle_.reset(); }
    [[nodiscard]] afx_sem_t *native_handle() const noexcept { return handle_.get(); }
    explicit operator bool() const noexcept { return handle_ != nullptr; }

    /// Takes a permit, blocking until one is available.
    void acquire()
    {
        detail::throwing("afx_sem_acquire", [&](std::error_code &ec) { acquire(ec); });
    }

    void acquire(std::error_code &ec) noexcept { detail::result(afx_sem_acquire(native_handle(), -1), ec); }

    /// Takes a permit if one is available now.
    bool try_acquire()
    {
        return detail::throwing("afx_sem_tryacquire", [&](std::error_code &ec) { return try_acquire(ec); });
    }

    bool try_acquire(std::error_code &ec) noexcept
    {
        const int rc = afx_sem_tryacquire(native_handle());
        if (rc == -EAGAIN) {
            ec.clear();
            return false;
        }
        detail::result(rc, ec);
        return !ec;
    }

    /// Takes a permit, blocking at most `timeout`; false when it expired.
    template <class Rep, class Period> bool try_acquire_for(const std::chrono::duration<Rep, Period> &timeout)
    {
        return detail::throwing("afx_sem_acquire",
                                [&](std::error_code &ec) { return try_acquire_for(timeout, ec); });
    }

    template <class Rep, class Period>
    bool try_acquire_for(const std::chrono::duration<Rep, Period> &timeout, std::error_code &ec) noexcept
    {
        const int rc = afx_sem_acquire(native_handle(), detail::timeout_ns(timeout));
        if (rc == -ETIMEDOUT) {
            ec.clear();
            return false;
        }
        detail::result(rc, ec);
        return !ec;
    }

    template <class Clock, class Duration>
    bool try_acquire_until(const std::chrono::time_point<Clock, Duration> &deadline)
    {
        return try_acquire_for(deadline - Clock::now());
    }

    template <class Clock, class Duration>
    bool try_acquire_until(const std::chrono::time_point<Clock, Duration> &deadline, std::error_code &ec) noexcept
    {
        return try_acquire_for(deadline - Clock::now(), ec);
    }

    /// Adds `n` permits, waking up to `n` waiters. Throws EOVERFLOW.
    void release(std::uint32_t n = 1)
    {
        detail::throwing("afx_sem_release", [&](std::error_code &ec) { release(n, ec); });
    }

    void release(std::uint32_t n, std::error_code &ec) noexcept
    {
        detail::result(afx_sem_release(native_handle(), n), ec);
    }

    /// Permits available now (clamped to INT_MAX).
    [[nodiscard]] std::uint32_t value() const
    {
        return static_cast<std::uint32_t>(detail::check(afx_sem_value(native_handle()), "afx_sem_value"));
    }

    [[nodiscard]] std::uint32_t value(std::error_code &ec) const noexcept
    {
        return static_cast<std::uint32_t>(detail::result(afx_sem_value(native_handle()), ec));
    }

    [[nodiscard]] int eventfd() const
    {
        return detail::check(afx_sem_eventfd(native_handle()), "afx_sem_eventfd");
    }

    [[nodiscard]] int eventfd(std::error_code &ec) const noexcept
    {
        return detail::result(afx_sem_eventfd(native_handle()), ec);
    }

    /// One step of the async acquire (afx_sem_acquire_async): true when a
    /// permit was taken now, false when a wait is armed (the handle counts
    /// as a waiter until it completes or cancel()): poll eventfd() and call
    /// again.
    bool acquire_async_step(std::error_code &ec) noexcept
    {
        const int rc = afx_sem_acquire_async(native_handle());
        if (rc == -EAGAIN) {
            ec.clear();
            return false;
        }
        detail::result(rc, ec);
        return !ec;
    }

    /// Abandons a pending async acquire (a consumed wake is passed on).
    void cancel() { detail::check(afx_sem_cancel(native_handle()), "afx_sem_cancel"); }

    void cancel(std::error_code &ec) noexcept { detail::result(afx_sem_cancel(native_handle()), ec); }

  private:
    std::unique_ptr<afx_sem_t, detail::sem_closer> handle_;
};

// ---------------------------------------------------------------------------
// EventCount

/// A handle on a cross-process event count (wraps `afx_event_t *`): a
/// 31-bit sequence number that publish() bumps, waking every waiter.
/// Waiters remember the last seq they saw and wait for it to change, so no
/// publication between two waits is missed.
class EventCount {
  public:
    using state_type = afx_event_state;

    EventCount() noexcept = default;

    explicit EventCount(state_type *state)
        : EventCount(
              detail::throwing("afx_event_open", [&](std::error_code &ec) { return EventCount(state, ec); }))
    {
    }

    EventCount(state_type *state, std::error_code &ec) noexcept
        : handle_(detail::opened<afx_event_t, detail::event_closer>(afx_event_open(state), ec))
    {
    }

    EventCount(EventCount &&) noexcept = default;
    EventCount &operator=(EventCount &&) noexcept = default;
    ~EventCount() = default;

    /// Initialises a state (seq 0).
    static void init(state_type *state)
    {
        detail::throwing("afx_event_init", [&](std::error_code &ec) { init(state, ec); });
    }

    static void init(state_type *state, std::error_code &ec) noexcept
    {
        detail::result(afx_event_init(state), ec);
    }

    static EventCount create(state_type *state)
    {
        init(state);
        return EventCount(state);
    }

    static EventCount create(state_type *state, std::error_code &ec) noexcept
    {
        init(state, ec);
        return ec ? EventCount() : EventCount(state, ec);
    }

    void reset() noexcept { handle_.reset(); }
    [[nodiscard]] afx_event_t *native_handle() const noexcept { return handle_.get(); }
    explicit operator bool() const noexcept { return handle_ != nullptr; }

    /// Bumps seq and wakes every waiter; returns the new seq.
    std::uint32_t publish()
    {
        return static_cast<std::uint32_t>(detail::check(afx_event_publish(native_handle()), "afx_event_publish"));
    }

    std::uint32_t publish(std::error_code &ec) noexcept
    {
        return static_cast<std::uint32_t>(detail::result(afx_event_publish(native_handle()), ec));
    }

    /// The current seq.
    [[nodiscard]] std::uint32_t seq() const
    {
        return static_cast<std::uint32_t>(detail::check(afx_event_seq(native_handle()), "afx_event_seq"));
    }

    [[nodiscard]] std::uint32_t seq(std::error_code &ec) const noexcept
    {
        return static_cast<std::uint32_t>(detail::result(afx_event_seq(native_handle()), ec));
    }

    /// Blocks until seq differs from `last_seen`; returns the new seq.
    std::uint32_t wait(std::uint32_t last_seen)
    {
        return detail::throwing("afx_event_wait", [&](std::error_code &ec) { return wait(last_seen, ec); });
    }

    std::uint32_t wait(std::uint32_t last_seen, std::error_code &ec) noexcept
    {
        return static_cast<std::uint32_t>(detail::result(afx_event_wait(native_handle(), last_seen, -1), ec));
    }

    /// wait(), for at most `timeout`: the new seq, or std::nullopt when it
    /// expired.
    template <class Rep, class Period>
    std::optional<std::uint32_t> wait_for(std::uint32_t last_seen, const std::chrono::duration<Rep, Period> &timeout)
    {
        return detail::throwing("afx_event_wait",
                                [&](std::error_code &ec) { return wait_for(last_seen, timeout, ec); });
    }

    template <class Rep, class Period>
    std::optional<std::uint32_t> wait_for(std::uint32_t last_seen, const std::chrono::duration<Rep, Period> &timeout,
                                          std::error_code &ec) noexcept
    {
        const int rc = afx_event_wait(native_handle(), last_seen, detail::timeout_ns(timeout));
        if (rc == -ETIMEDOUT) {
            ec.clear();
            return std::nullopt;
        }
        detail::result(rc, ec);
        if (ec)
            return std::nullopt;
        return static_cast<std::uint32_t>(rc);
    }

    template <class Clock, class Duration>
    std::optional<std::uint32_t> wait_until(std::uint32_t last_seen,
                                            const std::chrono::time_point<Clock, Duration> &deadline)
    {
        return wait_for(last_seen, deadline - Clock::now());
    }

    template <class Clock, class Duration>
    std::optional<std::uint32_t> wait_until(std::uint32_t last_seen,
                                            const std::chrono::time_point<Clock, Duration> &deadline,
                                            std::error_code &ec) noexcept
    {
        return wait_for(last_seen, deadline - Clock::now(), ec);
    }

    [[nodiscard]] int eventfd() const
    {
        return detail::check(afx_event_eventfd(native_handle()), "afx_event_eventfd");
    }

    [[nodiscard]] int eventfd(std::error_code &ec) const noexcept
    {
        return detail::result(afx_event_eventfd(native_handle()), ec);
    }

    /// One step of the async wait (afx_event_wait_async): the new seq if it
    /// differs from `last_seen`, std::nullopt when a wait is armed: poll
    /// eventfd() and call again.
    std::optional<std::uint32_t> wait_async_step(std::uint32_t last_seen, std::error_code &ec) noexcept
    {
        const int rc = afx_event_wait_async(native_handle(), last_seen);
        if (rc == -EAGAIN) {
            ec.clear();
            return std::nullopt;
        }
        detail::result(rc, ec);
        if (ec)
            return std::nullopt;
        return static_cast<std::uint32_t>(rc);
    }

    void cancel() { detail::check(afx_event_cancel(native_handle()), "afx_event_cancel"); }

    void cancel(std::error_code &ec) noexcept { detail::result(afx_event_cancel(native_handle()), ec); }

  private:
    std::unique_ptr<afx_event_t, detail::event_closer> handle_;
};

// ---------------------------------------------------------------------------
// Channel

/// The shared part of a single-producer single-consumer channel of frames
/// (up to `frame_size` bytes each, `capacity` of them queued, a power of
/// two): an afx_chan_header followed by the ring, size() bytes in all,
/// 64-aligned, in memory both processes map. Open its ends with Sender and
/// Receiver (one of each at a time).
struct Channel {
    using header_type = afx_chan_header;

    /// Bytes the channel needs, header included; 0 for invalid parameters.
    static std::size_t size(std::uint32_t frame_size, std::uint32_t capacity) noexcept
    {
        return static_cast<std::size_t>(afx_chan_size(frame_size, capacity));
    }

    /// Initialises a channel at `header` (size() bytes, 64-aligned); only
    /// while no process uses it. Throws EINVAL.
    static void init(header_type *header, std::uint32_t frame_size, std::uint32_t capacity)
    {
        detail::throwing("afx_chan_init", [&](std::error_code &ec) { init(header, frame_size, capacity, ec); });
    }

    static void init(header_type *header, std::uint32_t frame_size, std::uint32_t capacity,
                     std::error_code &ec) noexcept
    {
        detail::result(afx_chan_init(header, frame_size, capacity), ec);
    }
};

namespace detail {

/// The common part of Sender and Receiver.
class chan_end {
  public:
    chan_end() noexcept = default;
    chan_end(afx_chan_header *header, int role, std::error_code &ec) noexcept
        : handle_(opened<afx_chan_t, chan_closer>(afx_chan_open(header, role), ec))
    {
    }

    void reset() noexcept { handle_.reset(); }
    [[nodiscard]] afx_chan_t *native_handle() const noexcept { return handle_.get(); }
    explicit operator bool() const noexcept { return handle_ != nullptr; }

    /// The eventfd of the handle's async send/receive.
    [[nodiscard]] int eventfd() const
    {
        return check(afx_chan_eventfd(native_handle()), "afx_chan_eventfd");
    }

    [[nodiscard]] int eventfd(std::error_code &ec) const noexcept
    {
        return result(afx_chan_eventfd(native_handle()), ec);
    }

    /// Abandons a pending async send/receive.
    void cancel() { check(afx_chan_cancel(native_handle()), "afx_chan_cancel"); }

    void cancel(std::error_code &ec) noexcept { result(afx_chan_cancel(native_handle()), ec); }

  private:
    std::unique_ptr<afx_chan_t, chan_closer> handle_;
};

/// A frame length for the C API: one beyond its range can only be too
/// long (EMSGSIZE).
inline bool frame_len(std::size_t len, std::uint32_t &out, std::error_code &ec) noexcept
{
    if (len > UINT32_MAX) {
        ec = make_error(EMSGSIZE);
        return false;
    }
    out = static_cast<std::uint32_t>(len);
    return true;
}

/// A receive buffer's capacity for the C API (a larger one is just large).
inline std::uint32_t frame_cap(std::size_t cap) noexcept
{
    return cap > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(cap);
}

} // namespace detail

/// The one sending end of a Channel (afx_chan_open(AFX_CHAN_SENDER)).
class Sender : public detail::chan_end {
  public:
    Sender() noexcept = default;

    /// Opens the sending end. Throws EINVAL, EFAULT, EPROTO (not
    /// initialised), EMFILE, or why the backend cannot start.
    explicit Sender(afx_chan_header *header)
        : Sender(detail::throwing("afx_chan_open", [&](std::error_code &ec) { return Sender(header, ec); }))
    {
    }

    Sender(afx_chan_header *header, std::error_code &ec) noexcept : chan_end(header, AFX_CHAN_SENDER, ec) {}

    /// Sends a frame of `len` bytes, blocking while the ring is full.
    /// Throws EMSGSIZE (longer than the frame size).
    void send(const void *data, std::size_t len)
    {
        detail::throwing("afx_chan_send", [&](std::error_code &ec) { send(data, len, ec); });
    }

    void send(const void *data, std::size_t len, std::error_code &ec) noexcept
    {
        std::uint32_t n = 0;
        if (detail::frame_len(len, n, ec))
            detail::result(afx_chan_send(native_handle(), data, n, -1), ec);
    }

    /// Sends if there is room now: false when the ring is full.
    bool try_send(const void *data, std::size_t len)
    {
        return detail::throwing("afx_chan_try_send",
                                [&](std::error_code &ec) { return try_send(data, len, ec); });
    }

    bool try_send(const void *data, std::size_t len, std::error_code &ec) noexcept
    {
        std::uint32_t n = 0;
        if (!detail::frame_len(len, n, ec))
            return false;
        return sent(afx_chan_try_send(native_handle(), data, n), -EAGAIN, ec);
    }

    /// send(), blocking at most `timeout`: false when it expired.
    template <class Rep, class Period>
    bool send_for(const void *data, std::size_t len, const std::chrono::duration<Rep, Period> &timeout)
    {
        return detail::throwing("afx_chan_send",
                                [&](std::error_code &ec) { return send_for(data, len, timeout, ec); });
    }

    template <class Rep, class Period>
    bool send_for(const void *data, std::size_t len, const std::chrono::duration<Rep, Period> &timeout,
                  std::error_code &ec) noexcept
    {
        std::uint32_t n = 0;
        if (!detail::frame_len(len, n, ec))
            return false;
        return sent(afx_chan_send(native_handle(), data, n, detail::timeout_ns(timeout)), -ETIMEDOUT, ec);
    }

    template <class Clock, class Duration>
    bool send_until(const void *data, std::size_t len, const std::chrono::time_point<Clock, Duration> &deadline)
    {
        return send_for(data, len, deadline - Clock::now());
    }

    template <class Clock, class Duration>
    bool send_until(const void *data, std::size_t len, const std::chrono::time_point<Clock, Duration> &deadline,
                    std::error_code &ec) noexcept
    {
        return send_for(data, len, deadline - Clock::now(), ec);
    }

    /// One step of the async send (afx_chan_send_async): true when sent
    /// now, false when the ring is full and a wait is armed: poll eventfd()
    /// and call again with the same frame.
    bool send_async_step(const void *data, std::size_t len, std::error_code &ec) noexcept
    {
        std::uint32_t n = 0;
        if (!detail::frame_len(len, n, ec))
            return false;
        return sent(afx_chan_send_async(native_handle(), data, n), -EAGAIN, ec);
    }

  private:
    static bool sent(int rc, int not_now, std::error_code &ec) noexcept
    {
        if (rc == not_now) {
            ec.clear();
            return false;
        }
        detail::result(rc, ec);
        return !ec;
    }
};

/// The one receiving end of a Channel (afx_chan_open(AFX_CHAN_RECEIVER)).
class Receiver : public detail::chan_end {
  public:
    Receiver() noexcept = default;

    explicit Receiver(afx_chan_header *header)
        : Receiver(detail::throwing("afx_chan_open", [&](std::error_code &ec) { return Receiver(header, ec); }))
    {
    }

    Receiver(afx_chan_header *header, std::error_code &ec) noexcept : chan_end(header, AFX_CHAN_RECEIVER, ec) {}

    /// Receives a frame into `buf` (`cap` bytes), blocking while the ring
    /// is empty; returns its length. Throws EMSGSIZE (`cap` too small: the
    /// frame stays queued), EPROTO (a corrupt frame length).
    std::size_t recv(void *buf, std::size_t cap)
    {
        return detail::throwing("afx_chan_recv", [&](std::error_code &ec) { return recv(buf, cap, ec); });
    }

    std::size_t recv(void *buf, std::size_t cap, std::error_code &ec) noexcept
    {
        return static_cast<std::size_t>(
            detail::result(afx_chan_recv(native_handle(), buf, detail::frame_cap(cap), -1), ec));
    }

    /// Receives a frame if one is queued: its length, or std::nullopt.
    std::optional<std::size_t> try_recv(void *buf, std::size_t cap)
    {
        return detail::throwing("afx_chan_try_recv",
                                [&](std::error_code &ec) { return try_recv(buf, cap, ec); });
    }

    std::optional<std::size_t> try_recv(void *buf, std::size_t cap, std::error_code &ec) noexcept
    {
        return received(afx_chan_try_recv(native_handle(), buf, detail::frame_cap(cap)), -EAGAIN, ec);
    }

    /// recv(), blocking at most `timeout`: std::nullopt when it expired.
    template <class Rep, class Period>
    std::optional<std::size_t> recv_for(void *buf, std::size_t cap, const std::chrono::duration<Rep, Period> &timeout)
    {
        return detail::throwing("afx_chan_recv",
                                [&](std::error_code &ec) { return recv_for(buf, cap, timeout, ec); });
    }

    template <class Rep, class Period>
    std::optional<std::size_t> recv_for(void *buf, std::size_t cap, const std::chrono::duration<Rep, Period> &timeout,
                                        std::error_code &ec) noexcept
    {
        return received(afx_chan_recv(native_handle(), buf, detail::frame_cap(cap), detail::timeout_ns(timeout)),
                        -ETIMEDOUT, ec);
    }

    template <class Clock, class Duration>
    std::optional<std::size_t> recv_until(void *buf, std::size_t cap,
                                          const std::chrono::time_point<Clock, Duration> &deadline)
    {
        return recv_for(buf, cap, deadline - Clock::now());
    }

    template <class Clock, class Duration>
    std::optional<std::size_t> recv_until(void *buf, std::size_t cap,
                                          const std::chrono::time_point<Clock, Duration> &deadline,
                                          std::error_code &ec) noexcept
    {
        return recv_for(buf, cap, deadline - Clock::now(), ec);
    }

    /// One step of the async receive (afx_chan_recv_async): the frame's
    /// length when one was received now, std::nullopt when the ring is
    /// empty and a wait is armed: poll eventfd() and call again.
    std::optional<std::size_t> recv_async_step(void *buf, std::size_t cap, std::error_code &ec) noexcept
    {
        return received(afx_chan_recv_async(native_handle(), buf, detail::frame_cap(cap)), -EAGAIN, ec);
    }

  private:
    static std::optional<std::size_t> received(int rc, int not_now, std::error_code &ec) noexcept
    {
        if (rc == not_now) {
            ec.clear();
            return std::nullopt;
        }
        detail::result(rc, ec);
        if (ec)
            return std::nullopt;
        return static_cast<std::size_t>(rc);
    }
};

} // namespace asyncfutex

#endif // ASYNCFUTEX_SYNC_HPP
