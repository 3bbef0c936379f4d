#include "support.hpp"

#include <mproc/pipe.hpp>
#include <mproc/process.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {
// Writes raw bytes on a connection's descriptor, bypassing the codec and the framing.
void write_raw(int fd, const void* data, std::size_t size) {
    REQUIRE(::write(fd, data, size) == static_cast<ssize_t>(size));
}
}  // namespace

TEST_CASE("Pipe.duplex.both_directions", "[pipe]") {
    auto [a, b] = mproc::Pipe<std::string>();
    CHECK((a.readable() && a.writable() && b.readable() && b.writable()));
    b.send("hello");
    CHECK(a.recv() == "hello");
    a.send("back");
    CHECK(b.recv() == "back");
}

TEST_CASE("Pipe.simplex.direction_is_enforced", "[pipe]") {
    auto [reader, writer] = mproc::Pipe<int>(false);
    CHECK((reader.readable() && !reader.writable()));
    CHECK((!writer.readable() && writer.writable()));
    CHECK_THROWS_AS(reader.send(1), mproc::StateError);
    CHECK_THROWS_AS((void)writer.recv(), mproc::StateError);
    CHECK_THROWS_AS((void)writer.poll(), mproc::StateError);
    writer.send(5);
    CHECK(reader.recv() == 5);
}

TEST_CASE("Pipe.closed_end_is_an_error", "[pipe]") {
    auto [a, b] = mproc::Pipe<int>();
    a.close();
    a.close();  // harmless twice
    CHECK(a.closed());
    CHECK(a.fileno() == -1);
    CHECK_THROWS_AS(a.send(1), mproc::StateError);
    CHECK_THROWS_AS((void)a.recv(), mproc::StateError);
}

TEST_CASE("Pipe.between_processes.order_kept", "[pipe]") {
    auto [reader, writer] = mproc::Pipe<std::vector<int>>(false);
    mproc::Process sender([&writer = writer] {
        for (int i = 0; i < 1000; ++i) writer.send(std::vector<int>(static_cast<std::size_t>(i % 17), i));
    });
    sender.start();
    writer.close();  // the child holds the only writer now
    for (int i = 0; i < 1000; ++i) {
        auto v = reader.recv();
        REQUIRE(v.size() == static_cast<std::size_t>(i % 17));
        REQUIRE(std::all_of(v.begin(), v.end(), [i](int x) { return x == i; }));
    }
    CHECK_THROWS_AS((void)reader.recv(), mproc::EndOfStream);
    sender.join();
    CHECK(sender.exitcode() == 0);
}

TEST_CASE("Pipe.two_way_between_processes", "[pipe]") {
    auto [here, there] = mproc::Pipe<std::string>();
    mproc::Process peer([&there = there] {
        const std::string greeting = there.recv();
        there.send(greeting + ", and hello back");
    });
    peer.start();
    there.close();
    here.send("hello");
    CHECK(here.recv() == "hello, and hello back");
    peer.join();
}

TEST_CASE("Pipe.sizes.one_byte_to_one_gib", "[pipe][large]") {
    auto [reader, writer] = mproc::Pipe<std::vector<char>>(false);
    const std::vector<std::size_t> sizes{1, 65536, (1u << 20) + 1, std::size_t{1} << 30};
    mproc::Process sender([&writer = writer, &sizes] {
        for (std::size_t n : sizes) {
            std::vector<char> v(n, 'x');
            v.front() = 'a';
            v.back() = 'z';
            writer.send(v);
        }
    });
    sender.start();
    writer.close();
    for (std::size_t n : sizes) {
        auto v = reader.recv();
        REQUIRE(v.size() == n);
        CHECK(v.back() == 'z');
        if (n > 1) CHECK(v.front() == 'a');
    }
    sender.join();
    CHECK(sender.exitcode() == 0);
}

