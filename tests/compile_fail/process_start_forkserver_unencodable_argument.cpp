// Must not compile: p.start(mproc::forkserver) with an argument the codec cannot encode (a raw
// pointer means nothing in another program).
#include <mproc/process.hpp>

int twice(const int* n) { return 2 * *n; }

int main() {
    int n = 4;
    mproc::Process p(twice, &n);
    p.start(mproc::forkserver);
    return p.result();
}
