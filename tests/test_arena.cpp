// The Pool's shared arena: ring allocation, reuse below the low-water mark, pages returned.
#include "support.hpp"

#include <mproc/detail/arena.hpp>
#include <mproc/process.hpp>

#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <cstring>
#include <deque>
#include <set>
#include <thread>
#include <utility>
#include <vector>

using mproc::detail::shared_arena;

namespace {
constexpr std::size_t mib = std::size_t{1} << 20;

// Fills an allocation with a pattern derived from its number, and checks it later.
void fill(shared_arena& a, std::uint64_t offset, std::size_t bytes, std::uint64_t n) {
    std::memset(a.base() + offset, static_cast<int>(n % 251), bytes);
}
bool intact(const shared_arena& a, std::uint64_t offset, std::size_t bytes, std::uint64_t n) {
    for (std::size_t i = 0; i < bytes; i += 61)
        if (a.base()[offset + i] != static_cast<std::byte>(n % 251)) return false;
    return true;
}
}  // namespace

TEST_CASE("Arena.rolling_window_wraps_and_never_overwrites_live_data", "[arena]") {
    const std::size_t window = 16 * mib;
    shared_arena arena(4096, window);
    struct live {
        std::uint64_t mark, offset, n;
        std::size_t bytes;
    };
    std::deque<live> window_of_jobs;
    std::uint64_t laps_seen = 0, last_offset = 0;
    for (std::uint64_t n = 0; n < 20000; ++n) {
        const std::size_t bytes = 1000 + (n * 7919) % 60000;
        const std::uint64_t mark = arena.mark();
        const std::uint64_t offset = arena.allocate(bytes);
        REQUIRE(offset + bytes <= window);
        REQUIRE(offset % 64 == 0);
        if (offset < last_offset) ++laps_seen;
        last_offset = offset;
        fill(arena, offset, bytes, n);
        window_of_jobs.push_back({mark, offset, n, bytes});
        if (window_of_jobs.size() > 40) {  // the oldest job retires: everything it had is checked
            const live& oldest = window_of_jobs.front();
            REQUIRE(intact(arena, oldest.offset, oldest.bytes, oldest.n));
            window_of_jobs.pop_front();
            arena.release_below(window_of_jobs.front().mark);
        }
    }
    for (const auto& j : window_of_jobs) CHECK(intact(arena, j.offset, j.bytes, j.n));
    CHECK(laps_seen > 10);  // ~600 MiB went through a 16 MiB window
}

TEST_CASE("Arena.full_window_and_oversized_requests_are_errors", "[arena]") {
    shared_arena arena(4096, 8 * mib);
    CHECK_THROWS_AS(arena.allocate(9 * mib), mproc::Error);
    const std::uint64_t first = arena.allocate(5 * mib);
    // 5 MiB are live: another 5 MiB cannot fit anywhere, and the arena says so.
    CHECK_THROWS_WITH(arena.allocate(5 * mib), Catch::Contains("window is full"));
    arena.release_below(arena.mark());
    const std::uint64_t again = arena.allocate(5 * mib);  // after the release it fits (a new lap)
    CHECK(again == first);
    arena.reset();
    CHECK(arena.allocate(64) == first);  // reset starts a lap at the ring's start
}

TEST_CASE("Arena.concurrent_allocations_do_not_overlap", "[arena]") {
    shared_arena arena(4096, 256 * mib);
    std::vector<std::vector<std::pair<std::uint64_t, std::size_t>>> got(4);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < got.size(); ++t)
        threads.emplace_back([&, t] {
            for (std::size_t i = 0; i < 2000; ++i) {
                const std::size_t bytes = 64 + (i * 131 + t) % 4000;
                got[t].emplace_back(arena.allocate(bytes), bytes);
            }
        });
    for (auto& th : threads) th.join();
    std::set<std::pair<std::uint64_t, std::size_t>> all;
    for (const auto& g : got) all.insert(g.begin(), g.end());
    REQUIRE(all.size() == 8000);
    std::uint64_t end = 0;
    for (const auto& [offset, bytes] : all) {
        CHECK(offset >= end);
        end = offset + bytes;
    }
}