TEST_CASE("Pipe.receive_buffer_keeps_its_bytes_as_it_grows", "[pipe]") {
    // The buffer a Connection receives into grows by realloc (no copy of a large block, no
    // clearing): what was read before a growth must still be there after it.
    mproc::detail::frame_buffer buffer;
    buffer.resize(10);
    for (int i = 0; i < 10; ++i) buffer.data()[i] = static_cast<std::byte>(i + 1);
    for (std::size_t size : {std::size_t{4096}, std::size_t{1} << 20, std::size_t{1} << 26}) {
        buffer.resize(size);
        buffer.data()[size - 1] = std::byte{0x5a};
        REQUIRE(buffer.size() == size);
        for (int i = 0; i < 10; ++i) CHECK(buffer.data()[i] == static_cast<std::byte>(i + 1));
    }
    CHECK(buffer.bytes().back() == std::byte{0x5a});
    buffer.clear();
    CHECK(buffer.bytes().empty());
    buffer.resize(3);  // within the capacity: the same bytes
    CHECK(buffer.data()[2] == static_cast<std::byte>(3));
    mproc::detail::frame_buffer moved(std::move(buffer));
    CHECK(moved.size() == 3);
    CHECK(moved.data()[0] == std::byte{1});
    CHECK(buffer.size() == 0);  // NOLINT(bugprone-use-after-move): a moved-from buffer is empty
}

TEST_CASE("Pipe.end_of_stream_when_peer_process_exits", "[pipe]") {
    auto [a, b] = mproc::Pipe<int>();
    mproc::Process peer([&b = b] { b.send(1); });
    peer.start();
    b.close();
    CHECK(a.recv() == 1);
    CHECK_THROWS_AS((void)a.recv(), mproc::EndOfStream);
    CHECK(a.poll());  // end of stream counts as ready, as in Python
}

TEST_CASE("Pipe.send_to_closed_peer_is_end_of_stream_not_sigpipe", "[pipe]") {
    auto [a, b] = mproc::Pipe<std::string>();
    a.close();
    CHECK_THROWS_AS(b.send(std::string(1 << 20, 'x')), mproc::EndOfStream);
}

