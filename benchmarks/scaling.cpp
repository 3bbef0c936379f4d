// One point of the scaling benchmark (benchmarks/scaling.sh runs it under `taskset` for 1, 2, 4,
// ... cores): every figure is measured on the cores this process may use, with one worker per
// usable core (mproc::cpu_count() and OpenMP both follow the affinity mask). Only mproc's public
// API is used, so the same program measures any version of the library.
//
//   scaling [--reps N] [--primes N] [--serial] [--sweep]
//
// Prints CSV lines `metric,workers,median,min,max,unit` (medians of N repetitions):
//   primes_serial_ms (with --serial), primes_pool_cold_ms (Pool built and destroyed inside the
//   timing), primes_pool_warm_ms, primes_fork_map_ms, primes_openmp_first_ms (the first parallel
//   region of the process, threads created inside it), primes_openmp_ms (warm),
//   submit_get_us (warm pool, one task at a time), chunksize1_ns (100,000 tiny tasks, chunksize 1),
//   queue_mpmc_mmsg_s (k/2 producer and k/2 consumer processes, 8-byte messages, millions/s),
//   queue_mpmc_lanes_mmsg_s (the same on a queue with a lane per producer, QueueOptions::lanes),
//   and with --sweep submit_get_us for Pool(1), Pool(2), ... Pool(16) on these cores
//   (oversubscribed when the pool is larger than the core count).
#include "../examples/workloads.hpp"

#include <mproc/mproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <ranges>
#include <string>
#include <vector>

#ifdef MPROC_HAVE_OPENMP
#include <omp.h>
#endif

