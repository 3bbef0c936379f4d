// Must compile: shared objects are accepted as arguments of a Process started by spawn or
// forkserver (their memfds travel beside the request).
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

long use(mproc::Queue<int> q, mproc::Lock l, mproc::SharedValue<long> v, mproc::Barrier b, int n) {
    (void)q;
    (void)l;
    (void)b;
    return v.load() + n;
}

int main() {
    mproc::Process p(mproc::forkserver, use, mproc::Queue<int>(), mproc::Lock(), mproc::SharedValue<long>(1),
                     mproc::Barrier(2), 3);
    p.start();
    return static_cast<int>(p.result());
}
