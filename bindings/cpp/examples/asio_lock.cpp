// asio_lock.cpp — a cross-process mutex and channel from Asio event loops.
//
// The parent places an asyncfutex mutex, a counter and a channel in
// MAP_SHARED memory and forks two workers. Each worker, from its own
// io_context, takes the mutex with AsyncMutex::async_lock, increments the
// shared counter, unlocks, and reports each increment to the parent over
// the channel (its half of it: one channel per worker, as a channel has
// one sender and one receiver). The parent receives both reports with
// AsyncReceiver::async_recv, then checks that no increment was lost.
//
//   g++ -std=c++17 -Wall -Wextra -Werror -Ibindings/cpp/include -Iinclude
//       bindings/cpp/examples/asio_lock.cpp -Ltarget/debug -lasyncfutex
//       -Wl,-rpath,$PWD/target/debug -pthread -o asio_lock
//   ./asio_lock [rounds]
#include <asyncfutex_asio.hpp>

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

namespace {

namespace afx = asyncfutex;

constexpr int workers = 2;
constexpr std::uint32_t frame_size = 8;
constexpr std::uint32_t capacity = 16;
constexpr std::size_t chan_stride = 4096; // room for one channel (checked)

struct Shared {
    afx_mutex_state mutex;
    std::uint32_t counter; // guarded by the mutex
    alignas(64) unsigned char channels[workers][chan_stride];
};

afx_chan_header *channel(Shared *s, int i) { return reinterpret_cast<afx_chan_header *>(s->channels[i]); }

/// A worker: `rounds` locked increments through Asio, each reported as
/// (worker, value) on its channel.
void work(Shared *s, int me, std::uint32_t rounds)
{
    asio::io_context io;
    afx::AsyncMutex mutex(io, afx::Mutex(&s->mutex));
    afx::AsyncSender report(io, afx::Sender(channel(s, me)));
    std::uint32_t done = 0;
    std::uint32_t frame[2] = {};
    std::function<void()> next = [&] {
        if (done == rounds)
            return;
        mutex.async_lock([&](std::error_code ec, bool owner_died) {
            if (ec)
                throw std::system_error(ec, "async_lock");
            if (owner_died) // a holder died: the counter is still whole here
                mutex->consistent();
            frame[0] = static_cast<std::uint32_t>(me);
            frame[1] = ++s->counter;
            mutex->unlock();
            report.async_send(asio::buffer(frame), [&](std::error_code sec) {
                if (sec)
                    throw std::system_error(sec, "async_send");
                ++done;
                next();
            });
        });
    };
    next();
    io.run();
}

} // namespace

int main(int argc, char **argv)
{
    const std::uint32_t rounds = argc > 1 ? static_cast<std::uint32_t>(std::strtoul(argv[1], nullptr, 10)) : 200;
    try {
        if (afx::Channel::size(frame_size, capacity) > chan_stride)
            throw std::logic_error("channel does not fit");
        void *mem = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            throw std::system_error(errno, std::generic_category(), "mmap");
        Shared *s = new (mem) Shared{};
        afx::Mutex::init(&s->mutex);
        for (int i = 0; i < workers; ++i)
            afx::Channel::init(channel(s, i), frame_size, capacity);

        const pid_t parent = getpid();
        pid_t pids[workers];
        for (int i = 0; i < workers; ++i) {
            std::fflush(stdout);
            pids[i] = fork();
            if (pids[i] < 0)
                throw std::system_error(errno, std::generic_category(), "fork");
            if (pids[i] == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                    _exit(1);
                try {
                    work(s, i, rounds);
                } catch (const std::exception &e) {
                    std::fprintf(stderr, "worker %d: %s\n", i, e.what());
                    _exit(1);
                }
                _exit(0);
            }
        }

        // The parent: receive every report from both workers, in order per
        // worker (each worker's values rise).
        const auto start = std::chrono::steady_clock::now();
        asio::io_context io;
        afx::AsyncReceiver rx0(io, afx::Receiver(channel(s, 0)));
        afx::AsyncReceiver rx1(io, afx::Receiver(channel(s, 1)));
        afx::AsyncReceiver *rx[workers] = {&rx0, &rx1};
        std::uint32_t frames[workers][2] = {};
        std::uint32_t received[workers] = {};
        std::uint32_t last[workers] = {};
        std::function<void(int)> next = [&](int i) {
            if (received[i] == rounds)
                return;
            rx[i]->async_recv(asio::buffer(frames[i]), [&, i](std::error_code ec, std::size_t n) {
                if (ec)
                    throw std::system_error(ec, "async_recv");
                if (n != sizeof frames[i] || frames[i][0] != static_cast<std::uint32_t>(i) || frames[i][1] <= last[i])
                    throw std::runtime_error("bad report from worker " + std::to_string(i));
                last[i] = frames[i][1];
                ++received[i];
                next(i);
            });
        };
        for (int i = 0; i < workers; ++i)
            next(i);
        io.run();
        for (pid_t pid : pids) {
            int status = 0;
            while (waitpid(pid, &status, 0) != pid) {
                if (errno != EINTR)
                    throw std::system_error(errno, std::generic_category(), "waitpid");
            }
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                throw std::runtime_error("a worker failed");
        }
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        if (s->counter != workers * rounds)
            throw std::runtime_error("counter is " + std::to_string(s->counter) + ", expected " +
                                     std::to_string(workers * rounds));
        std::printf("PASS asio_lock: %d processes x %u increments under one mutex through Asio, every one "
                    "reported over a channel, %.1f ms [backend %s]\n",
                    workers, rounds, ms, std::string(afx::backend_name()).c_str());
        munmap(mem, sizeof(Shared));
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "FAIL asio_lock: %s\n", e.what());
        return 1;
    }
}
