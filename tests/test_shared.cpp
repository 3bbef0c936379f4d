// SharedValue, SharedArray and SharedMemory across processes: values, locks, atomics, owner
// death, named blocks and what is left in /dev/shm afterwards.
#include "support.hpp"

#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/shared.hpp>

#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <fcntl.h>
#include <fstream>
#include <set>
#include <string>
#include <csignal>
#include <cstring>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {


struct point {
    double x, y, z;
};

template <class T>
concept has_fetch_add = requires(T t) { t.fetch_add(1); };
template <class T>
concept has_atomic = requires(T t) { t.atomic(); };
static_assert(has_fetch_add<mproc::SharedValue<long>>);
static_assert(has_fetch_add<mproc::SharedValue<double>>);
static_assert(!has_fetch_add<mproc::SharedValue<point>>);
static_assert(!has_atomic<mproc::SharedValue<point>>);  // not lock-free: no cross-process atomics
}  // namespace

TEST_CASE("SharedValue.counter.four_processes_locked", "[shared]") {
    const auto names_before = mproc_test::our_shm_names();
    mproc::SharedValue<long> counter(0);
    mproc_test::run_children(4, [&](int) {
        for (int i = 0; i < 100'000; ++i) {
            std::lock_guard g(counter.get_lock());
            counter.value() += 1;
        }
    });
    CHECK(counter.value() == 400'000);
    CHECK(counter.get() == 400'000);
    CHECK(mproc_test::our_shm_names() == names_before);
}

TEST_CASE("SharedValue.atomics.four_processes", "[shared]") {
    mproc::SharedValue<long> counter(0);
    mproc::SharedValue<double> sum(0.0);
    mproc_test::run_children(4, [&](int) {
        for (int i = 0; i < 100'000; ++i) counter.fetch_add(1);
        for (int i = 0; i < 1000; ++i) sum.fetch_add(0.5);
    });
    CHECK(counter.load() == 400'000);
    CHECK(sum.load() == 2000.0);
    counter.store(7);
    CHECK(counter.exchange(9) == 7);
    long expected = 8;
    CHECK_FALSE(counter.compare_exchange(expected, 10));
    CHECK(expected == 9);
    CHECK(counter.compare_exchange(expected, 10));
    CHECK(counter.fetch_sub(1) == 10);
    CHECK(counter.fetch_or(0x10) == 9);
    CHECK(counter.fetch_and(0x10) == 0x19);
    CHECK(counter.fetch_xor(0x11) == 0x10);
    CHECK(counter.atomic().load() == 1);
}

TEST_CASE("SharedValue.struct.get_set_and_copies", "[shared]") {
    mproc::SharedValue<point> p(point{1, 2, 3});
    mproc::SharedValue<point> copy = p;  // a copy is the same value
    mproc::Process child([&] { copy.set(point{4, 5, 6}); });
    child.start();
    child.join();
    CHECK(p.get().x == 4);
    CHECK(p.value().z == 6);
    mproc::SharedValue<int> zero;
    CHECK(zero.value() == 0);
}

TEST_CASE("SharedValue.owner_death.sigkill", "[shared]") {
    mproc::SharedValue<int> v(0);
    mproc::Process child([&] {
        v.get_lock().acquire();
        v.value() = 13;
        ::raise(SIGKILL);  // dies holding the value's lock
    });
    child.start();
    REQUIRE(child.join(10s));
    CHECK(child.exitcode() == -SIGKILL);
    REQUIRE(v.get_lock().try_acquire_for(5s));
    CHECK(v.get_lock().owner_died());
    CHECK(v.value() == 13);
    v.get_lock().release();
    CHECK(v.get() == 13);  // the lock is usable again
    CHECK_FALSE(v.get_lock().owner_died());
}

TEST_CASE("SharedArray.cross_process", "[shared]") {
    mproc::SharedArray<double> a(1000);
    CHECK(a.size() == 1000);
    CHECK(std::accumulate(a.begin(), a.end(), 0.0) == 0.0);
    mproc_test::run_children(4, [&](int part) {
        for (std::size_t i = static_cast<std::size_t>(part); i < a.size(); i += 4) a[i] = 1.5;
    });
    CHECK(std::accumulate(a.begin(), a.end(), 0.0) == 1500.0);
    CHECK(a.span().size() == 1000);

    mproc::SharedArray<int> counts{0, 0, 0};
    mproc_test::run_children(3, [&](int) {
        for (int i = 0; i < 10'000; ++i) {
            counts.atomic(0).fetch_add(1);
            std::lock_guard g(counts.get_lock());
            counts[1] += 1;
        }
    });
    CHECK(counts[0] == 30'000);
    CHECK(counts[1] == 30'000);
    CHECK(counts[2] == 0);

    mproc::SharedArray<char> filled(5, 'x');
    CHECK(std::string(filled.begin(), filled.end()) == "xxxxx");
    const std::vector<short> init{1, 2, 3};
    mproc::SharedArray<short> copied{std::span<const short>(init)};
    CHECK(copied[2] == 3);
    mproc::SharedArray<int> empty(0);
    CHECK(empty.size() == 0);
    CHECK(empty.begin() == empty.end());
}

TEST_CASE("SharedArray.owner_death.sigkill", "[shared]") {
    mproc::SharedArray<int> a(4);
    mproc::Process child([&] {
        a.get_lock().acquire();
        a[0] = 1;
        ::raise(SIGKILL);
    });
    child.start();
    REQUIRE(child.join(10s));
    REQUIRE(a.get_lock().try_acquire_for(5s));
    CHECK(a.get_lock().owner_died());
    CHECK(a[0] == 1);
    a.get_lock().release();
}

namespace {
std::string unique_name(const char* tag) {
    return std::string("mproc_test_") + tag + "_" + std::to_string(::getpid());
}
}  // namespace

TEST_CASE("SharedMemory.create_attach_unlink", "[shared]") {
    const auto names_before = mproc_test::our_shm_names();
    const std::string name = unique_name("basic");
    {
        auto shm = mproc::SharedMemory::create(name, 4096);
        CHECK(shm.size() == 4096);
        CHECK(shm.name() == name);
        CHECK(mproc_test::our_shm_names().count(name) == 1);
        // An unrelated process would do the same: attach by name only.
        mproc::Process child([name] {
            auto view = mproc::SharedMemory::attach(name);
            std::memcpy(view.data(), "hello", 6);
            return view.size();
        });
        child.start();
        CHECK(child.result() == 4096);
        CHECK(std::string(reinterpret_cast<const char*>(shm.data())) == "hello");
        CHECK(mproc_test::our_shm_names().count(name) == 1);  // a child's handle never unlinks
        auto second = mproc::SharedMemory::attach("/" + name, false);
        CHECK(second.bytes()[0] == std::byte{'h'});
    }
    CHECK(mproc_test::our_shm_names() == names_before);  // the creator's destructor unlinked it

    auto early = mproc::SharedMemory::create(name, 100);
    auto other = mproc::SharedMemory::attach(name);
    CHECK(other.unlink());  // every party attached: drop the name at once
    CHECK(mproc_test::our_shm_names() == names_before);
    early.data()[0] = std::byte{7};
    CHECK(other.data()[0] == std::byte{7});  // mappings outlive the name
    CHECK_FALSE(early.unlink());             // already gone: not an error

    auto anonymous = mproc::SharedMemory::create(64);
    CHECK(anonymous.name().rfind("mproc_", 0) == 0);
    CHECK(mproc::SharedMemory::attach(anonymous.name()).size() == 64);
}

TEST_CASE("SharedMemory.errors.names_and_missing", "[shared]") {
    for (const char* bad : {"", "/", "a/b", ".", "..", "/x/"}) {
        try {
            (void)mproc::SharedMemory::create(bad, 10);
            FAIL("accepted bad name \"" << bad << "\"");
        } catch (const mproc::SystemError& e) {
            CHECK(e.code() == std::errc::invalid_argument);
            CHECK(std::string(e.what()).find("bad name") != std::string::npos);
        }
    }
    CHECK_THROWS_AS(mproc::SharedMemory::create(std::string(300, 'a'), 10), mproc::SystemError);
    const std::string name = unique_name("errors");
    try {
        (void)mproc::SharedMemory::attach(name);
        FAIL("attached a missing block");
    } catch (const mproc::SystemError& e) {
        CHECK(e.code() == std::errc::no_such_file_or_directory);
    }
    auto shm = mproc::SharedMemory::create(name, 10);
    try {
        (void)mproc::SharedMemory::create(name, 10);
        FAIL("created a block twice");
    } catch (const mproc::SystemError& e) {
        CHECK(e.code() == std::errc::file_exists);
    }
}

TEST_CASE("SharedMemory.keep_and_moves", "[shared]") {
    const auto names_before = mproc_test::our_shm_names();
    const std::string name = unique_name("keep");
    {
        auto shm = mproc::SharedMemory::create(name, 10);
        shm.keep();
    }
    CHECK(mproc_test::our_shm_names().count(name) == 1);
    {
        auto again = mproc::SharedMemory::attach(name);
        auto moved = std::move(again);
        CHECK(moved.size() == 10);
        CHECK(moved.unlink());
    }
    {
        auto a = mproc::SharedMemory::create(name, 10);
        auto b = std::move(a);  // ownership moves with the handle
    }
    CHECK(mproc_test::our_shm_names() == names_before);
}

TEST_CASE("SharedMemory.sigkill.leftovers", "[shared]") {
    const auto names_before = mproc_test::our_shm_names();
    const std::string name = unique_name("kill");
    SECTION("an attached child is killed: nothing left, block intact") {
        auto shm = mproc::SharedMemory::create(name, 4096);
        mproc::Process child([name] {
            auto view = mproc::SharedMemory::attach(name);
            view.data()[0] = std::byte{1};
            ::raise(SIGKILL);
        });
        child.start();
        REQUIRE(child.join(10s));
        CHECK(shm.data()[0] == std::byte{1});
    }
    SECTION("a creating child is killed: no destructor runs, its tracker unlinks the name") {
        mproc::Process child([name] {
            auto shm = mproc::SharedMemory::create(name, 4096);
            ::raise(SIGKILL);
        });
        child.start();
        REQUIRE(child.join(10s));
        const auto until = std::chrono::steady_clock::now() + 1s;
        while (mproc_test::our_shm_names().count(name) == 1 && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(1ms);
        CHECK(mproc_test::our_shm_names().count(name) == 0);
    }
    SECTION("an exception in the creator unwinds and unlinks") {
        mproc::Process child([name] {
            auto shm = mproc::SharedMemory::create(name, 4096);
            throw std::runtime_error("boom");
        });
        child.start();
        CHECK_THROWS_AS(child.result(), mproc::RemoteError);
    }
    CHECK(mproc_test::our_shm_names() == names_before);
}

// A file size tmpfs accepts but no address space can map: the create() that fails after
// shm_open made the name must remove it again (nobody else could).
TEST_CASE("Shared.memory.failed_mapping_leaves_no_name", "[shared]") {
    const auto names_before = mproc_test::our_shm_names();
    const std::string name = unique_name("nomap");
    try {
        (void)mproc::SharedMemory::create(name, std::size_t{1} << 60);
        FAIL("mapped 2^60 bytes");
    } catch (const mproc::SystemError& e) {
        CHECK(e.code() == std::errc::not_enough_memory);
    }
    CHECK(mproc_test::our_shm_names() == names_before);
    {  // The same through the seam, for a size that would map.
        mproc_test::ScopedSys fake;
        fake->mmap = [](void*, size_t, int, int, int, off_t) -> void* {
            errno = ENOMEM;
            return MAP_FAILED;
        };
        CHECK_THROWS_AS(mproc::SharedMemory::create(name, 4096), mproc::SystemError);
    }
    CHECK(mproc_test::our_shm_names() == names_before);
    ::shm_unlink(("/" + name).c_str());  // never left to other tests, whatever happened
}

TEST_CASE("Shared.memory.edge_inputs", "[shared]") {
    const auto names_before = mproc_test::our_shm_names();
    const std::string name = unique_name("edge");
    for (const std::string& bad : {std::string("../x"), std::string(300, 'a'), std::string("a\0b", 3)})
        CHECK_THROWS_AS(mproc::SharedMemory::create(bad, 10), mproc::SystemError);
    std::string longest = unique_name("long");  // 254 characters: the most a name may have
    longest.resize(254, 'q');
    CHECK(mproc::SharedMemory::create(longest, 1).unlink());
    {  // Size 0: a valid, empty block on both sides.
        auto zero = mproc::SharedMemory::create(name, 0);
        CHECK(zero.size() == 0);
        CHECK(mproc::SharedMemory::attach(name).size() == 0);
    }
    {  // A taken name: EEXIST, and the block already there is left alone.
        auto first = mproc::SharedMemory::create(name, 64);
        first.data()[0] = std::byte{42};
        CHECK_THROWS_AS(mproc::SharedMemory::create(name, 128), mproc::SystemError);
        auto view = mproc::SharedMemory::attach(name);
        CHECK(view.size() == 64);
        CHECK(view.data()[0] == std::byte{42});
    }
    {  // Out of descriptors: a clean error, no name made, and it works once they are back.
        rlimit saved{};
        REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
        std::vector<int> fds;
        rlimit low = saved;
        low.rlim_cur = static_cast<rlim_t>(mproc_test::open_fd_count() + 8);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
        for (int fd; (fd = ::dup(0)) >= 0;) fds.push_back(fd);
        std::exception_ptr error;  // looked at once descriptors are back (sanitizers need some)
        try {
            (void)mproc::SharedMemory::create(name, 64);
        } catch (...) {
            error = std::current_exception();
        }
        for (int fd : fds) ::close(fd);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
        REQUIRE(error);
        try {
            std::rethrow_exception(error);
        } catch (const mproc::SystemError& e) {
            CHECK(e.code() == std::errc::too_many_files_open);
        }
        CHECK(mproc_test::our_shm_names() == names_before);
        CHECK(mproc::SharedMemory::create(name, 64).size() == 64);
    }
    CHECK(mproc_test::our_shm_names() == names_before);
}

namespace {
// Static handles a forked child may destroy on its way out.
struct exit_statics {
    mproc::Queue<int> queue;
    mproc::Lock lock;
    mproc::SharedValue<long> value{7};
    mproc::SharedMemory memory;
};
}  // namespace

// std::exit() in a forked child runs the static destructors it inherited (mproc's own exit is
// _exit): none may take anything away from the parent.
TEST_CASE("Shared.fork.child_exit_runs_static_destructors_harmlessly", "[shared]") {
    const auto names_before = mproc_test::our_shm_names();
    const std::string name = unique_name("exit");
    static exit_statics s{mproc::Queue<int>(), mproc::Lock(), mproc::SharedValue<long>(7),
                          mproc::SharedMemory::create(name, 4096)};
    s.memory.data()[0] = std::byte{5};
    s.queue.put(1);
    mproc::Process child([] {
        (void)s.queue.get();
        s.queue.put(2);
        s.value.fetch_add(1);
        std::exit(0);  // runs s's destructors in the child
    });
    child.start();
    REQUIRE(child.join(30s));
    CHECK(mproc_test::our_shm_names().count(name) == 1);  // the name is still there
    CHECK(mproc::SharedMemory::attach(name).data()[0] == std::byte{5});
    CHECK(s.memory.data()[0] == std::byte{5});
    CHECK(s.queue.get(5s) == 2);
    CHECK_FALSE(s.queue.closed());
    s.queue.put(3);
    CHECK(s.queue.get(5s) == 3);
    REQUIRE(s.lock.try_acquire_for(5s));
    CHECK_FALSE(s.lock.owner_died());
    s.lock.release();
    CHECK(s.value.get() == 8);
    s.memory.unlink();
    CHECK(mproc_test::our_shm_names() == names_before);
}

// Eight processes add under the value's lock; one is SIGKILLed holding it, mid-update. Nobody
// hangs, exactly one later acquisition learns of the death, and every survivor's adds count.
TEST_CASE("Shared.value.eight_adders_one_killed_holding_the_lock", "[shared]") {
    constexpr int adds = 5000;
    mproc::SharedValue<long> total(0);
    mproc::SharedValue<int> deaths_seen(0);  // counted with fetch_add, not under the lock
    std::vector<mproc::Process<void>> children;
    for (int i = 0; i < 8; ++i)
        children.emplace_back([&, i] {
            for (int n = 0; n < adds; ++n) {
                std::lock_guard g(total.get_lock());
                if (total.get_lock().owner_died()) deaths_seen.fetch_add(1);
                if (i == 0 && n == adds / 2) {
                    total.value() += 1000000;  // half an update: the repair below undoes it
                    ::raise(SIGKILL);
                }
                total.value() += 1;
            }
        });
    for (auto& c : children) c.start();
    for (auto& c : children) REQUIRE(c.join(60s));
    CHECK(children[0].exitcode() == -SIGKILL);
    for (int i = 1; i < 8; ++i) CHECK(children[static_cast<std::size_t>(i)].exitcode() == 0);
    CHECK(deaths_seen.load() <= 1);  // 0 only if the parent is the first to look, below
    REQUIRE(total.get_lock().try_acquire_for(5s));
    const bool parent_saw_it = total.get_lock().owner_died();
    total.get_lock().release();
    CHECK(deaths_seen.load() + (parent_saw_it ? 1 : 0) == 1);
    CHECK(total.get() == 7L * adds + adds / 2 + 1000000);
}

// ---- the tracker of named shared memory ----
namespace {
bool shm_exists(const std::string& name) { return mproc_test::shm_names().count(name) != 0; }

/// Alive and not a zombie (the tracker is nobody's child here: init reaps it).
bool process_running(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string pid_field, comm, state;
    if (!(stat >> pid_field >> comm >> state)) return false;
    return state != "Z" && state != "X";
}

template <class Pred>
bool within(std::chrono::milliseconds limit, Pred pred) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

/// A creator process (forked) runs `setup`, sends the tracker's pid, then waits to be killed
/// (or, with `then_exit`, returns normally). Returns the tracker's pid once the creator ended.
template <class Setup>
pid_t run_creator(Setup setup, bool then_exit) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    mproc::Process<void> creator([&] {
        ::close(fds[0]);
        setup();
        const pid_t tracker = mproc::detail::shm_names_tracker().pid();
        if (::write(fds[1], &tracker, sizeof tracker) != sizeof tracker || then_exit) return;
        for (;;) ::pause();
    });
    creator.start();
    ::close(fds[1]);
    pid_t tracker = 0;
    REQUIRE(::read(fds[0], &tracker, sizeof tracker) == sizeof tracker);
    ::close(fds[0]);
    REQUIRE(tracker > 0);
    if (!then_exit) creator.kill();
    REQUIRE(creator.join(10s));
    return tracker;
}
}  // namespace

TEST_CASE("SharedMemory.tracker.killed_creator_names_removed", "[shared][tracker]") {
    const std::string tag = std::to_string(::getpid());
    const std::string owned = "mproc_test_owned_" + tag, kept = "mproc_test_kept_" + tag,
                      unlinked = "mproc_test_unlinked_" + tag;
    const pid_t tracker = run_creator(
        [&] {
            static auto a = mproc::SharedMemory::create(owned, 4096);
            static auto b = mproc::SharedMemory::create(kept, 4096);
            b.keep();
            static auto c = mproc::SharedMemory::create(unlinked, 4096);
            c.unlink();
        },
        false);
    CHECK(within(1000ms, [&] { return !shm_exists(owned); }));  // gone within a second
    CHECK(within(5000ms, [&] { return !process_running(tracker); }));
    CHECK(shm_exists(kept));  // a kept name stays
    CHECK_FALSE(shm_exists(unlinked));
    mproc::SharedMemory::attach(kept).unlink();
}

TEST_CASE("SharedMemory.tracker.name_recreated_by_another_process_stays", "[shared][tracker]") {
    const std::string name = "mproc_test_recreated_" + std::to_string(::getpid());
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    int go[2];
    REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
    // The creator makes the name; another process (this one) attaches, unlinks it and creates
    // its own under the same name; then the creator is killed: the new file is not its to remove.
    mproc::Process<void> creator([&] {
        static auto a = mproc::SharedMemory::create(name, 4096);
        const pid_t tracker = mproc::detail::shm_names_tracker().pid();
        if (::write(fds[1], &tracker, sizeof tracker) != sizeof tracker) return;
        for (;;) ::pause();
    });
    creator.start();
    pid_t tracker = 0;
    REQUIRE(::read(fds[0], &tracker, sizeof tracker) == sizeof tracker);
    ::close(fds[0]);
    ::close(fds[1]);
    ::close(go[0]);
    ::close(go[1]);
    CHECK(mproc::SharedMemory::attach(name).unlink());
    auto mine = mproc::SharedMemory::create(name, 8192);
    creator.kill();
    REQUIRE(creator.join(10s));
    CHECK(within(5000ms, [&] { return !process_running(tracker); }));
    CHECK(shm_exists(name));
    CHECK(mine.size() == 8192);
}

TEST_CASE("SharedMemory.tracker.normal_exit", "[shared][tracker]") {
    const std::string tag = std::to_string(::getpid());
    const std::string dropped = "mproc_test_dropped_" + tag, kept = "mproc_test_kept_exit_" + tag;
    const pid_t tracker = run_creator(
        [&] {
            auto a = mproc::SharedMemory::create(dropped, 4096);  // unlinked by its destructor
            auto b = mproc::SharedMemory::create(kept, 4096);
            b.keep();
        },
        true);
    CHECK(within(5000ms, [&] { return !process_running(tracker); }));  // ends with its creator
    CHECK_FALSE(shm_exists(dropped));
    CHECK(shm_exists(kept));
    mproc::SharedMemory::attach(kept).unlink();
}
