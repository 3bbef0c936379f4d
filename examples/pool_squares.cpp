// Squares of 0..9 with a pool of four worker processes: Python's `Pool(4).map(square, range(10))`.
#include <mproc/pool.hpp>

#include <fmt/ranges.h>

#include <ranges>
#include <vector>

int main() {
    mproc::Pool pool(4);
    const std::vector<int> squares = pool.map([](int x) { return x * x; }, std::views::iota(0, 10));
    fmt::print("{}\n", squares);
}
