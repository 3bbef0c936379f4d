// mproc::mpi under mpirun (and as a singleton): rank 0 runs the Catch2 session inside
// mproc::mpi::run while the other ranks serve its tasks, so every TEST_CASE below talks to live
// worker ranks. Options for the launch come first on the command line:
//   --hybrid=N          each worker rank feeds a local Pool of N processes
//   --piece=BYTES       messages over BYTES travel in pieces (the 2 GiB split, with a low
//   threshold)
//   --root-computes     rank 0 runs chunks too
// The rest goes to Catch. tests/CMakeLists.txt launches it every way the README documents.
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#include <catch2/catch.hpp>

#include <mproc/mpi.hpp>

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <numeric>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

mproc::mpi::Pool* the_pool = nullptr;
mproc::mpi::Options launch;

mproc::mpi::Pool& pool() { return *the_pool; }
bool under_mpirun() { return pool().ranks() > 1; }

std::uint64_t square(std::uint64_t x) { return x * x; }
int add(int a, int b) { return a + b; }
int twice(int x) { return 2 * x; }
std::string shout(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](char c) { return static_cast<char>(std::toupper(c)); });
    return s;
}
int fails_at_137(int x) {
    if (x == 137) throw std::invalid_argument("no 137 here");
    return x;
}
std::string host_of_rank() {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    return name;
}
int rank_of_task(int) { return mproc::mpi::rank(); }
void nothing(int) {}
std::size_t byte_count(std::vector<std::string> texts) {
    std::size_t n = 0;
    for (auto& t : texts) n += t.size();
    return n;
}
bool is_odd(int x) { return x % 2 != 0; }
int dies_at_5(int x) {
    if (x == 5) ::raise(SIGKILL);
    return x;
}

