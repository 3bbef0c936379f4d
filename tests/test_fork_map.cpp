#include "support.hpp"

#include <mproc/fork_map.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <numeric>
#include <ranges>
#include <stdexcept>
#include <thread>
#include <string>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("ForkMap.capturing_lambda_order_kept", "[fork_map]") {
    int offset = 1000;  // not const: a const int would need no capture (clang warns)
    std::vector<int> inputs(5000);
    std::iota(inputs.begin(), inputs.end(), 0);
    const auto r = mproc::fork_map([offset](int x) { return x + offset; }, inputs);
    REQUIRE(r.size() == inputs.size());
    for (std::size_t i = 0; i < r.size(); ++i) REQUIRE(r[i] == inputs[i] + offset);
    const auto words = mproc::fork_map([&inputs](std::size_t i) { return std::to_string(inputs[i]); },
                                       std::views::iota(std::size_t{0}, std::size_t{100}));
    CHECK(words[42] == "42");
    CHECK(mproc::fork_map([](int x) { return x; }, std::vector<int>{}).empty());
    CHECK(mproc_test::no_children_left());
}

TEST_CASE("ForkMap.big_input_is_shared_not_copied", "[fork_map]") {
    const std::size_t mib = 512;
    std::vector<std::uint8_t> big(mib << 20);
    for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<std::uint8_t>(i >> 12);
    const long before = mproc_test::status_mib("VmRSS:");
    const auto sums = mproc::fork_map([&big](std::size_t block) {
        std::uint64_t s = 0;
        for (std::size_t i = block << 20; i < (block + 1) << 20; i += 4096) s += big[i];
        return s;
    }, std::views::iota(std::size_t{0}, mib));
    const long after = mproc_test::status_mib("VmRSS:");
    std::uint64_t expected = 0, got = 0;
    for (std::size_t i = 0; i < big.size(); i += 4096) expected += big[i];
    for (auto s : sums) got += s;
    CHECK(got == expected);
    CHECK(after - before < static_cast<long>(mib) / 4);  // nowhere near a second copy
}

TEST_CASE("ForkMap.exception_names_the_task", "[fork_map]") {
    try {
        (void)mproc::fork_map([](int x) {
            if (x == 77) throw std::invalid_argument("seventy-seven");
            return x;
        }, std::views::iota(0, 200));
        FAIL("fork_map did not throw");
    } catch (const mproc::RemoteError& e) {
        CHECK(e.task_index() == 77u);
        CHECK(e.message() == "seventy-seven");
    }
    CHECK(mproc_test::no_children_left());
}

TEST_CASE("ForkMap.crash_names_the_task_and_signal", "[fork_map]") {
    const auto shm_before = mproc_test::shm_names();
    try {
        (void)mproc::fork_map([](int x) {
            if (x == 13) {
                std::signal(SIGSEGV, SIG_DFL);
                std::raise(SIGSEGV);
            }
            return x;
        }, std::views::iota(0, 50));
        FAIL("fork_map did not throw");
    } catch (const mproc::ProcessCrashed& e) {
        CHECK(e.task_index() == 13u);
        CHECK(e.signal() == SIGSEGV);
    }
    CHECK(mproc_test::no_children_left());
    CHECK(mproc_test::shm_names() == shm_before);  // fork_map uses anonymous memory only
}

TEST_CASE("ForkMap.options_apply", "[fork_map]") {
    mproc::PoolOptions opts;
    opts.processes = 3;
    std::size_t last_done = 0;
    opts.on_progress = [&last_done](std::size_t done, std::size_t) { last_done = done; };
    opts.task_timeout = 200ms;
    CHECK(mproc::fork_map([](int x) { return x * 2; }, std::views::iota(0, 30), opts).size() == 30);
    CHECK(last_done == 30);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(mproc::fork_map([](int x) {
        if (x == 2) std::this_thread::sleep_for(30s);
        return x;
    }, std::views::iota(0, 4), opts), mproc::TimeoutError);
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    CHECK(mproc_test::no_children_left());
}
