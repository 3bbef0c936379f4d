// mproc::Pipe: two connected ends that send and receive typed, codec-encoded messages, like
// Python's multiprocessing.Pipe.
#pragma once

#include <mproc/codec.hpp>
#include <mproc/detail/frame.hpp>
#include <mproc/error.hpp>

#include <chrono>
#include <utility>
#include <vector>

MPROC_NAMESPACE_BEGIN

/// One end of a Pipe: sends and/or receives whole messages of type T.
///
/// Messages of any size (64-bit lengths) arrive whole and in order. The end of stream is one
/// convention for the whole library: recv() throws mproc::EndOfStream once every peer end is
/// closed (in every process that held one) and the messages already sent are drained.
/// Ends are inherited by children forked after the Pipe was made; as in Python, close the ends a
/// process does not use (Process drops the arguments it was given in the parent at start()).
/// One end is meant for one reader at a time: two processes reading the same end concurrently
/// would split messages between them unpredictably. Within a process, one thread may send while
/// another receives on the same end; two threads sending (or two receiving) at once need a lock.
template <class T>
class Connection {
    static_assert(Encodable<T>,
                  "mproc::Pipe<T>: T must be encodable by mproc::codec (give it a member "
                  "serialize(Ar&) or specialize mproc::codec<T>)");

public:
    /// A closed end, to be assigned one made by Pipe().
    Connection() = default;
    /// @cond
    Connection(detail::unique_fd fd, bool readable, bool writable) noexcept
        : fd_(std::move(fd)), readable_(readable), writable_(writable) {}
    /// @endcond

    /// Sends one message; blocks while the peer's buffer is full.
    /// @throws EndOfStream when the peer end is closed; StateError on a closed or receive-only end.
    void send(const T& value) {
        check_open("send");
        if (!writable_) throw StateError("mproc::Connection: send() on the receive-only end of a simplex Pipe");
        send_buffer_.clear();
        encode_into(send_buffer_, value);
        detail::send_frame(fd_.get(), send_buffer_);
    }

    /// Receives the next message, blocking until one arrives.
    /// @throws EndOfStream once every peer end is closed and drained; DecodeError when the bytes
    ///         are not a T; SystemError when reading fails (after either, this end is closed,
    ///         never left half-read); StateError on a closed or send-only end.
    [[nodiscard]] T recv() {
        check_open("recv");
        if (!readable_) throw StateError("mproc::Connection: recv() on the send-only end of a simplex Pipe");
        bool got;
        try {
            got = detail::recv_frame(fd_.get(), recv_buffer_);
        } catch (...) {
            close();  // stopped inside a message (end of stream, read error, bad_alloc): the
            throw;    // rest of it would be read as the start of the next one
        }
        if (!got) throw EndOfStream("mproc::Connection: the peer closed the pipe");
        try {
            return decode<T>(recv_buffer_.bytes());
        } catch (const DecodeError&) {
            close();  // the stream's framing can no longer be trusted
            throw;
        }
    }

    /// Waits up to `timeout` for a message (or the end of stream) to be ready; with no argument,
    /// only looks. True when recv() will not block, except when only the start of a message has
    /// arrived: recv() then waits for the rest (a writer that is stopped keeps it waiting).
    template <class Rep = long, class Period = std::milli>
    [[nodiscard]] bool poll(std::chrono::duration<Rep, Period> timeout = std::chrono::milliseconds(0)) {
        check_open("poll");
        if (!readable_) throw StateError("mproc::Connection: poll() on the send-only end of a simplex Pipe");
        pollfd p{fd_.get(), POLLIN, 0};
        return detail::poll_until(std::span(&p, 1), detail::Deadline::after(timeout)) > 0;
    }

    /// Closes this end in this process. Further use is a StateError; closing twice is harmless.
    void close() noexcept { fd_.reset(); }

    /// Whether this end is closed in this process (close(), or a failed recv()).
    [[nodiscard]] bool closed() const noexcept { return !fd_.valid(); }
    /// Whether this end may recv(): false for a simplex Pipe's sending end.
    [[nodiscard]] bool readable() const noexcept { return readable_; }
    /// Whether this end may send(): false for a simplex Pipe's receiving end.
    [[nodiscard]] bool writable() const noexcept { return writable_; }
    /// The underlying descriptor, for a user's own poll loop (-1 once closed). Leave it blocking:
    /// recv() reads whole messages.
    [[nodiscard]] int fileno() const noexcept { return fd_.get(); }

private:
    void check_open(const char* what) const {
        if (closed()) throw StateError(std::string("mproc::Connection: ") + what + "() on a closed end");
    }

    detail::unique_fd fd_;
    bool readable_ = false;
    bool writable_ = false;
    // Reused between messages to avoid an allocation each; two, so that one thread may send
    // while another receives.
    std::vector<std::byte> send_buffer_;
    detail::frame_buffer recv_buffer_;
};

/// Makes a connected pair of ends. Duplex (the default): both ends send and receive. Simplex
/// (`duplex = false`): Python's order, the first end only receives and the second only sends.
/// @code
/// auto [a, b] = mproc::Pipe<std::string>();
/// b.send("hello");
/// std::string s = a.recv();
/// auto [reader, writer] = mproc::Pipe<int>(false);
/// @endcode
template <class T>
[[nodiscard]] std::pair<Connection<T>, Connection<T>> Pipe(bool duplex = true) {
    // A simplex pair is still a socket pair (not pipe(2)): MSG_NOSIGNAL then turns a write to a
    // closed reader into EndOfStream instead of a SIGPIPE that would kill the process.
    auto [first, second] = detail::make_socketpair(duplex);
    return {Connection<T>(std::move(first), true, duplex), Connection<T>(std::move(second), duplex, true)};
}

MPROC_NAMESPACE_END
