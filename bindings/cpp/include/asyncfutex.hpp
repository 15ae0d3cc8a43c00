// asyncfutex.hpp — header-only C++17 wrapper over the asyncfutex C API.
//
//   #include <asyncfutex.hpp>     // needs include/asyncfutex.h on the path
//   link with -lasyncfutex
//
// asyncfutex::Futex is a move-only RAII handle on one 32-bit futex word
// (usually in MAP_SHARED memory that another process also maps). Every
// throwing call throws std::system_error with std::generic_category() and
// the errno value; each has a noexcept overload taking a std::error_code&.
//
// Semantics are the C library's (see include/asyncfutex.h): a completed
// wait means "re-check the word"; spurious completions are allowed; the
// eventfd is a hint, the word is the truth. One async wait per handle;
// wake() and the blocking waits may be called from any thread.
//
// The cross-process mutex, semaphore, event count and channel are in
// asyncfutex_sync.hpp (which includes this header; this one stays usable
// alone), their Asio completion in asyncfutex_asio.hpp.
//
// Waiting for any of many words (futex_waitv): build entries with
// Futex::entry(expected), then block in asyncfutex::wait_any /
// wait_any_for, or arm one handle's async wait on them with
// Futex::wait_any_async and read the index with Futex::ack_index().
#ifndef ASYNCFUTEX_HPP
#define ASYNCFUTEX_HPP

// <cstddef>/<cstdint> first: the C header's declarations use size_t and
// the fixed-width types.
#include <cstddef>
#include <cstdint>

#include <asyncfutex.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

namespace asyncfutex {

/// `wake(all)` wakes every waiter.
inline constexpr std::uint32_t all = UINT32_MAX;

/// The most entries one vector wait takes (AFX_WAITV_MAX); more, or none,
/// is EINVAL.
inline constexpr std::size_t wait_any_max = AFX_WAITV_MAX;

/// One entry of a vector wait (the C `afx_wait_entry`): the word, the value
/// it must hold for the wait to sleep, its key (0 or AFX_PRIVATE). Make
/// them with Futex::entry(expected).
using wait_entry = afx_wait_entry;

/// A view of contiguous wait entries (a C++17 stand-in for
/// std::span<const wait_entry>), the parameter of the vector waits: pass a
/// std::vector, std::array or C array of wait_entry, a braced list, or a
/// pointer and a count. It does not own them, and the calls read them
/// only while they run. (Made from a braced list it is only valid as a
/// call's argument, like any view of an initializer_list.)
class wait_entries {
  public:
    constexpr wait_entries(const wait_entry *data, std::size_t size) noexcept : data_(data), size_(size) {}

    // Like C++26's std::span(std::initializer_list): the list's array
    // lives until the end of the caller's full-expression, the call.
    // (Assigned, not member-initialized: GCC's -Winit-list-lifetime warns
    // about the latter even though this view never outlives the call.)
    wait_entries(std::initializer_list<wait_entry> list) noexcept
    {
        data_ = list.begin();
        size_ = list.size();
    }

    template <class Container,
              class = std::enable_if_t<std::is_convertible_v<decltype(std::data(std::declval<const Container &>())),
                                                             const wait_entry *>>>
    wait_entries(const Container &entries) noexcept : data_(std::data(entries)), size_(std::size(entries))
    {
    }

    [[nodiscard]] constexpr const wait_entry *data() const noexcept { return data_; }
    [[nodiscard]] constexpr std::size_t size() const noexcept { return size_; }

