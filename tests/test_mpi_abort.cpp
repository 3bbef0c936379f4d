// A program whose rank 0 function throws after some work: the job must end with MPI_Abort and a
// non-zero exit, never hang (tests/mpi/expect_failure.sh checks both). It is also the "other
// binary" of the mismatched launch `mpirun -np 1 test_mpi : -np 1 test_mpi_abort`.
// With --unflushed-cout, std::cout is off stdio's buffers (sync_with_stdio(false)) and rank 0
// writes a line to it without flushing before it throws: the abort must not lose that line.
#include <mproc/mpi.hpp>

#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {
int twice(int x) { return 2 * x; }
}  // namespace

int main(int argc, char** argv) {
    const bool unflushed_cout = argc > 1 && std::string_view(argv[1]) == "--unflushed-cout";
    if (unflushed_cout) std::ios::sync_with_stdio(false);
    return mproc::mpi::run(argc, argv, [&](mproc::mpi::Pool& pool) -> int {
        const auto doubled = pool.map(twice, std::vector<int>(1000, 1));
        if (unflushed_cout) std::cout << "rank 0 left this line in std::cout's buffer\n";
        throw std::runtime_error("rank 0 gives up after " + std::to_string(doubled.size()) +
                                 " results");
    });
}
