// asyncfutex_asio.hpp — Asio completion for the cross-process primitives
// of asyncfutex_sync.hpp (standalone Asio >= 1.18, C++17).
//
//   #include <asyncfutex_asio.hpp>  // includes asyncfutex_sync.hpp and <asio.hpp>
//   link with -lasyncfutex
//
// Asio I/O objects that own a primitive's handle and complete its async
// operation through the handle's eventfd:
//
//   AsyncMutex      async_lock(token)          void(std::error_code, bool owner_died)
//   AsyncSemaphore  async_acquire(token)       void(std::error_code)
//   AsyncEventCount async_wait(last, token)    void(std::error_code, std::uint32_t seq)
//   AsyncSender     async_send(buffer, token)  void(std::error_code)
//   AsyncReceiver   async_recv(buffer, token)  void(std::error_code, std::size_t length)
//
// Any completion token works (callbacks, asio::use_future, use_awaitable
// with C++20 coroutines). One operation at a time per object: a second
// one completes with EBUSY. cancel() (and the object's destruction)
// abandons the pending operation, which completes with
// asio::error::operation_aborted — unless it had already succeeded (the
// lock taken, the permit taken, the frame sent or received into your
// buffer): then it completes with its result, so nothing is ever lost.
// The C cancel passes on a wake the abandoned wait had consumed, so other
// waiters lose nothing either.
//
// Threads: as for Asio's own I/O objects, use an object from one thread at
// a time. The operations run their steps on the object's executor: give
// the object a strand (asio::make_strand(io)) when the io_context runs on
// several threads, and call cancel() from that executor.
//
// The stream_descriptor on the eventfd is released, never closed (the fd
// belongs to the C handle). An AsyncMutex also re-checks every
// AFX_MUTEX_CHECK_MS while it waits, so that a holder that died is noticed.
#ifndef ASYNCFUTEX_ASIO_HPP
#define ASYNCFUTEX_ASIO_HPP

#include <asyncfutex_sync.hpp>

#include <asio.hpp>

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

/// What one async operation of an I/O object shares with its handlers.
template <class Value> struct async_op_state {
    /// cancel() or the object's destruction: complete with
    /// operation_aborted unless `finished`.
    bool cancelled = false;
    /// The object is gone: its handlers touch nothing of it.
    bool orphaned = false;
    /// The result is in (`ec`, `value`).
    bool finished = false;
    /// The completion handler was called.
    bool completed = false;
    std::error_code ec;
    Value value{};
};