  private:
    const wait_entry *data_ = nullptr;
    std::size_t size_ = 0;
};

/// How a timed wait ended.
enum class wait_status {
    /// Woken, the word did not hold `expected`, or a signal handler ran
    /// (EINTR): re-check the word. Like std::cv_status::no_timeout.
    woken,
    /// The timeout expired.
    timeout,
};

/// The backends (values of AFX_BACKEND_*).
enum class backend_kind : int {
    automatic = AFX_BACKEND_AUTO,
    io_uring = AFX_BACKEND_IO_URING,
    thread = AFX_BACKEND_THREAD,
};

namespace detail {

/// `-errno` (or a positive errno) as a std::error_code.
inline std::error_code make_error(int err) noexcept
{
    return std::error_code(err < 0 ? -err : err, std::generic_category());
}

[[noreturn]] inline void throw_error(std::error_code ec, const char *what)
{
    throw std::system_error(ec, what);
}

/// Throws for a negative C return value; returns it otherwise.
inline int check(int rc, const char *what)
{
    if (rc < 0)
        throw_error(make_error(rc), what);
    return rc;
}

/// A relative timeout in nanoseconds for afx_wait: rounded up, negative
/// clamped to 0 ("only check the word"), anything beyond int64 nanoseconds
/// (about 292 years) is "forever" (-1).
template <class Rep, class Period>
std::int64_t timeout_ns(const std::chrono::duration<Rep, Period> &d) noexcept
{
    using namespace std::chrono;
    if (d <= d.zero())
        return 0;
    // Compare in long double so no cast can overflow.
    const duration<long double, std::nano> wide = d;
    if (wide.count() >= static_cast<long double>(std::numeric_limits<std::int64_t>::max()))
        return -1;
    return ceil<nanoseconds>(wide).count();
}

/// The entry count for the C API: more than it takes is EINVAL there
/// either way, so clamping cannot turn a bad count into a good one.
inline std::uint32_t count(std::size_t n) noexcept
{
    return n > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(n);
}

} // namespace detail

/// A move-only handle on one futex word (wraps `afx_t *`).
class Futex {
  public:
    /// An empty handle (every operation on it fails with EINVAL).
    Futex() noexcept = default;

    /// Makes a handle on `*word` (shared key; `private_word`: process-local
    /// key). The word must stay mapped for the handle's life and be
    /// accessed only atomically. Throws std::system_error: EINVAL (NULL or
    /// misaligned), EFAULT (unreadable), EMFILE, or why the backend cannot
    /// run (ENOSYS, EPERM, EOPNOTSUPP).
    explicit Futex(std::uint32_t *word, bool private_word = false)
        : Futex(word, private_word, throw_tag{})
    {
    }

    /// As above, without exceptions: on failure `ec` is set and the handle
    /// is empty (`!*this`).
    Futex(std::uint32_t *word, bool private_word, std::error_code &ec) noexcept
        : handle_(afx_new(word, private_word ? AFX_PRIVATE : 0u)), word_(handle_ ? word : nullptr),
          flags_(handle_ && private_word ? AFX_PRIVATE : 0u)
    {
        ec = handle_ ? std::error_code() : detail::make_error(errno);
    }

    Futex(const Futex &) = delete;
    Futex &operator=(const Futex &) = delete;

    Futex(Futex &&other) noexcept
        : handle_(std::exchange(other.handle_, nullptr)), word_(std::exchange(other.word_, nullptr)),
          flags_(std::exchange(other.flags_, 0u))
    {
    }

    Futex &operator=(Futex &&other) noexcept
    {
        if (this != &other) {
            reset();
            handle_ = std::exchange(other.handle_, nullptr);
            word_ = std::exchange(other.word_, nullptr);
            flags_ = std::exchange(other.flags_, 0u);
        }
        return *this;
    }

    /// Frees the handle: cancels an armed wait (forwarding a consumed wake)
    /// and returns once no kernel wait of the handle remains.
    ~Futex() { reset(); }

    /// Frees the handle now (no-op on an empty one).
    void reset() noexcept
    {
        afx_free(std::exchange(handle_, nullptr));
        word_ = nullptr;
        flags_ = 0;
    }

    /// Gives up ownership: the caller must afx_free() the result.
    [[nodiscard]] afx_t *release() noexcept
    {
        word_ = nullptr;
        flags_ = 0;
        return std::exchange(handle_, nullptr);
    }

    [[nodiscard]] afx_t *native_handle() const noexcept { return handle_; }
    [[nodiscard]] std::uint32_t *word() const noexcept { return word_; }
    /// Whether the handle uses the word's private (process-local) key.
    [[nodiscard]] bool is_private() const noexcept { return flags_ == AFX_PRIVATE; }
    explicit operator bool() const noexcept { return handle_ != nullptr; }

    /// An entry of a vector wait on this handle's word and key: that wait
    /// sleeps only while the word holds `expected`. The word must stay
    /// mapped until the wait using the entry ends. (An empty handle gives
    /// an entry with a NULL word: the wait fails with EINVAL.)
    [[nodiscard]] wait_entry entry(std::uint32_t expected) const noexcept
    {
        wait_entry e{};
        e.addr = word_;
        e.expected = expected;
        e.flags = flags_;
        return e;
    }