/// This process's CPU time (user + system), in seconds.
double cpu_seconds() {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
std::pair<int, double> rank_and_cpu(int) {
    // Long enough that no rank takes two of these calls.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return {mproc::mpi::rank(), cpu_seconds()};
}

template <class T>
std::vector<T> iota_vector(std::size_t n) {
    std::vector<T> v(n);
    std::iota(v.begin(), v.end(), T{0});
    return v;
}

/// What an ordered imap of f yields before it throws mproc::RemoteError for task 137 (nothing
/// else may end it), or ProcessCrashed for task 5.
template <class F>
std::vector<int> imap_until_error(F f, const std::vector<int>& inputs, std::size_t chunksize) {
    std::vector<int> seen;
    try {
        for (int r : pool().imap(f, inputs, chunksize)) seen.push_back(r);
        FAIL("imap did not throw");
    } catch (const mproc::RemoteError& e) {
        CHECK(e.task_index() == 137u);
    } catch (const mproc::ProcessCrashed& e) {
        CHECK(e.task_index() == 5u);
    }
    return seen;
}

/// map and imap over integer ranges (sent as first value and count, not laid out) equal the
/// serial map, bounded and endless, with an error's index counted from the range's start.
void check_integer_ranges() {
    const auto numbers = std::views::iota(std::uint64_t{5}, std::uint64_t{20'005});
    std::vector<std::uint64_t> expected;
    for (auto x : numbers) expected.push_back(square(x));
    CHECK(pool().map(square, numbers) == expected);
    CHECK(pool().map(square, numbers, 7) == expected);
    std::vector<std::uint64_t> got;
    for (auto r : pool().imap(square, numbers, 13)) got.push_back(r);
    CHECK(got == expected);
    std::multiset<std::uint64_t> any_order;
    for (auto r : pool().imap_unordered(square, numbers, 13)) any_order.insert(r);
    CHECK(any_order == std::multiset<std::uint64_t>(expected.begin(), expected.end()));
    std::uint64_t seen = 0;
    for (auto r : pool().imap(square, std::views::iota(std::uint64_t{5}), 3)) {
        REQUIRE(r == square(seen + 5));
        if (++seen == 1000) break;
    }
    const auto small = std::views::iota(-3, 997);  // int, from a negative start
    auto doubled = pool().map(twice, small);
    REQUIRE(doubled.size() == 1000);
    CHECK(doubled.front() == -6);
    CHECK(doubled.back() == 2 * 996);
    std::vector<int> before_error;
    try {
        for (int r : pool().imap(fails_at_137, std::views::iota(100, 400), 10))
            before_error.push_back(r);
        FAIL("imap did not throw");
    } catch (const mproc::RemoteError& e) {
        CHECK(e.task_index() == 37u);  // item 137 is the range's 38th
    }
    std::vector<int> expected_before(37);
    std::iota(expected_before.begin(), expected_before.end(), 100);
    CHECK(before_error == expected_before);
}

/// Code written once against the concept, run on both kinds of pool.
template <mproc::PoolLike P>
int sum_of_twice(P& p, const std::vector<int>& inputs) {
    auto doubled = p.map(twice, inputs);
    int total = std::accumulate(doubled.begin(), doubled.end(), 0);
    for (int x : p.imap(twice, inputs)) total -= x;  // back to 0
    return std::accumulate(doubled.begin(), doubled.end(), 0) + total + p.submit(twice, 0).get();
}

}  // namespace

TEST_CASE("Mpi.map.equals_serial_map", "[map]") {
    for (std::size_t n : {1u, 7u, 1000u, 100'000u}) {
        const auto inputs = iota_vector<std::uint64_t>(n);
        std::vector<std::uint64_t> expected;
        for (auto x : inputs) expected.push_back(square(x));
        CHECK(pool().map(square, inputs) == expected);
        CHECK(pool().map(square, inputs, 3) == expected);
    }
    CHECK(pool().map(square, std::vector<std::uint64_t>{}).empty());
}

TEST_CASE("Mpi.map.lambda_string_and_list_inputs", "[map]") {
    const std::list<std::string> words{"alpha", "beta", "gamma", "delta"};
    CHECK(pool().map(shout, words) == std::vector<std::string>{"ALPHA", "BETA", "GAMMA", "DELTA"});
    const auto inputs = iota_vector<int>(500);
    auto plus_one = pool().map([](int x) { return x + 1; }, inputs);
    REQUIRE(plus_one.size() == 500);
    CHECK(plus_one.front() == 1);
    CHECK(plus_one.back() == 500);
}

TEST_CASE("Mpi.starmap.spreads_tuples", "[map]") {
    std::vector<std::pair<int, int>> pairs;
    for (int i = 0; i < 300; ++i) pairs.emplace_back(i, 1000 * i);
    auto sums = pool().starmap(add, pairs);
    REQUIRE(sums.size() == 300);
    for (int i = 0; i < 300; ++i) CHECK(sums[static_cast<std::size_t>(i)] == 1001 * i);
}

TEST_CASE("Mpi.map.tasks_run_on_worker_ranks", "[map]") {
    auto ranks = pool().map(rank_of_task, iota_vector<int>(2000), 10);
    const int lowest = launch.root_computes || !under_mpirun() ? 0 : 1;
    for (int r : ranks) CHECK((r >= lowest && r < pool().ranks()));
    if (under_mpirun() && !launch.root_computes)
        CHECK(std::count(ranks.begin(), ranks.end(), 1) < 2000);  // not all on one rank
}

TEST_CASE("Mpi.imap.ordered_and_unordered", "[map]") {
    const auto inputs = iota_vector<std::uint64_t>(3000);
    std::vector<std::uint64_t> in_order;
    for (auto r : pool().imap(square, inputs, 7)) in_order.push_back(r);
    std::vector<std::uint64_t> expected;
    for (auto x : inputs) expected.push_back(square(x));
    CHECK(in_order == expected);

    std::vector<std::uint64_t> any_order;
    for (auto r : pool().imap_unordered(square, inputs, 7)) any_order.push_back(r);
    std::sort(any_order.begin(), any_order.end());
    CHECK(any_order == expected);
}

TEST_CASE("Mpi.map.integer_ranges", "[map]") { check_integer_ranges(); }

TEST_CASE("Mpi.imap.endless_range_bounded_lookahead", "[map]") {
    std::uint64_t pulled = 0;
    auto endless =
        std::views::iota(std::uint64_t{0}) | std::views::transform([&pulled](std::uint64_t x) {
            ++pulled;
            return x;
        });
    std::uint64_t seen = 0;
    {
        auto results = pool().imap(square, endless);
        for (auto r : results) {
            REQUIRE(r == seen * seen);
            if (++seen == 2000) break;
        }
    }  // dropping the range abandons what is still running
    // mproc::mpi deals at most 2 x chunks_in_flight x ranks chunks (of 1 item) ahead of the
    // reader; the local Pool reads batches of at most 65,536.
    const std::uint64_t bound = under_mpirun() ? 2u * launch.chunks_in_flight * 8 : 2u * 65536;
    CHECK(pulled >= seen);
    CHECK(pulled <= seen + bound);
    // The pool goes on after an abandoned imap.
    CHECK(pool().map(square, iota_vector<std::uint64_t>(100)).back() == 99u * 99u);
}

TEST_CASE("Mpi.submit.futures_apply_and_void", "[map]") {
    CHECK(pool().submit(add, 2, 3).get() == 5);
    CHECK(pool().apply(add, 40, 2) == 42);
    std::vector<mproc::mpi::Future<int>> futures;
    for (int i = 0; i < 50; ++i) futures.push_back(pool().apply_async(add, i, i));
    for (int i = 0; i < 50; ++i) CHECK(futures[static_cast<std::size_t>(i)].get() == 2 * i);
    auto f = pool().submit(nothing, 1);
    f.get();
    CHECK(pool().submit(host_of_rank).get() == host_of_rank());  // one host in tests
}

TEST_CASE("Mpi.error.names_index_rank_and_host", "[map]") {
    const auto inputs = iota_vector<int>(1000);
    bool thrown = false;
    try {
        (void)pool().map(fails_at_137, inputs);
    } catch (const mproc::mpi::RemoteError& e) {
        thrown = true;
        CHECK(e.task_index() == 137u);
        CHECK(e.type_name() == "std::invalid_argument");
        CHECK(e.message() == "no 137 here");
        CHECK(e.host() == host_of_rank());
        CHECK((e.rank() >= 0 && e.rank() < pool().ranks()));
        const std::string what = e.what();
        CHECK(what.find("task 137") != std::string::npos);
        CHECK(what.find("rank " + std::to_string(e.rank())) != std::string::npos);
        CHECK(what.find(e.host()) != std::string::npos);
    } catch (const mproc::RemoteError& e) {
        thrown = true;
        CHECK_FALSE(under_mpirun());  // a singleton's local Pool has no ranks to name
        CHECK(e.task_index() == 137u);
    }
    CHECK(thrown);
    // An error in imap comes when the iteration reaches it, after every result before it.
    CHECK(imap_until_error(fails_at_137, inputs, 10) == iota_vector<int>(137));
    CHECK_THROWS_AS(pool().submit(fails_at_137, 137).get(), mproc::RemoteError);
    CHECK(pool().map(twice, inputs).back() == 1998);  // and the pool goes on
}

TEST_CASE("Mpi.pool_like.same_code_on_both_pools", "[map]") {
    const auto inputs = iota_vector<int>(100);
    CHECK(sum_of_twice(pool(), inputs) == 9900);
    mproc::Pool local(2);
    CHECK(sum_of_twice(local, inputs) == 9900);
}

TEST_CASE("Mpi.messages.split_past_the_threshold", "[split]") {
    // Launched with --piece=1000: every message here is many pieces.
    std::vector<std::string> texts;
    for (int i = 0; i < 40; ++i)
        texts.push_back(
            std::string(static_cast<std::size_t>(5000 + 997 * i), 'a' + static_cast<char>(i % 26)));
    const std::uint64_t parts_before = mproc::detail::mpi::parts_sent();
    auto loud = pool().map(shout, texts, 4);
    // Each task message holds 4 texts of 5 KB or more: 20 pieces of 1000 bytes at least.
    if (under_mpirun()) CHECK(mproc::detail::mpi::parts_sent() - parts_before >= 10 * 20);
    REQUIRE(loud.size() == texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) CHECK(loud[i] == shout(texts[i]));
    std::size_t total = 0;
    for (auto& t : texts) total += t.size();
    CHECK(pool().submit(byte_count, texts).get() == total);
    // An integer range's chunks are (first value, count), never the numbers: 10^6 of them as 8
    // chunks fit in one piece each (laid out, each chunk would be 125,000 numbers, 1 MB).
    const std::uint64_t parts_before_range = mproc::detail::mpi::parts_sent();
    const auto numbers = std::views::iota(std::uint64_t{0}, std::uint64_t{1'000'000});
    std::uint64_t sum = 0;
    for (auto r : pool().imap(square, numbers, 125'000)) sum += r;  // imap: no result vector
    CHECK(sum == 333'332'833'333'500'000u);
    CHECK(mproc::detail::mpi::parts_sent() == parts_before_range);
}

TEST_CASE("Mpi.idle.worker_ranks_sleep", "[idle]") {
    if (!under_mpirun()) return;
    const auto workers = static_cast<std::size_t>(pool().ranks() - 1);
    auto sample = [&] {
        std::vector<mproc::mpi::Future<std::pair<int, double>>> futures;
        for (std::size_t i = 0; i < workers; ++i) futures.push_back(pool().submit(rank_and_cpu, 0));
        std::map<int, double> cpu;
        for (auto& f : futures) cpu.insert(f.get());
        return cpu;
    };
    const auto before = sample();
    REQUIRE(before.size() == workers);  // one call per rank
    const double idle_seconds = 2.0;
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds));
    const auto after = sample();
    REQUIRE(after.size() == workers);
    for (auto [r, cpu] : after) {
        const double share = (cpu - before.at(r)) / idle_seconds;
        INFO("rank " << r << " used " << share * 100 << "% of a core while idle");
        CHECK(share < 0.10);  // a rank that polled without sleeping would use far more
    }
}

TEST_CASE("Mpi.hybrid.local_processes_and_crash", "[hybrid]") {
    REQUIRE(launch.local_processes == 2);
    REQUIRE(pool().processes() == static_cast<unsigned>(pool().ranks() - 1) * 2u);
    const auto inputs = iota_vector<std::uint64_t>(5000);
    auto squares = pool().map(square, inputs);
    CHECK(squares[4999] == 4999u * 4999u);
    // A local worker killed mid-task: ProcessCrashed naming the task; the rank goes on.
    try {
        (void)pool().map(dies_at_5, iota_vector<int>(40), 4);
        FAIL("no ProcessCrashed");
    } catch (const mproc::ProcessCrashed& e) {
        CHECK(e.task_index() == 5u);
        CHECK(e.signal() == SIGKILL);
    }
    CHECK(pool().map(twice, iota_vector<int>(200)).back() == 398);
    CHECK(pool().apply(add, 1, 2) == 3);
}

TEST_CASE("Mpi.hybrid.integer_ranges", "[hybrid]") { check_integer_ranges(); }

TEST_CASE("Mpi.hybrid.imap_yields_the_failed_chunks_results_before_its_error", "[hybrid]") {
    // The failed chunk [130, 140) runs on a rank's local Pool: its results 130..136 still come
    // before the error (they were lost when the rank ran the chunk with the local map), in order,
    // whether the task raised or its local worker died.
    REQUIRE(launch.local_processes == 2);
    const auto inputs = iota_vector<int>(1000);
    CHECK(imap_until_error(fails_at_137, inputs, 10) == iota_vector<int>(137));
    CHECK(imap_until_error(dies_at_5, iota_vector<int>(40), 4) == iota_vector<int>(5));
    std::multiset<int> unordered;
    try {
        for (int r : pool().imap_unordered(fails_at_137, inputs, 10)) unordered.insert(r);
        FAIL("imap_unordered did not throw");
    } catch (const mproc::RemoteError& e) {
        CHECK(e.task_index() == 137u);
    }
    for (int x = 130; x < 137; ++x) CHECK(unordered.count(x) == 1);
    CHECK(unordered.count(137) == 0);
    // A bool function through imap, the contract's shape, on both hybrid levels.
    std::vector<bool> odd;
    for (bool f : pool().imap(is_odd, inputs, 10)) odd.push_back(f);
    REQUIRE(odd.size() == 1000);
    CHECK(std::count(odd.begin(), odd.end(), true) == 500);
    CHECK(odd[137]);
}

int main(int argc, char** argv) {
    std::vector<char*> catch_args{argv[0]};
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg.rfind("--hybrid=", 0) == 0)
            launch.local_processes = static_cast<unsigned>(std::stoul(arg.substr(9)));
        else if (arg.rfind("--piece=", 0) == 0)
            launch.max_message_bytes = std::stoul(arg.substr(8));
        else if (arg == "--root-computes")
            launch.root_computes = true;
        else
            catch_args.push_back(argv[i]);
    }
    launch.singleton_processes = 2;
    return mproc::mpi::run(argc, argv, launch, [&](mproc::mpi::Pool& p) {
        the_pool = &p;
        return Catch::Session().run(static_cast<int>(catch_args.size()), catch_args.data());
    });
}
