// mproc::codec specializations for the std vocabulary types (pair, tuple, optional, variant,
// monostate, chrono), and the refusals of the std types that cannot cross a process boundary.
// Include <mproc/codec.hpp> rather than this file.
#pragma once

#include <mproc/detail/codec_default.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

MPROC_NAMESPACE_BEGIN

/// std::pair: first, then second.
template <class A, class B>
struct codec<std::pair<A, B>> {
    using mproc_elements = detail::type_list<A, B>;
    static constexpr std::size_t mproc_min_size =
        detail::add_sat(detail::min_wire_size_v<A>, detail::min_wire_size_v<B>);
    static void encode(Encoder& e, const std::pair<A, B>& p) {
        detail::encode_one(e, p.first);
        detail::encode_one(e, p.second);
    }
    static std::pair<A, B> decode(Decoder& d) {
        // Braced initializers are evaluated left to right: first is read before second.
        return std::pair<A, B>{detail::decode_one<A>(d), detail::decode_one<B>(d)};
    }
};

/// std::tuple: the elements in order.
template <class... Ts>
struct codec<std::tuple<Ts...>> {
    using mproc_elements = detail::type_list<Ts...>;
    static constexpr std::size_t mproc_min_size = [] {
        std::size_t sum = 0;
        ((sum = detail::add_sat(sum, detail::min_wire_size_v<Ts>)), ...);
        return sum;
    }();
    static void encode(Encoder& e, const std::tuple<Ts...>& t) {
        std::apply([&](const Ts&... elements) { (detail::encode_one(e, elements), ...); }, t);
    }
    static std::tuple<Ts...> decode([[maybe_unused]] Decoder& d) {
        return std::tuple<Ts...>{detail::decode_one<Ts>(d)...};  // in order, as above
    }
};

/// std::optional: a flag byte (0 empty, 1 engaged), then the value.
template <class T>
struct codec<std::optional<T>> {
    using mproc_elements = detail::type_list<T>;
    static constexpr std::size_t mproc_min_size = 1;
    static void encode(Encoder& e, const std::optional<T>& o) {
        e(o.has_value());
        if (o) detail::encode_one(e, *o);
    }
    static std::optional<T> decode(Decoder& d) {
        if (!detail::decode_one<bool>(d)) return std::nullopt;
        return std::optional<T>(std::in_place, detail::decode_one<T>(d));
    }
};

/// std::variant: the index (one byte below 256 alternatives, else four), then the alternative.
template <class... Ts>
struct codec<std::variant<Ts...>> {
    using mproc_elements = detail::type_list<Ts...>;
    using V = std::variant<Ts...>;
    using index_type = std::conditional_t<(sizeof...(Ts) <= 256), std::uint8_t, std::uint32_t>;
    static constexpr std::size_t mproc_min_size = detail::add_sat(
        sizeof(index_type), std::min({detail::min_wire_size_v<Ts>...}));

    static void encode(Encoder& e, const V& v) {
        if (v.valueless_by_exception())
            throw Error("mproc::encode: a std::variant that is valueless by exception");
        e(static_cast<index_type>(v.index()));
        std::visit([&](const auto& alternative) { detail::encode_one(e, alternative); }, v);
    }
    static V decode(Decoder& d) {
        const auto index = detail::decode_one<index_type>(d);
        if (index >= sizeof...(Ts)) detail::throw_decode("a variant index out of range");
        return decoders()[index](d);
    }

private:
    template <std::size_t I>
    static V decode_alternative(Decoder& d) {
        return V(std::in_place_index<I>, detail::decode_one<std::variant_alternative_t<I, V>>(d));
    }
    static constexpr auto decoders() {
        return []<std::size_t... I>(std::index_sequence<I...>) {
            return std::array<V (*)(Decoder&), sizeof...(Ts)>{&decode_alternative<I>...};
        }(std::index_sequence_for<Ts...>{});
    }
};

/// std::monostate: nothing on the wire.
template <>
struct codec<std::monostate> {
    static constexpr std::size_t mproc_min_size = 0;
    static void encode(Encoder&, const std::monostate&) {}
    static std::monostate decode(Decoder&) { return {}; }
};

/// std::chrono::duration: its count.
template <class Rep, class Period>
struct codec<std::chrono::duration<Rep, Period>> {
    using D = std::chrono::duration<Rep, Period>;
    using mproc_elements = detail::type_list<Rep>;
    static constexpr bool mproc_bitwise = detail::bitwise_v<Rep> && sizeof(D) == sizeof(Rep);
    static constexpr std::size_t mproc_min_size = detail::min_wire_size_v<Rep>;
    static void encode(Encoder& e, const D& duration) { detail::encode_one(e, duration.count()); }
    static D decode(Decoder& d) { return D(detail::decode_one<Rep>(d)); }
};

/// std::chrono::time_point: its time since the clock's epoch. Meaningful between processes for
/// system-wide clocks (system_clock, steady_clock: CLOCK_MONOTONIC is shared by the machine).
template <class Clock, class Duration>
struct codec<std::chrono::time_point<Clock, Duration>> {
    using TP = std::chrono::time_point<Clock, Duration>;
    using mproc_elements = detail::type_list<Duration>;
    static constexpr bool mproc_bitwise = detail::bitwise_v<Duration> && sizeof(TP) == sizeof(Duration);
    static constexpr std::size_t mproc_min_size = detail::min_wire_size_v<Duration>;
    static void encode(Encoder& e, const TP& t) { detail::encode_one(e, t.time_since_epoch()); }
    static TP decode(Decoder& d) { return TP(detail::decode_one<Duration>(d)); }
};

// ---- refused: what would arrive as a dangling address in the other process ----------------

template <class T, class D>
struct codec<std::unique_ptr<T, D>> : detail::refused_codec<detail::codec_refusal::smart_pointer> {};
template <class T>
struct codec<std::shared_ptr<T>> : detail::refused_codec<detail::codec_refusal::smart_pointer> {};
template <class T>
struct codec<std::weak_ptr<T>> : detail::refused_codec<detail::codec_refusal::smart_pointer> {};
template <class C, class Traits>
struct codec<std::basic_string_view<C, Traits>> : detail::refused_codec<detail::codec_refusal::view> {};
template <class T, std::size_t N>
struct codec<std::span<T, N>> : detail::refused_codec<detail::codec_refusal::view> {};
template <class T>
struct codec<std::reference_wrapper<T>> : detail::refused_codec<detail::codec_refusal::view> {};
template <class Signature>
struct codec<std::function<Signature>> : detail::refused_codec<detail::codec_refusal::callable> {};

MPROC_NAMESPACE_END
