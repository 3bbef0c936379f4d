// The Pool when descriptors run out. A file of its own: UBSan's vptr check needs a free
// descriptor itself, so the sanitizer build compiles this file without that one check (see
// tests/CMakeLists.txt).
#include "support.hpp"

#include <mproc/pool.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/resource.h>

#include <cstdint>
#include <exception>
#include <numeric>
#include <vector>

namespace {
std::int64_t square(std::int64_t x) { return x * x; }

std::vector<std::int64_t> iota_vector(std::int64_t n) {
    std::vector<std::int64_t> v(static_cast<std::size_t>(n));
    std::iota(v.begin(), v.end(), 0);
    return v;
}
}  // namespace

TEST_CASE("Pool.out_of_descriptors_at_every_step", "[pool][fault]") {
    // A pool leaves its arena (one memfd) to the next pool of the process: made once here, it is
    // among the descriptors counted below, and every pool after takes it and gives it back.
    REQUIRE(mproc::Pool(2).apply(square, 2) == 4);
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    // Fill the gaps below the highest open descriptor, so that the limit alone decides.
    std::vector<int> fillers;
    int highest = -1;
    for (int fd = 0; fd < 4096; ++fd)
        if (::fcntl(fd, F_GETFD) != -1) highest = fd;
    for (;;) {
        const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        if (fd > highest) {  // no gap left below
            ::close(fd);
            break;
        }
        fillers.push_back(fd);
    }
    const int fds_before = mproc_test::open_fd_count();
    int failed = 0, worked = 0;
    for (int spare = 0; spare <= 6; ++spare) {
        INFO("descriptors to spare: " << spare);
        rlimit tight = saved;
        tight.rlim_cur = static_cast<rlim_t>(highest + 1 + spare);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
        // Nothing is checked until the limit is restored: UBSan's own checks need a descriptor.
        const auto input = iota_vector(100);
        bool right = false;
        std::exception_ptr error;
        try {
            mproc::Pool pool(2);  // a worker whose pidfd cannot be opened is watched by polling
            right = pool.apply(square, 7) == 49 && pool.map(square, input).size() == 100;
        } catch (...) {
            error = std::current_exception();
        }
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
        if (!error) {
            CHECK(right);
            ++worked;
        } else {
            try {
                std::rethrow_exception(error);
            } catch (const mproc::SystemError& e) {
                CHECK(e.code() == std::errc::too_many_files_open);
                ++failed;
            }
        }
        CHECK(mproc_test::open_fd_count() == fds_before);
        CHECK(mproc_test::no_children_left());
    }
    for (int fd : fillers) ::close(fd);
    CHECK(failed > 0);
    CHECK(worked > 0);
}
