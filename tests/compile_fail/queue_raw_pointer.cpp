// Must not compile: a queue of raw pointers would hand another process dangling addresses. The
// error must carry the codec's own sentence, not only the queue's.
#include <mproc/queue.hpp>

int main() {
    mproc::Queue<int*> q;
    return static_cast<int>(q.qsize());
}
