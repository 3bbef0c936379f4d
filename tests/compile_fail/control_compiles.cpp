// Must compile: the valid twins of the files beside it (a stateless function sent to a Pool and
// started by spawn, a capturing lambda started by fork, the pointees instead of pointers, owning
// strings), checked by the same harness, so a harness that fails every file (a wrong include path,
// a bad flag) cannot make the compile-failure tests pass.
#include <mproc/codec.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>

#include <string>
#include <tuple>
#include <vector>

int add_three(int n) { return n + 3; }

int main() {
    // Twins of the Process files: a stateless function starts by spawn, a capturing lambda by fork.
    mproc::Process stateless(add_three, 4);
    stateless.start(mproc::spawn);
    int offset = 3;
    mproc::Process capturing([offset](int n) { return n + offset; }, 4);
    capturing.start();
    mproc::Pool pool(1);
    auto r = pool.map([](int x) { return x + 3; }, std::vector<int>{1, 2});
    int x = 1;
    auto bytes = mproc::encode(x);
    auto more = mproc::encode(std::tuple<int, std::string>(x, "pointee"));
    mproc::Queue<int> queue;
    return static_cast<int>(r.size() + bytes.size() + more.size()) + stateless.result() + capturing.result();
}
