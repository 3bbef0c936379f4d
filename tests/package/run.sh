#!/usr/bin/env bash
# The Debian package as a user gets it: cpack makes libmproc-dev_<version>_all.deb, its metadata
# is what Debian expects of a -dev package, it unpacks into a scratch root (dpkg -x: nothing is
# installed on this machine), and the consumer program builds against that root through
# find_package(mproc CONFIG REQUIRED) and through pkg-config. The version it carries is the one in
# include/mproc/version.hpp, and so are mproc.pc's, the CMake package's and CHANGELOG.md's newest.
#   tests/package/run.sh <mproc source dir> <scratch dir> [generator] [c++ compiler]
source "$(dirname "$0")/../scratch_build.sh"
fail() { echo "package check: $*"; exit 1; }

version=$(awk '/^#define MPROC_VERSION_(MAJOR|MINOR|PATCH) / {v = v (v == "" ? "" : ".") $3} END {print v}' \
          "$src/include/mproc/version.hpp")
echo "== version.hpp says $version"
changelog=$(grep -m1 -oE '^## \[[0-9]+\.[0-9]+\.[0-9]+\]' "$src/CHANGELOG.md" | tr -d '#[] ')
[ "$changelog" = "$version" ] || fail "CHANGELOG.md's newest entry is $changelog, version.hpp says $version"

echo "== cpack -G DEB"
quiet cmake -S "$src" -B "$work/build" -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF \
    -DMPROC_BUILD_BENCHMARKS=OFF -DMPROC_INSTALL=ON
(cd "$work/build" && quiet cpack -G DEB)
deb=$work/build/libmproc-dev_${version}_all.deb
[ -f "$deb" ] || fail "no $(basename "$deb") (made: $(ls "$work/build"/*.deb 2>/dev/null))"

echo "== metadata"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = libmproc-dev ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version)"
[ "$(field Architecture)" = all ] || fail "Architecture: $(field Architecture)"
[ "$(field Section)" = libdevel ] || fail "Section: $(field Section)"
[ -n "$(field Description)" ] || fail "no Description"
[ -n "$(field Recommends)" ] || fail "no Recommends"
dpkg-deb -c "$deb" >"$work/contents"
for path in ./usr/include/mproc/mproc.hpp ./usr/include/mproc/detail/sys.hpp \
            ./usr/share/cmake/mproc/mproc-config.cmake ./usr/share/pkgconfig/mproc.pc \
            ./usr/share/doc/mproc/LICENSE ./usr/share/doc/mproc/CHANGELOG.md; do
    grep -q " $path\$" "$work/contents" || fail "the package lacks $path"
done

echo "== dpkg -x into a scratch root"
root=$work/root
dpkg-deb -x "$deb" "$root"
grep -q "^Version: $version\$" "$root/usr/share/pkgconfig/mproc.pc" || fail "mproc.pc has another version"
grep -q "PACKAGE_VERSION \"$version\"" "$root/usr/share/cmake/mproc/mproc-config-version.cmake" \
    || fail "the CMake package has another version"

echo "== find_package(mproc $version CONFIG REQUIRED) from the unpacked package"
quiet cmake -S "$src/tests/consumer" -B "$work/by_package" -DCMAKE_PREFIX_PATH="$root/usr" \
    -DMPROC_REQUEST_VERSION="$version"
quiet cmake --build "$work/by_package"
"$work/by_package/consumer"
grep -q "mproc_DIR:PATH=$root/usr/share/cmake/mproc" "$work/by_package/CMakeCache.txt" \
    || fail "find_package found another mproc: $(grep mproc_DIR "$work/by_package/CMakeCache.txt")"

echo "== pkg-config from the unpacked package"
export PKG_CONFIG_PATH="$root/usr/share/pkgconfig"
cflags=$(pkg-config --cflags mproc)
[ "$(cd "$(pkg-config --variable=includedir mproc)" && pwd)" = "$root/usr/include" ] \
    || fail "pkg-config's include directory is not the package's: $cflags"
# shellcheck disable=SC2046
"$CXX" $cflags "$src/tests/consumer/main.cpp" -o "$work/by_pkgconfig" $(pkg-config --libs mproc)
"$work/by_pkgconfig"
echo "package checks passed"
