// Upper-cases a folder of text files in parallel: each pool worker reads one file and writes its
// upper-cased copy beside it. The files are made in a fresh temporary folder, which is removed
// at the end; the program reports the bytes and the time.
#include "example_util.hpp"

#include <mproc/pool.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <system_error>
#include <vector>

namespace {
namespace fs = std::filesystem;

// A pool task is a plain function: the path travels as a std::string argument.
std::uint64_t upper_case_copy(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::string text(std::istreambuf_iterator<char>(in), {});
    std::ranges::transform(text, text.begin(), [](unsigned char c) { return std::toupper(c); });
    std::ofstream(path + ".upper", std::ios::binary) << text;
    return text.size();
}

// A folder made by mkdtemp, removed with everything in it when this goes out of scope.
struct TemporaryFolder {
    fs::path path;
    TemporaryFolder() {
        std::string name = (fs::temp_directory_path() / "mproc-upper-XXXXXX").string();
        if (::mkdtemp(name.data()) == nullptr)
            throw fs::filesystem_error("mkdtemp", std::error_code(errno, std::generic_category()));
        path = name;
    }
    TemporaryFolder(const TemporaryFolder&) = delete;
    TemporaryFolder& operator=(const TemporaryFolder&) = delete;
    ~TemporaryFolder() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};
}  // namespace

int main(int argc, char** argv) {
    const bool is_short = example::is_short(argc, argv);
    const int files = is_short ? 20 : 100;
    const std::size_t lines_per_file = is_short ? 500 : 5000;

    TemporaryFolder folder;
    std::vector<std::string> paths;
    for (int f = 0; f < files; ++f) {
        paths.push_back((folder.path / fmt::format("text{:03}.txt", f)).string());
        std::ofstream out(paths.back());
        for (std::size_t line = 0; line < lines_per_file; ++line)
            out << "the quick brown fox jumps over the lazy dog, line " << line << '\n';
    }

    example::Stopwatch clock;
    mproc::Pool pool;
    const std::vector<std::uint64_t> sizes = pool.map(upper_case_copy, paths);
    const double seconds = clock.seconds();

    const std::uint64_t bytes = std::reduce(sizes.begin(), sizes.end(), std::uint64_t{0});
    std::ifstream check(paths.front() + ".upper");
    std::string first_line;
    std::getline(check, first_line);
    fmt::print("{} files, {} bytes upper-cased in {:.3f} s on {} processes ({:.1f} MB/s)\n", files,
               bytes, seconds, pool.processes(), static_cast<double>(bytes) / seconds / 1e6);
    fmt::print("first line: {}\n", first_line);
    return first_line.starts_with("THE QUICK BROWN FOX") ? 0 : 1;
}
