// Must not compile: a shared object is not a value the codec sends in a message. Only the exec
// start methods take one, as an argument, by passing its memfd beside the request.
#include <mproc/queue.hpp>
#include <mproc/sync.hpp>

int main() {
    mproc::Queue<mproc::Lock> q;
    return static_cast<int>(q.qsize());
}
