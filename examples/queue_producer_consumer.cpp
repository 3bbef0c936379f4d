// Queues between processes, four ways: one producer and one consumer of three strings; then one
// producer and two consumers that stop on a sentinel (one per consumer, as Python does it); then
// the same ending on close(), which needs no sentinel; then four producers, each with a lane of
// its own (QueueOptions::lanes), whose order holds per producer only.
#include "example_util.hpp"

#include <mproc/process.hpp>
#include <mproc/queue.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {
using example::say;

void three_strings() {
    mproc::Queue<std::string> q;
    // A copy of the handle (here a capture) is the same queue in the child.
    mproc::Process producer([q]() mutable {
        for (const char* s : {"first", "second", "third"}) q.put(s);
    });
    mproc::Process consumer([q]() mutable {
        for (int i = 0; i < 3; ++i) say("consumer got {}\n", q.get());
    });
    producer.start();
    consumer.start();
    producer.join();
    consumer.join();
}

// Python: `q.put(None)` once per consumer; a consumer stops when it gets None.
int with_sentinels(int items) {
    mproc::Queue<std::optional<std::string>> q;
    std::vector<mproc::Process<int>> consumers;
    for (int c = 0; c < 2; ++c)
        consumers.emplace_back([q, c]() mutable {
            int got = 0;
            while (std::optional<std::string> item = q.get()) {
                say("consumer {} got {}\n", c, *item);
                ++got;
            }
            return got;
        });
    for (auto& c : consumers) c.start();
    for (int i = 0; i < items; ++i) q.put(fmt::format("item {}", i));
    for (std::size_t c = 0; c < consumers.size(); ++c) q.put(std::nullopt);
    int total = 0;
    for (auto& c : consumers) total += c.result();
    return total;
}

// mproc: close() ends the stream for every consumer; get() drains, then throws EndOfStream.
int with_close(int items) {
    mproc::Queue<std::string> q;
    std::vector<mproc::Process<int>> consumers;
    for (int c = 0; c < 2; ++c)
        consumers.emplace_back([q, c]() mutable {
            int got = 0;
            try {
                for (;;) {
                    say("consumer {} got {}\n", c, q.get());
                    ++got;
                }
            } catch (const mproc::EndOfStream&) {
            }
            return got;
        });
    for (auto& c : consumers) c.start();
    mproc::Process producer([q, items]() mutable {
        for (int i = 0; i < items; ++i) q.put(fmt::format("item {}", i));
        q.close();
    });
    producer.start();
    producer.join();
    int total = 0;
    for (auto& c : consumers) total += c.result();
    return total;
}

// Lanes: four producers, each dealt a ring of its own, so they never claim at the same place.
// Each producer's items stay in order; items of different producers come in any order, so the
// end is close() after the producers are done (a sentinel from here could overtake their items).
int with_lanes(int items) {
    mproc::Queue<std::pair<int, int>> q(mproc::QueueOptions{.lanes = 4});
    std::vector<mproc::Process<void>> producers;
    for (int p = 0; p < 4; ++p)
        producers.emplace_back([q, p, items]() mutable {
            for (int i = 0; i < items; ++i) q.put({p, i});
        });
    for (auto& p : producers) p.start();
    mproc::Process<int> consumer([q]() mutable {
        int got = 0, out_of_order = 0;
        std::vector<int> next(4, 0);
        try {
            for (;;) {
                const auto [p, i] = q.get();
                if (i != next[static_cast<std::size_t>(p)]++) ++out_of_order;
                ++got;
            }
        } catch (const mproc::EndOfStream&) {
        }
        say("lanes: {} items from 4 producers, {} out of their producer's order\n", got, out_of_order);
        return out_of_order == 0 ? got : -1;
    });
    consumer.start();
    for (auto& p : producers) p.join();
    q.close();
    return consumer.result();
}
}  // namespace

int main(int argc, char** argv) {
    const int items = example::is_short(argc, argv) ? 6 : 10;
    fmt::print("-- one producer, one consumer\n");
    three_strings();
    fmt::print("-- two consumers, sentinels\n");
    const int by_sentinel = with_sentinels(items);
    fmt::print("-- two consumers, close()\n");
    const int by_close = with_close(items);
    fmt::print("-- four producers, four lanes\n");
    const int by_lanes = with_lanes(items);
    fmt::print("received {} and {} of {} items, and {} of {}\n", by_sentinel, by_close, items, by_lanes,
               4 * items);
    return by_sentinel == items && by_close == items && by_lanes == 4 * items ? 0 : 1;
}
