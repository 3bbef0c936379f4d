// A program whose rank 0 function throws after some work: the job must end with MPI_Abort and a
// non-zero exit, never hang (tests/mpi/expect_failure.sh checks both). It is also the "other
// binary" of the mismatched launch `mpirun -np 1 test_mpi : -np 1 test_mpi_abort`.
#include <mproc/mpi.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace {
int twice(int x) { return 2 * x; }
}  // namespace

int main(int argc, char** argv) {
    return mproc::mpi::run(argc, argv, [](mproc::mpi::Pool& pool) -> int {
        const auto doubled = pool.map(twice, std::vector<int>(1000, 1));
        throw std::runtime_error("rank 0 gives up after " + std::to_string(doubled.size()) +
                                 " results");
    });
}