    /// Atomic (seq_cst) load of the word. Precondition: non-empty handle.
    [[nodiscard]] std::uint32_t load() const noexcept
    {
        return __atomic_load_n(word_, __ATOMIC_SEQ_CST);
    }

    /// Atomic (seq_cst) store to the word; wake() afterwards to publish it.
    /// Precondition: non-empty handle.
    void store(std::uint32_t value) const noexcept { __atomic_store_n(word_, value, __ATOMIC_SEQ_CST); }

    /// Wakes at most `n` waiters (any process, any kind); `all` wakes every
    /// one. Returns how many were woken.
    std::uint32_t wake(std::uint32_t n = 1) const
    {
        return static_cast<std::uint32_t>(detail::check(afx_wake(handle_, n), "afx_wake"));
    }

    std::uint32_t wake(std::uint32_t n, std::error_code &ec) const noexcept
    {
        return static_cast<std::uint32_t>(result(afx_wake(handle_, n), ec));
    }

    /// Blocks while the word holds `expected`. Returns when woken, when the
    /// word did not hold `expected`, or after a signal handler ran: re-check
    /// the word.
    void wait(std::uint32_t expected) const
    {
        const int rc = afx_wait(handle_, expected, -1);
        if (rc != -EINTR)
            detail::check(rc, "afx_wait");
    }

    void wait(std::uint32_t expected, std::error_code &ec) const noexcept
    {
        const int rc = afx_wait(handle_, expected, -1);
        result(rc == -EINTR ? 0 : rc, ec);
    }

    /// Blocks while the word holds `expected`, for at most `timeout`
    /// (rounded up to nanoseconds; <= 0 only checks the word).
    template <class Rep, class Period>
    wait_status wait_for(std::uint32_t expected, const std::chrono::duration<Rep, Period> &timeout) const
    {
        std::error_code ec;
        const wait_status status = wait_for(expected, timeout, ec);
        if (ec)
            detail::throw_error(ec, "afx_wait");
        return status;
    }

    template <class Rep, class Period>
    wait_status wait_for(std::uint32_t expected, const std::chrono::duration<Rep, Period> &timeout,
                         std::error_code &ec) const noexcept
    {
        const int rc = afx_wait(handle_, expected, detail::timeout_ns(timeout));
        if (rc == -ETIMEDOUT) {
            ec.clear();
            return wait_status::timeout;
        }
        result(rc == -EINTR ? 0 : rc, ec);
        return wait_status::woken;
    }

    /// wait_for(expected, deadline - Clock::now()).
    template <class Clock, class Duration>
    wait_status wait_until(std::uint32_t expected, const std::chrono::time_point<Clock, Duration> &deadline) const
    {
        return wait_for(expected, deadline - Clock::now());
    }

    template <class Clock, class Duration>
    wait_status wait_until(std::uint32_t expected, const std::chrono::time_point<Clock, Duration> &deadline,
                           std::error_code &ec) const noexcept
    {
        return wait_for(expected, deadline - Clock::now(), ec);
    }

    /// The eventfd to poll for readability (EPOLLIN): it becomes readable
    /// when the armed wait completes. It belongs to the handle: never read,
    /// write or close it (with Asio, release() the descriptor object before
    /// it is destroyed). The same for the handle's life.
    [[nodiscard]] int eventfd() const { return detail::check(afx_eventfd(handle_), "afx_eventfd"); }

    [[nodiscard]] int eventfd(std::error_code &ec) const noexcept { return result(afx_eventfd(handle_), ec); }

    /// Arms the async wait with exactly `expected` (the value you saw):
    /// the eventfd becomes readable when the word is woken, or at once if
    /// it does not hold `expected`. Throws EBUSY if a wait is armed and not
    /// yet acknowledged or cancelled.
    void wait_async(std::uint32_t expected)
    {
        detail::check(afx_wait_async(handle_, expected), "afx_wait_async");
    }

    void wait_async(std::uint32_t expected, std::error_code &ec) noexcept
    {
        result(afx_wait_async(handle_, expected), ec);
    }

