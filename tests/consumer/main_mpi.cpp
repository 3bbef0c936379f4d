// Uses mproc::mpi through find_package(mproc COMPONENTS mpi) or add_subdirectory; run without
// mpirun (a singleton), so its map runs on a local Pool. Exits 0 when the map is right.
#include <mproc/mpi.hpp>

#include <cstdio>
#include <vector>

int square(int x) { return x * x; }

int main(int argc, char** argv) {
    return mproc::mpi::run(argc, argv, [](mproc::mpi::Pool& pool) {
        const auto squares = pool.map(square, std::vector<int>{1, 2, 3});
        std::printf("mpi consumer ok: %d %d %d\n", squares[0], squares[1], squares[2]);
        return squares == std::vector<int>{1, 4, 9} ? 0 : 1;
    });
}
