#include <mproc/error.hpp>
#include <mproc/sync.hpp>  // BrokenBarrierError
#include <mproc/version.hpp>

#include <catch2/catch.hpp>

#include <csignal>
#include <string>
#include <type_traits>

// The versioned inline namespace is real: names resolve through it.
static_assert(std::is_same_v<mproc::Error, mproc::MPROC_ABI_NAMESPACE::Error>);
static_assert(std::is_same_v<mproc::Error, mproc::v0::Error>);

namespace {
template <class Throw>
bool caught_as_mproc_error(Throw throw_it) {
    try {
        throw_it();
    } catch (const mproc::Error&) {
        return true;
    } catch (...) {
    }
    return false;
}
}  // namespace

TEST_CASE("Error.family_roots_in_runtime_error", "[error]") {
    static_assert(std::is_base_of_v<std::runtime_error, mproc::Error>);
    static_assert(std::is_base_of_v<mproc::Error, mproc::SystemError>);
    static_assert(std::is_base_of_v<mproc::Error, mproc::RemoteError>);
    static_assert(std::is_base_of_v<mproc::Error, mproc::ProcessCrashed>);
    static_assert(std::is_base_of_v<mproc::Error, mproc::TimeoutError>);
    static_assert(std::is_base_of_v<mproc::Error, mproc::DecodeError>);
    static_assert(std::is_base_of_v<mproc::Error, mproc::EndOfStream>);
    static_assert(std::is_base_of_v<mproc::Error, mproc::StateError>);
    static_assert(std::is_base_of_v<mproc::Error, mproc::Interrupted>);
    static_assert(std::is_base_of_v<mproc::Error, mproc::BrokenBarrierError>);
    // One catch clause takes them all, as the README says.
    CHECK(caught_as_mproc_error([] { throw mproc::StateError("started twice"); }));
    CHECK(caught_as_mproc_error([] { throw mproc::Interrupted(); }));
    CHECK(caught_as_mproc_error([] { throw mproc::BrokenBarrierError("broken"); }));
    CHECK(caught_as_mproc_error([] { throw mproc::TimeoutError("late"); }));
    CHECK(std::string(mproc::version_string) ==
          std::to_string(MPROC_VERSION_MAJOR) + "." + std::to_string(MPROC_VERSION_MINOR) + "." +
              std::to_string(MPROC_VERSION_PATCH));
}

TEST_CASE("Error.system_error_carries_errno_and_call", "[error]") {
    const mproc::SystemError e(EMFILE, "socketpair");
    CHECK(e.code() == std::errc::too_many_files_open);
    CHECK(e.call() == "socketpair");
    CHECK(std::string(e.what()).find("socketpair") == 0);
}

TEST_CASE("Error.remote_error_names_type_message_and_task", "[error]") {
    const mproc::RemoteError plain("std::out_of_range", "index 9");
    CHECK(plain.type_name() == "std::out_of_range");
    CHECK(plain.message() == "index 9");
    CHECK_FALSE(plain.task_index());
    CHECK(std::string(plain.what()) == "remote std::out_of_range: index 9");
    const mproc::RemoteError task("std::domain_error", "negative", 12);
    CHECK(task.task_index() == 12u);
    CHECK(std::string(task.what()) == "task 12 raised std::domain_error: negative");
}

TEST_CASE("Error.process_crashed_with_a_lost_status", "[error]") {
    const mproc::ProcessCrashed lost(100, mproc::ProcessCrashed::lost_status, 7);
    CHECK(lost.status_lost());
    CHECK(lost.signal() == 0);
    CHECK_FALSE(lost.exit_code());
    CHECK(lost.task_index() == 7u);
    CHECK(std::string(lost.what()).find("exit status is unknown") != std::string::npos);
    CHECK_FALSE(mproc::ProcessCrashed(100, -SIGKILL).status_lost());
}

TEST_CASE("Error.process_crashed_names_the_signal", "[error]") {
    const mproc::ProcessCrashed killed(100, -SIGSEGV);
    CHECK(killed.signal() == SIGSEGV);
    CHECK_FALSE(killed.exit_code());
    CHECK(killed.exitcode() == -SIGSEGV);
    CHECK(std::string(killed.what()) == "process 100 was killed by SIGSEGV (signal 11)");
    const mproc::ProcessCrashed exited(101, 3, 7);
    CHECK(exited.signal() == 0);
    CHECK(exited.exit_code() == 3);
    CHECK(exited.task_index() == 7u);
    CHECK(std::string(exited.what()) ==
          "process 101 running task 7 exited with code 3 without a result");
    CHECK(mproc::signal_name(SIGKILL) == "SIGKILL");
    CHECK(mproc::signal_name(64) == "signal 64");
}