    /// After readiness: true if the armed wait completed (disarmed, eventfd
    /// drained; re-check the word and re-arm if needed), false if it is
    /// still pending or nothing is armed. Throws the kernel's error if it
    /// refused the wait (the wait is then disarmed).
    bool ack() { return detail::check(afx_ack(handle_), "afx_ack") == 1; }

    bool ack(std::error_code &ec) noexcept { return result(afx_ack(handle_), ec) == 1; }

    /// Arms this handle's one async wait on a vector of up to
    /// `wait_any_max` entries (any words, any handles' entries, this
    /// handle's own or not): the eventfd becomes readable when one of the
    /// words is woken, or at once if one does not hold its `expected`.
    /// Then ack_index() says which entry. The entries are copied; their
    /// words must stay mapped until the wait is acknowledged, cancelled or
    /// this handle freed. Throws EINVAL (no entries, more than
    /// `wait_any_max`, a NULL or misaligned word), EFAULT, EBUSY (a wait is
    /// already armed on this handle, plain or vector), and those of
    /// wait_async(); ENOSYS where the backend cannot serve vector waits
    /// (the thread backend's per-wait mode), here or from ack_index().
    void wait_any_async(wait_entries entries)
    {
        detail::check(afx_waitv_async(handle_, entries.data(), detail::count(entries.size())), "afx_waitv_async");
    }

    void wait_any_async(wait_entries entries, std::error_code &ec) noexcept
    {
        result(afx_waitv_async(handle_, entries.data(), detail::count(entries.size())), ec);
    }

    /// ack() that also says which entry completed the wait: the index into
    /// the entries given to wait_any_async() (0 after wait_async()), or
    /// std::nullopt if the wait is still pending or nothing is armed. The
    /// entry was woken or its word did not hold its value; completions may
    /// be spurious: re-check every word, then arm again.
    std::optional<std::size_t> ack_index()
    {
        std::uint32_t index = 0;
        if (detail::check(afx_ack_index(handle_, &index), "afx_ack_index") == 1)
            return index;
        return std::nullopt;
    }

    std::optional<std::size_t> ack_index(std::error_code &ec) noexcept
    {
        std::uint32_t index = 0;
        if (result(afx_ack_index(handle_, &index), ec) == 1)
            return index;
        return std::nullopt;
    }

    /// Disarms the armed wait (plain or vector), if any; a wake it had
    /// consumed but that was not acknowledged is passed on (wake(1); for a
    /// vector wait possibly on each of its words: other waiters may see a
    /// spurious wake-up, never a lost one).
    void cancel() { detail::check(afx_cancel(handle_), "afx_cancel"); }

    void cancel(std::error_code &ec) noexcept { result(afx_cancel(handle_), ec); }

  private:
    struct throw_tag {
    };

    Futex(std::uint32_t *word, bool private_word, throw_tag)
        : handle_(afx_new(word, private_word ? AFX_PRIVATE : 0u)), word_(word),
          flags_(private_word ? AFX_PRIVATE : 0u)
    {
        if (!handle_)
            detail::throw_error(detail::make_error(errno), "afx_new");
    }

    /// Sets `ec` from a C return value; returns it, or 0 on error.
    static int result(int rc, std::error_code &ec) noexcept
    {
        if (rc < 0) {
            ec = detail::make_error(rc);
            return 0;
        }
        ec.clear();
        return rc;
    }