/// The Asio part shared by the I/O objects: the primitive, a
/// stream_descriptor on its eventfd, a re-check timer, the pending
/// operation. `Value` is the operation's result (bool for those that
/// complete with an error code alone).
template <class Primitive, class Value> class async_object {
  public:
    using executor_type = asio::any_io_executor;

    async_object(const async_object &) = delete;
    async_object &operator=(const async_object &) = delete;

    [[nodiscard]] executor_type get_executor() noexcept { return fd_.get_executor(); }

    /// The primitive (for its blocking and try calls, unlock(), ...).
    Primitive &get() noexcept { return prim_; }
    const Primitive &get() const noexcept { return prim_; }
    Primitive *operator->() noexcept { return &prim_; }
    const Primitive *operator->() const noexcept { return &prim_; }

    /// Hands the primitive back: cancels the pending operation (as
    /// cancel()) and releases the eventfd from the reactor. The object is
    /// empty afterwards (its operations fail with EINVAL). Moving the
    /// primitive out of get() instead would leave the eventfd registered
    /// under this object's executor.
    Primitive take() noexcept
    {
        cancel();
        (void)fd_.release();
        return std::move(prim_);
    }

    /// Abandons the pending operation: it completes with
    /// operation_aborted, unless it already succeeded (then with its
    /// result). The C cancel disarms the wait and passes on a wake it had
    /// consumed.
    void cancel() noexcept
    {
        if (current_ && !current_->completed && !current_->finished) {
            current_->cancelled = true;
            std::error_code ignored;
            prim_.cancel(ignored);
        }
        stop_waits();
    }

  protected:
    async_object(const executor_type &ex, Primitive &&prim, std::chrono::milliseconds recheck)
        : prim_(std::move(prim)), fd_(ex, prim_.eventfd()), timer_(ex), recheck_(recheck)
    {
    }

    /// Cancels the pending operation (its handler runs later, touching
    /// nothing of this object), releases the eventfd, closes the handle.
    ~async_object()
    {
        if (current_ && !current_->completed)
            current_->orphaned = true;
        cancel();
        (void)fd_.release();
    }

    /// Starts an operation: `Step` has `try_now(prim, ec)` (no wait armed)
    /// and `step(prim, ec)` (the C async step), each returning the value
    /// when done, std::nullopt when not (ec set: failed).
    template <class Signature, class Step, class Token> auto start(Step step, Token &&token)
    {
        auto st = std::make_shared<async_op_state<Value>>();
        if (current_ && !current_->completed) {
            st->finished = true; // completes at once, leaving the pending one alone
            st->ec = make_error(EBUSY);
        } else {
            current_ = st;
        }
        return asio::async_compose<Token, Signature>(op<Signature, Step>{this, std::move(st), std::move(step)},
                                                     token, fd_);
    }

  private:
    void stop_waits() noexcept
    {
        std::error_code ignored;
        fd_.cancel(ignored);
        try {
            timer_.cancel();
        } catch (...) { // asio reports a failing timerfd update so; nothing to undo
        }
    }

    template <class Signature, class Step> struct op {
        async_object *obj_;
        std::shared_ptr<async_op_state<Value>> st_;
        Step step_;
        enum { start, first, waiting } phase_ = start;

        template <class Self> void operator()(Self &self, std::error_code ec = {})
        {
            // Copies: `*this` moves along with `self`.
            const std::shared_ptr<async_op_state<Value>> st = st_;
            async_object *const obj = obj_;
            if (phase_ == start) {
                // Every step runs on the object's executor, never inside
                // the initiating call.
                phase_ = first;
                asio::post(obj->get_executor(), std::move(self));
                return;
            }
            if (!st->finished) {
                if (st->cancelled)
                    return complete(self, *st, asio::error::operation_aborted);
                if (phase_ == waiting && ec && ec != asio::error::operation_aborted) {
                    // The reactor failed on the eventfd: give the wait up.
                    std::error_code ignored;
                    obj->prim_.cancel(ignored);
                    obj->stop_waits();
                    return complete(self, *st, ec);
                }
                if (phase_ == first) {
                    std::error_code e;
                    if (std::optional<Value> v = step_.try_now(obj->prim_, e); v || e)
                        return complete(self, *st, e, v ? *v : Value{});
                }
                Step step = step_;
                phase_ = waiting;
                // Wait first, then arm: Asio's reactor is edge-triggered,
                // so the wait must be queued before the eventfd can become
                // readable. Readiness, the re-check timer and our own
                // cancel all come back here.
                obj->fd_.async_wait(asio::posix::stream_descriptor::wait_read, std::move(self));
                if (obj->recheck_.count() > 0) {
                    obj->timer_.expires_after(obj->recheck_);
                    obj->timer_.async_wait([st, obj](const std::error_code &tec) {
                        if (!tec && !st->orphaned && !st->finished && !st->cancelled && !st->completed) {
                            std::error_code ignored;
                            obj->fd_.cancel(ignored); // re-check now
                        }
                    });
                }
                std::error_code e;
                if (std::optional<Value> v = step.step(obj->prim_, e); v || e) {
                    st->finished = true;
                    st->ec = e;
                    st->value = v ? *v : Value{};
                    obj->stop_waits(); // the wait completes (aborted) and delivers it
                }
                return;
            }
            complete(self, *st, st->ec, st->value);
        }

        template <class Self>
        static void complete(Self &self, async_op_state<Value> &st, std::error_code ec, Value value = Value{})
        {
            st.completed = true;
            if constexpr (std::is_same_v<Signature, void(std::error_code)>) {
                (void)value;
                self.complete(ec);
            } else {
                self.complete(ec, ec ? Value{} : value);
            }
        }
    };

    Primitive prim_;
    asio::posix::stream_descriptor fd_;
    asio::steady_timer timer_;
    std::chrono::milliseconds recheck_;
    std::shared_ptr<async_op_state<Value>> current_;
};

template <class Ctx>
using if_context = std::enable_if_t<std::is_convertible_v<Ctx &, asio::execution_context &>, int>;

} // namespace detail

/// A Mutex with Asio's async_lock. Owns the Mutex (get(), ->).
class AsyncMutex : public detail::async_object<Mutex, bool> {
  public:
    AsyncMutex(const executor_type &ex, Mutex mutex)
        : async_object(ex, std::move(mutex), std::chrono::milliseconds(AFX_MUTEX_CHECK_MS))
    {
    }

    template <class Ctx, detail::if_context<Ctx> = 0>
    AsyncMutex(Ctx &ctx, Mutex mutex) : AsyncMutex(ctx.get_executor(), std::move(mutex))
    {
    }

    /// Locks: completes with (error, owner_died) once this process holds
    /// the lock (owner_died: the previous holder died holding it; also
    /// get().owner_died(): repair, then get().consistent()). Unlock with
    /// get().unlock() (or std::unique_lock(get(), std::adopt_lock)).
    template <class Token> auto async_lock(Token &&token)
    {
        return start<void(std::error_code, bool)>(lock_step{}, std::forward<Token>(token));
    }

  private:
    struct lock_step {
        static std::optional<bool> try_now(Mutex &m, std::error_code &ec)
        {
            return m.try_lock(ec) ? std::optional<bool>(m.owner_died()) : std::nullopt;
        }
        static std::optional<bool> step(Mutex &m, std::error_code &ec)
        {
            return m.lock_async_step(ec) ? std::optional<bool>(m.owner_died()) : std::nullopt;
        }
    };
};