namespace {

using clock_type = std::chrono::steady_clock;
using example::is_prime;

struct Settings {
    int reps = 3;
    std::uint64_t primes = 10'000'000;
    bool serial = false;
    bool sweep = false;
};

double seconds_of(const std::function<void()>& run) {
    const auto t0 = clock_type::now();
    run();
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Prints the median, min and max of `reps` runs of `measure` (each returns one sample in `unit`).
void report(const char* metric, unsigned workers, const char* unit, int reps,
            const std::function<double()>& measure) {
    std::vector<double> samples;
    for (int i = 0; i < reps; ++i) samples.push_back(measure());
    std::sort(samples.begin(), samples.end());
    std::printf("%s,%u,%.4g,%.4g,%.4g,%s\n", metric, workers, samples[samples.size() / 2], samples.front(),
                samples.back(), unit);
    std::fflush(stdout);
}

std::uint64_t count_primes_serial(std::uint64_t n) {
    std::uint64_t count = 0;
    for (std::uint64_t i = 0; i < n; ++i) count += is_prime(i);
    return count;
}

void check(std::uint64_t got, std::uint64_t want, const char* what) {
    if (got == want) return;
    std::fprintf(stderr, "scaling: %s counted %llu primes, the serial loop %llu\n", what,
                 static_cast<unsigned long long>(got), static_cast<unsigned long long>(want));
    std::exit(1);
}

std::uint64_t count_true(const std::vector<bool>& flags) {
    return static_cast<std::uint64_t>(std::count(flags.begin(), flags.end(), true));
}

void primes(const Settings& s, unsigned cores) {
    const std::uint64_t n = s.primes;
    const auto inputs = std::views::iota(std::uint64_t{0}, n);
    const std::uint64_t want = count_primes_serial(n);
    if (s.serial)
        report("primes_serial_ms", 1, "ms", s.reps, [&] {
            return 1e3 * seconds_of([&] { check(count_primes_serial(n), want, "serial"); });
        });
#ifdef MPROC_HAVE_OPENMP
    // The first region creates OpenMP's threads, as the cold Pool creates its workers.
    report("primes_openmp_first_ms", cores, "ms", 1, [&] {
        return 1e3 * seconds_of([&] {
            std::uint64_t count = 0;
#pragma omp parallel for schedule(dynamic, 1000) reduction(+ : count)
            for (std::int64_t i = 0; i < static_cast<std::int64_t>(n); ++i) count += is_prime(static_cast<std::uint64_t>(i));
            check(count, want, "OpenMP");
        });
    });
    report("primes_openmp_ms", cores, "ms", s.reps, [&] {
        return 1e3 * seconds_of([&] {
            std::uint64_t count = 0;
#pragma omp parallel for schedule(dynamic, 1000) reduction(+ : count)
            for (std::int64_t i = 0; i < static_cast<std::int64_t>(n); ++i) count += is_prime(static_cast<std::uint64_t>(i));
            check(count, want, "OpenMP");
        });
    });
#endif
    report("primes_pool_cold_ms", cores, "ms", s.reps, [&] {
        return 1e3 * seconds_of([&] {
            mproc::Pool pool;
            check(count_true(pool.map(is_prime, inputs)), want, "a cold Pool");
        });
    });
    {
        mproc::Pool pool;
        (void)pool.map(is_prime, std::views::iota(std::uint64_t{0}, std::uint64_t{1000}));  // workers up
        report("primes_pool_warm_ms", cores, "ms", s.reps, [&] {
            return 1e3 * seconds_of([&] { check(count_true(pool.map(is_prime, inputs)), want, "a warm Pool"); });
        });
    }
    report("primes_fork_map_ms", cores, "ms", s.reps, [&] {
        return 1e3 * seconds_of([&] {
            const auto flags = mproc::fork_map([](std::uint64_t x) { return is_prime(x); }, inputs);
            check(count_true(flags), want, "fork_map");
        });
    });
}

double submit_get_us(mproc::Pool& pool) {
    constexpr int round_trips = 2000;
    for (int i = 0; i < 200; ++i) (void)pool.submit([](int x) { return x + 1; }, i).get();  // warm
    const double s = seconds_of([&] {
        for (int i = 0; i < round_trips; ++i)
            if (pool.submit([](int x) { return x + 1; }, i).get() != i + 1) std::abort();
    });
    return 1e6 * s / round_trips;
}

void latency(const Settings& s, unsigned cores) {
    {
        mproc::Pool pool;
        report("submit_get_us", cores, "us", s.reps, [&] { return submit_get_us(pool); });
        std::vector<std::int64_t> input(100'000);
        for (std::size_t i = 0; i < input.size(); ++i) input[i] = static_cast<std::int64_t>(i);
        report("chunksize1_ns", cores, "ns", s.reps, [&] {
            return 1e9 / static_cast<double>(input.size()) * seconds_of([&] {
                const auto r = pool.map([](std::int64_t x) { return x + 1; }, input, 1);
                if (r.back() != static_cast<std::int64_t>(input.size())) std::abort();
            });
        });
    }
    if (!s.sweep) return;
    for (unsigned workers : {1u, 2u, 4u, 8u, 16u}) {
        mproc::PoolOptions options;
        options.processes = workers;
        mproc::Pool pool(options);
        report("submit_get_us_by_workers", workers, "us", s.reps, [&] { return submit_get_us(pool); });
    }
}

// k/2 producers and k/2 consumers (at least one of each) move `total` 8-byte messages through a
// queue of `lanes`; the clock runs from the moment every process is ready until the last
// consumer has drained the queue after close().
double queue_mpmc_rate(unsigned cores, std::size_t lanes) {
    const unsigned producers = std::max(1u, cores / 2), consumers = std::max(1u, cores / 2);
    const std::int64_t per_producer = 4'000'000 / producers;
    mproc::Queue<std::int64_t> q(mproc::QueueOptions{.lanes = lanes});
    mproc::Barrier ready(producers + consumers + 1);
    mproc::Barrier done(consumers + 1);
    std::vector<mproc::Process<void>> procs;
    for (unsigned c = 0; c < consumers; ++c)
        procs.emplace_back([&] {
            ready.wait();
            try {
                for (;;) (void)q.get();
            } catch (const mproc::EndOfStream&) {
            }
            done.wait();
        });
    for (unsigned p = 0; p < producers; ++p)
        procs.emplace_back([&] {
            ready.wait();
            for (std::int64_t i = 0; i < per_producer; ++i) q.put(i);
        });
    for (auto& proc : procs) proc.start();
    ready.wait();
    const auto t0 = clock_type::now();
    for (unsigned p = 0; p < producers; ++p) procs[consumers + p].join();
    // close(), not an end marker per consumer: with lanes a marker put now may be taken before
    // messages still queued in other lanes.
    q.close();
    done.wait();
    const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
    for (auto& proc : procs) proc.join();
    return static_cast<double>(per_producer * producers) / s / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
    Settings s;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--reps" && i + 1 < argc) s.reps = std::max(1, std::atoi(argv[++i]));
        else if (arg == "--primes" && i + 1 < argc) s.primes = std::strtoull(argv[++i], nullptr, 10);
        else if (arg == "--serial") s.serial = true;
        else if (arg == "--sweep") s.sweep = true;
        else {
            std::fprintf(stderr, "usage: scaling [--reps N] [--primes N] [--serial] [--sweep]\n");
            return 2;
        }
    }
    const unsigned cores = mproc::cpu_count();
    std::printf("metric,workers,median,min,max,unit\n");
    primes(s, cores);
    latency(s, cores);
    report("queue_mpmc_mmsg_s", cores, "M/s", s.reps, [&] { return queue_mpmc_rate(cores, 1); });
    report("queue_mpmc_lanes_mmsg_s", cores, "M/s", s.reps,
           [&] { return queue_mpmc_rate(cores, std::max(1u, cores / 2)); });
}
