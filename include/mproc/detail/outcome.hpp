// The outcome of a call made in another process, as it travels back: a tag byte, then either the
// encoded return value or the exception's type name and message. Process and Pool share it.
#pragma once

#include <mproc/codec.hpp>
#include <mproc/error.hpp>

#include <cxxabi.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

MPROC_NAMESPACE_BEGIN
namespace detail {

enum class outcome_tag : std::uint8_t { value = 0, exception = 1 };

/// A readable name for a mangled type name ("std::invalid_argument").
[[nodiscard]] inline std::string demangle(const char* mangled) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> name(
        abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
    return status == 0 && name ? std::string(name.get()) : std::string(mangled);
}

/// Type name and message of the exception being handled; works for any thrown type, so
/// `throw 42;` reports as "int".
[[nodiscard]] inline std::pair<std::string, std::string> describe_current_exception() {
    const std::type_info* type = abi::__cxa_current_exception_type();
    try {
        throw;
    } catch (const std::exception& e) {
        return {demangle(typeid(e).name()), e.what()};
    } catch (...) {
        return {type ? demangle(type->name()) : "unknown exception", ""};
    }
}

/// Runs `fn()` and appends its outcome to `out`. Returns true when it returned normally.
/// An exception from fn, or from encoding its result, is captured, never propagated.
template <class R, class Fn>
bool run_and_encode_outcome(std::vector<std::byte>& out, Fn&& fn) {
    const std::size_t mark = out.size();
    try {
        Encoder encoder(out);
        if constexpr (std::is_void_v<R>) {
            std::forward<Fn>(fn)();
            encoder(outcome_tag::value);
        } else {
            R value = std::forward<Fn>(fn)();
            encoder(outcome_tag::value, value);
        }
        return true;
    } catch (...) {
        out.resize(mark);
        auto [type, message] = describe_current_exception();
        Encoder encoder(out);
        encoder(outcome_tag::exception, type, message);
        return false;
    }
}

/// Decodes an outcome: returns the value, or throws RemoteError for a remote exception.
/// @throws DecodeError for bytes that are not an outcome of R.
template <class R>
R decode_outcome(std::span<const std::byte> bytes, std::optional<std::size_t> task_index = {}) {
    Decoder decoder(bytes);
    outcome_tag tag{};
    decoder(tag);
    if (tag == outcome_tag::exception) {
        std::string type, message;
        decoder(type, message);
        throw RemoteError(std::move(type), std::move(message), task_index);
    }
    if (tag != outcome_tag::value) throw DecodeError("mproc: unknown outcome tag");
    if constexpr (std::is_void_v<R>) {
        if (decoder.remaining() != 0) throw DecodeError("mproc: trailing bytes after a void result");
    } else {
        R value = decode<R>(decoder);
        if (decoder.remaining() != 0) throw DecodeError("mproc: trailing bytes after a result");
        return value;
    }
}

}  // namespace detail
MPROC_NAMESPACE_END
