// Must not compile: a capturing lambda sent to a Pool would see a stale copy of its captures.
#include <mproc/pool.hpp>

#include <vector>

int main() {
    mproc::Pool pool(1);
    int offset = 3;
    auto r = pool.map([offset](int x) { return x + offset; }, std::vector<int>{1, 2});
    return static_cast<int>(r.size());
}
