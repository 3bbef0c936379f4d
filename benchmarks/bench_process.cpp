// Process start+join beside raw fork+waitpid. Goal: within 1.5x.
//   ./bench_process --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <mproc/process.hpp>

#include <benchmark/benchmark.h>

#include <sys/wait.h>
#include <unistd.h>

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

BENCHMARK_MAIN();
