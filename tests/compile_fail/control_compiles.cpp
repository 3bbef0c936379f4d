// Must compile: the valid twin of the files beside it (a stateless function sent to a Pool, the
// pointees instead of pointers, owning strings), checked by the same harness, so a harness that
// fails every file (a wrong include path, a bad flag) cannot make the compile-failure tests pass.
#include <mproc/codec.hpp>
#include <mproc/pool.hpp>
#include <mproc/queue.hpp>

#include <string>
#include <tuple>
#include <vector>

int main() {
    mproc::Pool pool(1);
    auto r = pool.map([](int x) { return x + 3; }, std::vector<int>{1, 2});
    int x = 1;
    auto bytes = mproc::encode(x);
    auto more = mproc::encode(std::tuple<int, std::string>(x, "pointee"));
    mproc::Queue<int> queue;
    return static_cast<int>(r.size() + bytes.size() + more.size());
}
