// asio_wait.cpp — await a futex word from an Asio event loop, woken by
// another process.
//
// The parent and a forked child share one 32-bit word in MAP_SHARED memory
// and play ping-pong on it: the parent stores an odd value and wakes, the
// child (a plain blocking waiter) answers with the next even value and
// wakes; the parent waits for that answer asynchronously with
// asio::posix::stream_descriptor::async_wait on the handle's eventfd.
//
//   g++ -std=c++17 -Wall -Wextra -Werror -Ibindings/cpp/include -Iinclude
//       bindings/cpp/examples/asio_wait.cpp -Ltarget/debug -lasyncfutex
//       -Wl,-rpath,$PWD/target/debug -pthread -o asio_wait
//   ./asio_wait [rounds]
#include <asyncfutex.hpp>

#include <asio.hpp>

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>

namespace {

using asyncfutex::Futex;

/// The parent's side: each round stores an odd value, wakes, and awaits the
/// child's even answer through Asio.
class Pinger {
  public:
    Pinger(asio::io_context &io, Futex &futex, std::uint32_t rounds)
        : futex_(futex), fd_(io, futex.eventfd()), rounds_(rounds)
    {
    }

    // The eventfd belongs to the futex handle: give it back to the handle
    // instead of letting Asio close it.
    ~Pinger() { (void)fd_.release(); }

    void start() { next_round(); }
    bool done() const { return round_ == rounds_; }

  private:
    void next_round()
    {
        if (done())
            return;
        futex_.store(2 * round_ + 1); // publish first,
        futex_.wake(asyncfutex::all); // then wake
        await_value(2 * round_ + 2);
    }

    // Completes the round once the word holds `target`.
    void await_value(std::uint32_t target)
    {
        const std::uint32_t seen = futex_.load();
        if (seen == target) {
            ++round_;
            next_round();
            return;
        }
        // Start the Asio wait, then arm the futex wait with the value we saw
        // (a store + wake in between is not lost: the kernel checks `seen`).
        fd_.async_wait(asio::posix::stream_descriptor::wait_read,
                       [this, target](const asio::error_code &ec) { on_ready(ec, target); });
        futex_.wait_async(seen);
    }

    void on_ready(const asio::error_code &ec, std::uint32_t target)
    {
        if (ec)
            throw asio::system_error(ec, "async_wait");
        if (!futex_.ack()) {
            // Readiness without a completion: the wait is still armed.
            fd_.async_wait(asio::posix::stream_descriptor::wait_read,
                           [this, target](const asio::error_code &e) { on_ready(e, target); });
            return;
        }
        await_value(target); // completed: re-check the word
    }

    Futex &futex_;
    asio::posix::stream_descriptor fd_;
    std::uint32_t rounds_;
    std::uint32_t round_ = 0;
};

/// The child's side: a plain blocking waiter on its own handle.
int ponger(std::uint32_t *word, std::uint32_t rounds)
{
    Futex futex(word); // a new handle in the child
    for (std::uint32_t i = 0; i < rounds; ++i) {
        for (std::uint32_t seen; (seen = futex.load()) != 2 * i + 1;) {
            if (futex.wait_for(seen, std::chrono::seconds(10)) == asyncfutex::wait_status::timeout) {
                std::fprintf(stderr, "child: no ping %u within 10 s\n", i);
                return 1;
            }
        }
        futex.store(2 * i + 2);
        futex.wake(asyncfutex::all);
    }
    return 0;
}

} // namespace

int main(int argc, char **argv)
{
    const std::uint32_t rounds = argc > 1 ? static_cast<std::uint32_t>(std::strtoul(argv[1], nullptr, 10)) : 200;
    alarm(60); // a watchdog: a stuck example dies instead of hanging CI
    try {
        void *mem = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            throw std::system_error(errno, std::generic_category(), "mmap");
        auto *word = static_cast<std::uint32_t *>(mem);

        std::fflush(stdout);
        const pid_t pid = fork();
        if (pid < 0)
            throw std::system_error(errno, std::generic_category(), "fork");
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int rc = 1;
            try {
                rc = ponger(word, rounds);
            } catch (const std::exception &e) {
                std::fprintf(stderr, "child: %s\n", e.what());
            }
            _exit(rc);
        }

        Futex futex(word);
        asio::io_context io;
        const auto start = std::chrono::steady_clock::now();
        {
            Pinger pinger(io, futex, rounds);
            pinger.start();
            io.run();
            if (!pinger.done())
                throw std::runtime_error("io_context ran out of work before the last round");
        }
        const auto elapsed = std::chrono::steady_clock::now() - start;

        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            throw std::runtime_error("the child failed");
        const double us = std::chrono::duration<double, std::micro>(elapsed).count() / (rounds ? rounds : 1);
        std::printf("PASS asio_wait: %u cross-process round trips through Asio, %.1f us each "
                    "(asyncfutex %s, backend %s)\n",
                    rounds, us, std::string(asyncfutex::version()).c_str(),
                    std::string(asyncfutex::backend_name()).c_str());
        munmap(mem, 4096);
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "FAIL asio_wait: %s\n", e.what());
        return 1;
    }
}
