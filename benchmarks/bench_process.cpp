// Process start+join by each start method beside the raw OS mechanisms:
//   fork: beside raw fork+waitpid (goal: within 1.5x); forkserver: beside raw fork+waitpid from a
//   small process (goal: within 1.3x); spawn: beside raw fork+exec+waitpid of this same binary
//   (goal: within 1.3x). Pool(8) start + a small map + teardown from a caller with 1 GiB resident,
//   by each method.
//   ./bench_process --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/start_method.hpp>

#include <benchmark/benchmark.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace {
const char* self_argv0 = nullptr;
constexpr const char raw_exec_marker[] = "--raw-exec-exit";

void nothing() {}
int forty_two() { return 42; }
int twice(int n) { return 2 * n; }
}  // namespace

static void Raw_fork_waitpid(benchmark::State& state) {
    for (auto _ : state) {
        const pid_t pid = ::fork();
        if (pid == 0) ::_exit(0);
        int status;
        ::waitpid(pid, &status, 0);
        benchmark::DoNotOptimize(status);
    }
}
BENCHMARK(Raw_fork_waitpid)->UseRealTime();

// The same binary executed afresh, leaving at the top of main: the floor under spawn.
static void Raw_fork_exec_waitpid(benchmark::State& state) {
    for (auto _ : state) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            char* argv[] = {const_cast<char*>(self_argv0), const_cast<char*>(raw_exec_marker), nullptr};
            ::execv("/proc/self/exe", argv);
            ::_exit(127);
        }
        int status;
        ::waitpid(pid, &status, 0);
        benchmark::DoNotOptimize(status);
    }
}
BENCHMARK(Raw_fork_exec_waitpid)->UseRealTime();

static void Process_start_join(benchmark::State& state) {
    for (auto _ : state) {
        mproc::Process p([] {});
        p.start();
        p.join();
    }
}
BENCHMARK(Process_start_join)->UseRealTime();

static void Process_start_result_int(benchmark::State& state) {
    for (auto _ : state) {
        mproc::Process p([] { return 42; });
        p.start();
        benchmark::DoNotOptimize(p.result());
    }
}
BENCHMARK(Process_start_result_int)->UseRealTime();

static void Process_start_join_forkserver(benchmark::State& state) {
    { mproc::Process warm(nothing); warm.start(mproc::forkserver); warm.join(); }  // the server's start is paid once
    for (auto _ : state) {
        mproc::Process p(nothing);
        p.start(mproc::forkserver);
        p.join();
    }
}
BENCHMARK(Process_start_join_forkserver)->UseRealTime();

static void Process_start_result_int_forkserver(benchmark::State& state) {
    for (auto _ : state) {
        mproc::Process p(forty_two);
        p.start(mproc::forkserver);
        benchmark::DoNotOptimize(p.result());
    }
}
BENCHMARK(Process_start_result_int_forkserver)->UseRealTime();

static void Process_start_join_spawn(benchmark::State& state) {
    for (auto _ : state) {
        mproc::Process p(nothing);
        p.start(mproc::spawn);
        p.join();
    }
}
BENCHMARK(Process_start_join_spawn)->UseRealTime();

static void Process_start_result_int_spawn(benchmark::State& state) {
    for (auto _ : state) {
        mproc::Process p(forty_two);
        p.start(mproc::spawn);
        benchmark::DoNotOptimize(p.result());
    }
}
BENCHMARK(Process_start_result_int_spawn)->UseRealTime();

// Pool(8) start, a map of 64 ints, teardown, from a caller with 1 GiB resident (touched pages).
static void Pool8_start_map_1GiB_caller(benchmark::State& state) {
    const auto method = static_cast<mproc::StartMethod>(state.range(0));
    std::vector<char> ballast(std::size_t{1} << 30);
    std::memset(ballast.data(), 1, ballast.size());
    std::vector<int> numbers(64, 3);
    { mproc::Process warm(nothing); warm.start(mproc::forkserver); warm.join(); }
    for (auto _ : state) {
        mproc::PoolOptions opts;
        opts.processes = 8;
        opts.start_method = method;
        mproc::Pool pool(opts);
        benchmark::DoNotOptimize(pool.map(twice, numbers));
    }
    benchmark::DoNotOptimize(ballast.data());
    state.SetLabel(method == mproc::StartMethod::fork ? "fork" : method == mproc::StartMethod::spawn ? "spawn" : "forkserver");
}
BENCHMARK(Pool8_start_map_1GiB_caller)
    ->Arg(static_cast<int>(mproc::StartMethod::fork))
    ->Arg(static_cast<int>(mproc::StartMethod::forkserver))
    ->Arg(static_cast<int>(mproc::StartMethod::spawn))
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Pool(16) cold start (until every worker has run a task) and teardown: a tiny caller forking,
// beside a 1 GiB caller using the forkserver (goal: within 1.2x).
static void Pool16_cold_start(benchmark::State& state) {
    const bool big = state.range(0) != 0;
    const auto method = big ? mproc::StartMethod::forkserver : mproc::StartMethod::fork;
    std::vector<char> ballast(big ? std::size_t{1} << 30 : 0);
    std::memset(ballast.data(), 1, ballast.size());
    { mproc::Process warm(nothing); warm.start(mproc::forkserver); warm.join(); }
    for (auto _ : state) {
        mproc::PoolOptions opts;
        opts.processes = 16;
        opts.start_method = method;
        mproc::Pool pool(opts);
        benchmark::DoNotOptimize(pool.map(twice, std::vector<int>(16, 1), 1));
    }
    benchmark::DoNotOptimize(ballast.data());
    state.SetLabel(big ? "1 GiB caller, forkserver" : "tiny caller, fork");
}
BENCHMARK(Pool16_cold_start)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], raw_exec_marker) == 0) return 0;
    mproc::init(argc, argv);
    self_argv0 = argv[0];
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