/// A Semaphore with Asio's async_acquire. Owns the Semaphore.
class AsyncSemaphore : public detail::async_object<Semaphore, bool> {
  public:
    AsyncSemaphore(const executor_type &ex, Semaphore sem)
        : async_object(ex, std::move(sem), std::chrono::milliseconds(0))
    {
    }

    template <class Ctx, detail::if_context<Ctx> = 0>
    AsyncSemaphore(Ctx &ctx, Semaphore sem) : AsyncSemaphore(ctx.get_executor(), std::move(sem))
    {
    }

    /// Takes a permit: completes with no error once it is taken.
    template <class Token> auto async_acquire(Token &&token)
    {
        return start<void(std::error_code)>(acquire_step{}, std::forward<Token>(token));
    }

  private:
    struct acquire_step {
        static std::optional<bool> try_now(Semaphore &s, std::error_code &ec)
        {
            return s.try_acquire(ec) ? std::optional<bool>(true) : std::nullopt;
        }
        static std::optional<bool> step(Semaphore &s, std::error_code &ec)
        {
            return s.acquire_async_step(ec) ? std::optional<bool>(true) : std::nullopt;
        }
    };
};

/// An EventCount with Asio's async_wait. Owns the EventCount.
class AsyncEventCount : public detail::async_object<EventCount, std::uint32_t> {
  public:
    AsyncEventCount(const executor_type &ex, EventCount event)
        : async_object(ex, std::move(event), std::chrono::milliseconds(0))
    {
    }

    template <class Ctx, detail::if_context<Ctx> = 0>
    AsyncEventCount(Ctx &ctx, EventCount event) : AsyncEventCount(ctx.get_executor(), std::move(event))
    {
    }

    /// Waits for seq to differ from `last_seen`: completes with the new
    /// seq.
    template <class Token> auto async_wait(std::uint32_t last_seen, Token &&token)
    {
        return start<void(std::error_code, std::uint32_t)>(wait_step{last_seen}, std::forward<Token>(token));
    }

  private:
    struct wait_step {
        std::uint32_t last_seen;
        std::optional<std::uint32_t> try_now(EventCount &e, std::error_code &ec) const
        {
            const std::uint32_t seq = e.seq(ec);
            return !ec && seq != last_seen ? std::optional<std::uint32_t>(seq) : std::nullopt;
        }
        std::optional<std::uint32_t> step(EventCount &e, std::error_code &ec) const
        {
            return e.wait_async_step(last_seen, ec);
        }
    };
};

/// A channel Sender with Asio's async_send. Owns the Sender.
class AsyncSender : public detail::async_object<Sender, bool> {
  public:
    AsyncSender(const executor_type &ex, Sender tx) : async_object(ex, std::move(tx), std::chrono::milliseconds(0))
    {
    }

    template <class Ctx, detail::if_context<Ctx> = 0>
    AsyncSender(Ctx &ctx, Sender tx) : AsyncSender(ctx.get_executor(), std::move(tx))
    {
    }

    /// Sends `frame` (it must stay valid until completion), waiting while
    /// the ring is full. EMSGSIZE if longer than the frame size.
    template <class Token> auto async_send(asio::const_buffer frame, Token &&token)
    {
        return start<void(std::error_code)>(send_step{frame.data(), frame.size()}, std::forward<Token>(token));
    }

  private:
    struct send_step {
        const void *data;
        std::size_t len;
        std::optional<bool> try_now(Sender &tx, std::error_code &ec) const
        {
            return tx.try_send(data, len, ec) ? std::optional<bool>(true) : std::nullopt;
        }
        std::optional<bool> step(Sender &tx, std::error_code &ec) const
        {
            return tx.send_async_step(data, len, ec) ? std::optional<bool>(true) : std::nullopt;
        }
    };
};

/// A channel Receiver with Asio's async_recv. Owns the Receiver.
class AsyncReceiver : public detail::async_object<Receiver, std::size_t> {
  public:
    AsyncReceiver(const executor_type &ex, Receiver rx)
        : async_object(ex, std::move(rx), std::chrono::milliseconds(0))
    {
    }

    template <class Ctx, detail::if_context<Ctx> = 0>
    AsyncReceiver(Ctx &ctx, Receiver rx) : AsyncReceiver(ctx.get_executor(), std::move(rx))
    {
    }

    /// Receives the next frame into `buffer` (valid until completion),
    /// waiting while the ring is empty: completes with its length.
    /// EMSGSIZE if the buffer is too small (the frame stays queued).
    template <class Token> auto async_recv(asio::mutable_buffer buffer, Token &&token)
    {
        return start<void(std::error_code, std::size_t)>(recv_step{buffer.data(), buffer.size()},
                                                          std::forward<Token>(token));
    }

  private:
    struct recv_step {
        void *data;
        std::size_t cap;
        std::optional<std::size_t> try_now(Receiver &rx, std::error_code &ec) const
        {
            return rx.try_recv(data, cap, ec);
        }
        std::optional<std::size_t> step(Receiver &rx, std::error_code &ec) const
        {
            return rx.recv_async_step(data, cap, ec);
        }
    };
};

} // namespace asyncfutex

#endif // ASYNCFUTEX_ASIO_HPP
