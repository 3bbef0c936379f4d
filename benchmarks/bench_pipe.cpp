// Pipe round trip (send an int, the peer process echoes it) beside a raw socketpair ping-pong of
// the same 8 bytes. Goal: within 1.3x.
//   ./bench_pipe --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <mproc/pipe.hpp>
#include <mproc/process.hpp>

#include <benchmark/benchmark.h>

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <string>

static void Raw_socketpair_ping_pong(benchmark::State& state) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) state.SkipWithError("socketpair");
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(fds[0]);
        std::int64_t v;
        while (::read(fds[1], &v, sizeof v) == sizeof v) {
            if (::write(fds[1], &v, sizeof v) != sizeof v) break;
        }
        ::_exit(0);
    }
    ::close(fds[1]);
    std::int64_t v = 0;
    for (auto _ : state) {
        if (::write(fds[0], &v, sizeof v) != sizeof v || ::read(fds[0], &v, sizeof v) != sizeof v)
            state.SkipWithError("ping-pong failed");
        ++v;
    }
    ::close(fds[0]);
    ::waitpid(pid, nullptr, 0);
}
BENCHMARK(Raw_socketpair_ping_pong)->UseRealTime();

template <class T>
static void pipe_round_trip(benchmark::State& state, const T& message) {
    auto [here, there] = mproc::Pipe<T>();
    mproc::Process echo(
        [&here = here](mproc::Connection<T> end) {
            here.close();  // the child's copy of the parent's end: else it never sees end of stream
            try {
                for (;;) end.send(end.recv());
            } catch (const mproc::EndOfStream&) {
            }
        },
        std::move(there));
    echo.start();
    for (auto _ : state) {
        here.send(message);
        benchmark::DoNotOptimize(here.recv());
    }
    here.close();
    echo.join();
}

static void Pipe_round_trip_int64(benchmark::State& state) {
    pipe_round_trip<std::int64_t>(state, 42);
}
BENCHMARK(Pipe_round_trip_int64)->UseRealTime();

static void Pipe_round_trip_string_1KiB(benchmark::State& state) {
    pipe_round_trip<std::string>(state, std::string(1024, 'x'));
}
BENCHMARK(Pipe_round_trip_string_1KiB)->UseRealTime();

BENCHMARK_MAIN();