TEST_CASE("Pipe.poll.timeout", "[pipe]") {
    auto [a, b] = mproc::Pipe<int>();
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(a.poll(50ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 50ms);
    CHECK_FALSE(a.poll());
    b.send(3);
    CHECK(a.poll(1s));
    CHECK(a.recv() == 3);
}

TEST_CASE("Pipe.garbage.undecodable_message_closes_the_end", "[pipe][fault]") {
    auto [a, b] = mproc::Pipe<std::string>();
    const std::uint64_t length = 3;  // too short to hold a string's 8-byte length
    write_raw(b.fileno(), &length, sizeof length);
    write_raw(b.fileno(), "abc", 3);
    CHECK_THROWS_AS((void)a.recv(), mproc::DecodeError);
    CHECK(a.closed());
}

TEST_CASE("Pipe.garbage.truncated_message_is_end_of_stream", "[pipe][fault]") {
    auto [a, b] = mproc::Pipe<std::string>();
    const std::uint64_t length = 100;
    write_raw(b.fileno(), &length, sizeof length);
    write_raw(b.fileno(), "only ten..", 10);
    b.close();
    CHECK_THROWS_AS((void)a.recv(), mproc::EndOfStream);
    CHECK(a.closed());
}

TEST_CASE("Pipe.garbage.hostile_length_allocates_nothing_huge", "[pipe][fault]") {
    auto [a, b] = mproc::Pipe<std::string>();
    const std::uint64_t length = std::uint64_t{1} << 62;
    write_raw(b.fileno(), &length, sizeof length);
    write_raw(b.fileno(), "tiny", 4);
    b.close();
    CHECK_THROWS_AS((void)a.recv(), mproc::EndOfStream);
}

TEST_CASE("Pipe.garbage.half_a_header", "[pipe][fault]") {
    auto [a, b] = mproc::Pipe<int>();
    write_raw(b.fileno(), "abc", 3);
    b.close();
    CHECK_THROWS_AS((void)a.recv(), mproc::EndOfStream);
}

namespace {
int eintr_reads = 0;           // EINTRs still to inject
int eintr_reads_injected = 0;  // EINTRs injected: proves recv read through the seam
ssize_t read_with_eintr(int fd, void* buf, size_t n) {
    if (eintr_reads > 0) {
        --eintr_reads;
        ++eintr_reads_injected;
        errno = EINTR;
        return -1;
    }
    return ::read(fd, buf, n);
}
// A kernel that takes at most 1000 bytes a call, and is interrupted every other call.
int send_calls = 0;
ssize_t sendmsg_in_pieces(int fd, const msghdr* msg, int flags) {
    if (++send_calls % 2 == 0) {
        errno = EINTR;
        return -1;
    }
    msghdr small = *msg;
    iovec first = msg->msg_iov[0];
    first.iov_len = std::min<std::size_t>(first.iov_len, 1000);
    small.msg_iov = &first;
    small.msg_iovlen = 1;
    return ::sendmsg(fd, &small, flags);
}
}  // namespace

TEST_CASE("Pipe.eintr_and_partial_writes", "[pipe][fault]") {
    auto [reader, writer] = mproc::Pipe<std::string>(false);
    std::string message(200'000, 'q');
    for (std::size_t i = 0; i < message.size(); i += 7) message[i] = static_cast<char>('a' + i % 26);
    mproc::Process sender([&writer = writer, &message] {
        mproc::detail::sys().sendmsg = sendmsg_in_pieces;
        writer.send(message);
        // Both faults were met: 200 pieces of at most 1000 bytes, each but the first after an
        // EINTR, take at least 399 calls.
        if (send_calls < 2 * 200 - 1) ::_exit(3);
    });
    sender.start();
    writer.close();
    mproc_test::ScopedSys sys;
    eintr_reads = 5;
    eintr_reads_injected = 0;
    sys->read = read_with_eintr;
    CHECK(reader.recv() == message);
    CHECK(eintr_reads_injected == 5);
    sender.join();
    CHECK(sender.exitcode() == 0);
}

TEST_CASE("Pipe.no_descriptor_leak", "[pipe]") {
    const int before = mproc_test::open_fd_count();
    for (int i = 0; i < 1000; ++i) {
        auto [a, b] = mproc::Pipe<int>(i % 2 == 0);
        b.send(i);
        REQUIRE(a.recv() == i);
    }
    CHECK(mproc_test::open_fd_count() == before);
}

TEST_CASE("Pipe.one_sender_and_one_receiver_thread_per_end", "[pipe][threads]") {
    // A duplex end is commonly used by a reader thread and a writer thread at once: sending must
    // not touch the buffer a receive is filling.
    auto [a, b] = mproc::Pipe<std::vector<std::uint32_t>>();
    constexpr std::uint32_t count = 3000;
    auto message = [](std::uint32_t i) { return std::vector<std::uint32_t>(i % 997 + 1, i); };
    std::atomic<int> bad{0};
    auto sender = [&](mproc::Connection<std::vector<std::uint32_t>>& end) {
        try {
            for (std::uint32_t i = 0; i < count; ++i) end.send(message(i));
        } catch (...) {
            ++bad;
        }
    };
    auto receiver = [&](mproc::Connection<std::vector<std::uint32_t>>& end) {
        try {
            for (std::uint32_t i = 0; i < count; ++i)
                if (end.recv() != message(i)) ++bad;
        } catch (...) {
            ++bad;
        }
    };
    std::thread threads[] = {std::thread(sender, std::ref(a)), std::thread(receiver, std::ref(a)),
                             std::thread(sender, std::ref(b)), std::thread(receiver, std::ref(b))};
    for (auto& t : threads) t.join();
    CHECK(bad == 0);
}

TEST_CASE("Pipe.peer_killed_mid_message_is_end_of_stream", "[pipe][fault]") {
    auto [reader, writer] = mproc::Pipe<std::vector<char>>(false);
    mproc::Process sender([&writer = writer] { writer.send(std::vector<char>(16 << 20, 'x')); });
    sender.start();
    writer.close();
    // The message is far larger than the socket buffer: the sender is blocked partway.
    REQUIRE(reader.poll(10s));
    std::this_thread::sleep_for(50ms);
    sender.kill();
    CHECK(sender.join(10s));
    CHECK_THROWS_AS((void)reader.recv(), mproc::EndOfStream);
    CHECK(reader.closed());
}

TEST_CASE("Pipe.poll_times_out_while_the_writer_is_stopped", "[pipe][fault]") {
    auto [reader, writer] = mproc::Pipe<int>(false);
    mproc::Process sender([&writer = writer] {
        ::raise(SIGSTOP);  // stopped before it sends
        writer.send(7);
    });
    sender.terminate_grace = 10ms;
    sender.start();
    writer.close();
    CHECK_FALSE(reader.poll(200ms));
    ::kill(sender.pid(), SIGCONT);
    CHECK(reader.poll(10s));
    CHECK(reader.recv() == 7);
    CHECK(sender.join(10s));
}

TEST_CASE("Pipe.garbage.hostile_element_count_is_a_decode_error", "[pipe][fault]") {
    // A well-framed message whose vector claims 2^60 elements: refused, not allocated.
    auto [a, b] = mproc::Pipe<std::vector<std::uint64_t>>();
    const std::uint64_t body[] = {std::uint64_t{1} << 60, 1, 2};
    const std::uint64_t length = sizeof body;
    write_raw(b.fileno(), &length, sizeof length);
    write_raw(b.fileno(), body, sizeof body);
    CHECK_THROWS_AS((void)a.recv(), mproc::DecodeError);
}

namespace {
int reads_before_failure = 0;
ssize_t read_then_fail(int fd, void* buf, size_t n) {
    if (reads_before_failure-- == 0) {
        errno = EIO;
        return -1;
    }
    return ::read(fd, buf, std::min<std::size_t>(n, 8));
}
}  // namespace

TEST_CASE("Pipe.failure_inside_a_message_closes_the_end", "[pipe][fault]") {
    // A read that fails after part of a message (an I/O error, or bad_alloc growing the buffer)
    // leaves the stream mid-message: the end must be closed, not left to read the rest of that
    // message as the start of the next one.
    auto [a, b] = mproc::Pipe<std::string>();
    b.send("first message, long enough for several reads");
    b.send("second");
    {
        mproc_test::ScopedSys sys;
        reads_before_failure = 2;  // the header, then 8 bytes of the payload
        sys->read = read_then_fail;
        CHECK_THROWS_AS((void)a.recv(), mproc::SystemError);
    }
    CHECK(a.closed());
    CHECK_THROWS_AS((void)a.recv(), mproc::StateError);
}

// The wait behind mproc::mpi's abort (tests/mpi/abort_waits_for_reader.sh checks it end to end):
// on a pipe or a socket it lasts until the reader has taken every byte, or until the deadline.
TEST_CASE("Pipe.wait_until_read.pipe_socket_and_file", "[pipe]") {
    using mproc::detail::Deadline;
    using mproc::detail::unique_fd;
    using mproc::detail::wait_until_read;
    auto check_end = [](int write_end, int read_end) {
        CHECK(wait_until_read(write_end, Deadline::after(0ms)));  // nothing written
        write_raw(write_end, "abc", 3);
        const auto start = std::chrono::steady_clock::now();
        CHECK_FALSE(wait_until_read(write_end, Deadline::after(50ms)));
        CHECK(std::chrono::steady_clock::now() - start >= 50ms);
        ssize_t got = 0;  // Catch2's assertions stay on the test's thread
        std::thread reader([read_end, &got] {
            std::this_thread::sleep_for(20ms);
            char bytes[3];
            got = ::read(read_end, bytes, sizeof bytes);
        });
        CHECK(wait_until_read(write_end, Deadline::after(10s)));
        reader.join();
        CHECK(got == 3);
    };
    SECTION("pipe") {
        int ends[2];
        REQUIRE(::pipe(ends) == 0);
        unique_fd read_end(ends[0]), write_end(ends[1]);
        check_end(write_end.get(), read_end.get());
    }
    SECTION("socket") {
        auto [a, b] = mproc::detail::make_socketpair();
        check_end(b.get(), a.get());
    }
    SECTION("a file keeps what it is given: nothing to wait for") {
        std::FILE* file = std::tmpfile();
        REQUIRE(file != nullptr);
        write_raw(::fileno(file), "abc", 3);
        CHECK(wait_until_read(::fileno(file), Deadline::after(10s)));
        std::fclose(file);
    }
}
