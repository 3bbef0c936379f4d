// Must not compile: a shared object reaches a program started by exec only as an argument of its
// own, not inside another value (here a tuple), which goes through the codec.
#include <mproc/process.hpp>
#include <mproc/sync.hpp>

#include <tuple>

int take(std::tuple<mproc::Lock, int> t) { return std::get<1>(t); }

int main() {
    mproc::Process p(mproc::spawn, take, std::tuple<mproc::Lock, int>{mproc::Lock(), 1});
    p.start();
    return p.result();
}
