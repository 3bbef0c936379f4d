// Ctrl-C during a long parallel search, the way Python's KeyboardInterrupt works: inside an
// mproc::InterruptScope, SIGINT makes the map throw mproc::Interrupted at once; its workers are
// replaced, and the pool is ready for the next call. Run it and press Ctrl-C; with --short (as CI
// runs it) the program sends itself SIGINT after half a second.
#include "example_util.hpp"

#include <mproc/interrupt.hpp>
#include <mproc/pool.hpp>

#include <csignal>
#include <cstdint>
#include <ranges>
#include <thread>
#include <vector>

namespace {
// A deliberately slow task: count the primes in one block of a million numbers.
std::uint64_t primes_in_block(std::uint64_t block) {
    std::uint64_t count = 0;
    for (std::uint64_t n = block * 1'000'000; n < (block + 1) * 1'000'000; ++n) count += example::is_prime(n);
    return count;
}
}  // namespace

int main(int argc, char** argv) {
    const bool short_run = example::is_short(argc, argv);
    mproc::Pool pool;
    mproc::InterruptScope ctrl_c;  // from here on, Ctrl-C is an exception in the pool's waits

    std::thread self_interrupt;
    if (short_run) {
        self_interrupt = std::thread([] {
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
            std::raise(SIGINT);
        });
    } else {
        example::say("searching primes in 10,000 blocks of a million; press Ctrl-C to stop\n");
    }

    example::Stopwatch clock;
    int status = 1;
    try {
        const auto counts = pool.map(primes_in_block, std::views::iota(std::uint64_t{1000}, std::uint64_t{11000}), 1);
        example::say("finished: {} blocks\n", counts.size());
    } catch (const mproc::Interrupted&) {
        example::say("interrupted after {:.2f} s\n", clock.seconds());
        // The pool goes on: its workers that were still in a block were replaced.
        example::say("primes below a million, counted after the interrupt: {}\n", pool.apply(primes_in_block, 0));
        status = 0;
    }
    if (self_interrupt.joinable()) self_interrupt.join();
    return short_run ? status : 0;
}