    afx_t *handle_ = nullptr;
    std::uint32_t *word_ = nullptr;
    std::uint32_t flags_ = 0;
};

/// Blocks while every entry's word holds its `expected` value (the check
/// and the sleep are atomic: futex_waitv(2)), until one is woken. Returns
/// the index of an entry that was woken or whose word did not hold its
/// value: re-check every word (completions may be spurious). A signal
/// handler that runs meanwhile does not end the wait. No handle's async
/// wait is used. Throws EINVAL (no entries, more than `wait_any_max`, a
/// NULL or misaligned word), EFAULT, ENOSYS/EPERM where futex_waitv is not
/// available.
inline std::size_t wait_any(wait_entries entries, std::error_code &ec) noexcept
{
    for (;;) {
        const int rc = afx_waitv(entries.data(), detail::count(entries.size()), -1);
        if (rc == -EINTR)
            continue;
        if (rc < 0) {
            ec = detail::make_error(rc);
            return 0;
        }
        ec.clear();
        return static_cast<std::size_t>(rc);
    }
}

inline std::size_t wait_any(wait_entries entries)
{
    std::error_code ec;
    const std::size_t index = wait_any(entries, ec);
    if (ec)
        detail::throw_error(ec, "afx_waitv");
    return index;
}

/// wait_any() for at most `timeout` (rounded up to nanoseconds; <= 0 only
/// checks the words, as Futex::wait_for does). std::nullopt when it
/// expired; a signal handler that runs meanwhile does not end the wait
/// early.
template <class Rep, class Period>
std::optional<std::size_t> wait_any_for(wait_entries entries, const std::chrono::duration<Rep, Period> &timeout,
                                        std::error_code &ec) noexcept
{
    using namespace std::chrono;
    const std::int64_t total = detail::timeout_ns(timeout);
    const auto start = steady_clock::now();
    std::int64_t ns = total;
    for (;;) {
        const int rc = afx_waitv(entries.data(), detail::count(entries.size()), ns);
        if (rc >= 0) {
            ec.clear();
            return static_cast<std::size_t>(rc);
        }
        if (rc == -ETIMEDOUT) {
            ec.clear();
            return std::nullopt;
        }
        if (rc != -EINTR) {
            ec = detail::make_error(rc);
            return std::nullopt;
        }
        // Interrupted: wait out the rest (forever stays forever); once the
        // time is up, one last check of the words.
        if (total > 0) {
            const std::int64_t spent = duration_cast<nanoseconds>(steady_clock::now() - start).count();
            ns = spent < total ? total - spent : 0;
        }
    }
}

template <class Rep, class Period>
std::optional<std::size_t> wait_any_for(wait_entries entries, const std::chrono::duration<Rep, Period> &timeout)
{
    std::error_code ec;
    const std::optional<std::size_t> index = wait_any_for(entries, timeout, ec);
    if (ec)
        detail::throw_error(ec, "afx_waitv");
    return index;
}

/// wait_any_for(entries, deadline - Clock::now()).
template <class Clock, class Duration>
std::optional<std::size_t> wait_any_until(wait_entries entries,
                                          const std::chrono::time_point<Clock, Duration> &deadline)
{
    return wait_any_for(entries, deadline - Clock::now());
}

template <class Clock, class Duration>
std::optional<std::size_t> wait_any_until(wait_entries entries,
                                          const std::chrono::time_point<Clock, Duration> &deadline,
                                          std::error_code &ec) noexcept
{
    return wait_any_for(entries, deadline - Clock::now(), ec);
}

/// The library version, e.g. "0.1.0".
inline std::string_view version() noexcept { return afx_version(); }

/// The backend serving async waits in this process, starting it if needed.
inline backend_kind backend()
{
    return static_cast<backend_kind>(detail::check(afx_backend(), "afx_backend"));
}

inline backend_kind backend(std::error_code &ec) noexcept
{
    const int rc = afx_backend();
    if (rc < 0) {
        ec = detail::make_error(rc);
        return backend_kind::automatic;
    }
    ec.clear();
    return static_cast<backend_kind>(rc);
}

/// The name of a backend ("io_uring", "thread", "auto").
inline std::string_view backend_name(backend_kind kind) noexcept
{
    return afx_backend_name(static_cast<int>(kind));
}

/// The name of the backend in use ("io_uring" or "thread").
inline std::string_view backend_name() { return backend_name(backend()); }

/// Chooses this process's backend before first use (overrides AFX_BACKEND).
/// Returns the backend now in use; throws EBUSY if another one already runs.
inline backend_kind select_backend(backend_kind kind)
{
    return static_cast<backend_kind>(
        detail::check(afx_select_backend(static_cast<int>(kind)), "afx_select_backend"));
}

inline backend_kind select_backend(backend_kind kind, std::error_code &ec) noexcept
{
    const int rc = afx_select_backend(static_cast<int>(kind));
    if (rc < 0) {
        ec = detail::make_error(rc);
        return backend_kind::automatic;
    }
    ec.clear();
    return static_cast<backend_kind>(rc);
}

/// The library's description of an error code (-errno or errno).
inline std::string_view strerror(int err) noexcept { return afx_strerror(err); }

} // namespace asyncfutex

#endif // ASYNCFUTEX_HPP
