// Hand-written baselines the benchmarks measure mproc against: the raw OS mechanisms with nothing
// on top. Deliberately minimal: no error reporting, no crash handling, fixed sizes.
#pragma once

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

namespace raw {

inline void futex_wait(std::atomic<std::uint32_t>& w, std::uint32_t v) {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w), FUTEX_WAIT, v, nullptr, nullptr, 0);
}
inline void futex_wake(std::atomic<std::uint32_t>& w) {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

inline void* shared_memory(std::size_t bytes) {
    return ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
}

/// Two processes bouncing a futex word: the parent sets it odd and wakes the child, the child
/// sets it even and wakes the parent. One call of round_trip() is one full exchange.
class FutexPingPong {
public:
    FutexPingPong() : word_(static_cast<std::atomic<std::uint32_t>*>(shared_memory(4096))) {
        pid_ = ::fork();
        if (pid_ == 0) {
            for (std::uint32_t expect = 1;; expect += 2) {
                std::uint32_t seen;
                while ((seen = word_->load()) != expect && seen != stop_value) futex_wait(*word_, seen);
                if (seen == stop_value) ::_exit(0);
                word_->store(expect + 1);
                futex_wake(*word_);
            }
        }
    }
    ~FutexPingPong() {
        word_->store(stop_value);
        futex_wake(*word_);
        ::waitpid(pid_, nullptr, 0);
        ::munmap(word_, 4096);
    }
    void round_trip() {
        const std::uint32_t v = word_->load() + 1;
        word_->store(v);
        futex_wake(*word_);
        while (word_->load() == v) futex_wait(*word_, v);
    }

private:
    static constexpr std::uint32_t stop_value = 0x7fffffff;
    std::atomic<std::uint32_t>* word_;
    pid_t pid_;
};

/// The raw shared-memory data path of a parallel map of x -> x * x over int64: inputs copied
/// into shared memory, chunks claimed with fetch_add by persistent worker processes, results
/// copied out. What a Pool::map of trivially copyable data can at best approach.
class SharedMemoryMap {
public:
    SharedMemoryMap(unsigned workers, std::size_t capacity) : workers_(workers), capacity_(capacity) {
        ctl_ = static_cast<control*>(shared_memory(sizeof(control)));
        in_ = static_cast<std::int64_t*>(shared_memory(capacity * 8));
        out_ = static_cast<std::int64_t*>(shared_memory(capacity * 8));
        for (unsigned w = 0; w < workers; ++w) {
            pid_t pid = ::fork();
            if (pid == 0) work();
            pids_.push_back(pid);
        }
    }
    ~SharedMemoryMap() {
        ctl_->stop.store(1);
        ctl_->round.fetch_add(1);
        ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&ctl_->round), FUTEX_WAKE, 1 << 30, nullptr, nullptr, 0);
        for (pid_t p : pids_) ::waitpid(p, nullptr, 0);
        ::munmap(ctl_, sizeof(control));
        ::munmap(in_, capacity_ * 8);
        ::munmap(out_, capacity_ * 8);
    }
    std::vector<std::int64_t> map(const std::vector<std::int64_t>& input, std::size_t chunk) {
        const std::size_t n = input.size();
        std::memcpy(in_, input.data(), n * 8);
        ctl_->n = n;
        ctl_->chunk = chunk;
        ctl_->chunks = (n + chunk - 1) / chunk;
        ctl_->next.store(0);
        ctl_->done.store(0);
        ctl_->round.fetch_add(1);
        ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&ctl_->round), FUTEX_WAKE, 1 << 30, nullptr, nullptr, 0);
        while (ctl_->done.load() != ctl_->chunks) {
            const std::uint32_t d = ctl_->done_word.load();
            if (ctl_->done.load() == ctl_->chunks) break;
            futex_wait(ctl_->done_word, d);
        }
        return std::vector<std::int64_t>(out_, out_ + n);
    }

private:
    struct control {
        alignas(64) std::atomic<std::uint32_t> round{0};
        std::atomic<std::uint32_t> stop{0};
        std::uint64_t n = 0, chunk = 0, chunks = 0;
        alignas(64) std::atomic<std::uint64_t> next{0};
        alignas(64) std::atomic<std::uint64_t> done{0};
        alignas(64) std::atomic<std::uint32_t> done_word{0};
    };
    [[noreturn]] void work() {
        std::uint32_t seen = 0;
        for (;;) {
            while (ctl_->round.load() == seen) futex_wait(ctl_->round, seen);
            seen = ctl_->round.load();
            if (ctl_->stop.load()) ::_exit(0);
            for (std::uint64_t c; (c = ctl_->next.fetch_add(1)) < ctl_->chunks;) {
                const std::uint64_t end = std::min(ctl_->n, (c + 1) * ctl_->chunk);
                for (std::uint64_t i = c * ctl_->chunk; i < end; ++i) out_[i] = in_[i] * in_[i];
                if (ctl_->done.fetch_add(1) + 1 == ctl_->chunks) {
                    ctl_->done_word.fetch_add(1);
                    futex_wake(ctl_->done_word);
                }
            }
        }
    }

    unsigned workers_;
    std::size_t capacity_;
    control* ctl_;
    std::int64_t* in_;
    std::int64_t* out_;
    std::vector<pid_t> pids_;
};

}  // namespace raw