TEST_CASE("Arena.released_pages_go_back_to_the_system", "[arena][large]") {
    shared_arena arena(4096, std::size_t{1} << 30);
    const long long before = mproc_test::memfd_bytes("mproc-arena");
    // A long-lived job pins the low-water mark while 512 MiB pass beyond the warm part.
    (void)arena.allocate(4096);
    for (int i = 0; i < 64; ++i) {
        const std::uint64_t offset = arena.allocate(8 * mib);
        std::memset(arena.base() + offset, 1, 8 * mib);
    }
    const std::uint64_t newest = arena.mark();
    const std::uint64_t newest_offset = arena.allocate(4096);  // a job that stays live
    std::memset(arena.base() + newest_offset, 7, 4096);
    CHECK(mproc_test::memfd_bytes("mproc-arena") - before >= 500 * static_cast<long long>(mib));
    arena.release_below(newest);  // the pinning job and all after it but the newest retire
    // Left: the warm part, and what the file had reserved ahead of the newest allocation.
    const auto covered = static_cast<long long>(arena.header().covered.load());
    const auto reserved_ahead = covered - static_cast<long long>(newest_offset);
    CHECK(mproc_test::memfd_bytes("mproc-arena") - before <=
          static_cast<long long>(shared_arena::warm + 4 * mib) + reserved_ahead);
    CHECK(std::to_integer<int>(arena.base()[newest_offset + 4095]) == 7);  // the live one is intact
}

namespace {
int madvise_calls = 0;
int counting_madvise(void* addr, size_t length, int advice) {
    ++madvise_calls;
    return ::madvise(addr, length, advice);
}
int failing_madvise(void*, size_t, int) {
    ++madvise_calls;
    errno = ENOMEM;
    return -1;
}
long minor_faults() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return usage.ru_minflt;
}
}  // namespace

TEST_CASE("Arena.prefault_maps_a_range_in_one_call_and_remembers_the_warm_part", "[arena]") {
    shared_arena arena(4096, std::size_t{1} << 30);
    mproc_test::ScopedSys sys;
    sys->madvise = counting_madvise;
    madvise_calls = 0;
    const std::uint64_t offset = arena.allocate(4 * mib);
    arena.prefault(offset, 4 * mib, mproc::detail::prefault_use::write);
    CHECK(madvise_calls == 1);
    const long faults = minor_faults();
    std::memset(arena.base() + offset, 5, 4 * mib);  // 1,024 pages, mapped already
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
    CHECK(minor_faults() - faults < 64);  // (a sanitizer's shadow memory faults in meanwhile)
#else
    (void)faults;
#endif
    arena.prefault(offset + mib, mib, mproc::detail::prefault_use::read);  // warm and mapped: no call
    CHECK(madvise_calls == 1);
    // A forked copy maps nothing of the parent's shared pages: it asks for its own.
    mproc::Process child([&arena, offset] {
        madvise_calls = 0;
        arena.prefault(offset, 4 * mib, mproc::detail::prefault_use::read);
        return madvise_calls == 1 && std::to_integer<int>(arena.base()[offset + 4 * mib - 1]) == 5;
    });
    child.start();
    REQUIRE(child.join(std::chrono::seconds(60)));
    CHECK(child.result());
    // Beyond the warm part pages are given back when released: never remembered.
    (void)arena.allocate(shared_arena::warm);
    const std::uint64_t cold = arena.allocate(mib);
    arena.prefault(cold, mib, mproc::detail::prefault_use::write);
    arena.prefault(cold, mib, mproc::detail::prefault_use::write);
    CHECK(madvise_calls == 3);
}

TEST_CASE("Arena.prefault_that_fails_leaves_the_pages_to_fault_in", "[arena][fault]") {
    shared_arena arena(4096, std::size_t{1} << 30);
    mproc_test::ScopedSys sys;
    sys->madvise = failing_madvise;
    madvise_calls = 0;
    const std::uint64_t offset = arena.allocate(mib);
    errno = 0;
    arena.prefault(offset, mib, mproc::detail::prefault_use::write);
    CHECK(errno == 0);  // not the failed call's
    arena.prefault(offset, mib, mproc::detail::prefault_use::write);
    CHECK(madvise_calls == 2);  // not remembered as mapped
    std::memset(arena.base() + offset, 9, mib);
    CHECK(std::to_integer<int>(arena.base()[offset + mib - 1]) == 9);
}
