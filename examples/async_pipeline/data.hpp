/// \file data.hpp
/// \brief Training data for the pipeline example: scikit-learn's handwritten digits, a text corpus
/// from Debian's fortune files, or a small synthetic fallback when neither is installed.
///
/// Every microbatch is a pure function of (seed, microbatch index): each stage draws the samples it
/// needs itself (stage 0 the inputs, the last stage the labels), so no data travels through the
/// pipeline and the threaded and MPI transports see identical batches.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace pipeline {

enum class DataKind { digits, text, synthetic };

/// What a loader does with a file it cannot load: fall back to synthetic data (right for the Debian
/// default paths, whose packages may not be installed) or throw std::invalid_argument saying why
/// (right for a path the user named).
enum class Unloadable { use_synthetic, fail };

/// Where the Debian packages put the data (python3-sklearn, fortunes-min).
inline const char* const digits_default_path = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";
inline const char* const fortunes_default_dir = "/usr/share/games/fortunes";

/// A classification data set: either dense feature rows or a token stream (next-character
/// prediction from `context` previous tokens).
struct Dataset {
  std::string source;      ///< what was loaded, for logs and JSON ("digits: <path> (1797 images)")
  bool synthetic = false;  ///< true when the real data was missing and the fallback ran
  int classes = 0;         ///< labels (10 digits) or vocabulary size (text)

  // Dense rows (digits, synthetic).
  int features = 0;
  std::vector<float> x;  ///< rows x features, row-major
  std::vector<int> y;

  // Token stream (text).
  int context = 0;
  std::vector<int> tokens;
  std::string vocab;  ///< id -> byte

  bool is_text() const { return context > 0; }
  std::size_t size() const { return is_text() ? tokens.size() - static_cast<std::size_t>(context) : y.size(); }

  /// Sample index k of microbatch m (with replacement; splitmix64 of seed, m, k).
  std::size_t sample(std::uint64_t seed, std::int64_t m, int k) const {
    std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(m) * 0xBF58476D1CE4E5B9ull +
                      static_cast<std::uint64_t>(k) * 0x94D049BB133111EBull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<std::size_t>(z % size());
  }
  /// Label of sample s.
  int label(std::size_t s) const { return is_text() ? tokens[s + static_cast<std::size_t>(context)] : y[s]; }
};

namespace detail {

/// Deterministic uniform doubles in [0, 1) (splitmix64), identical on every platform.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double normal() {  // Box-Muller; one value per call keeps the stream simple
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t s_;
};

/// `s` as one POSIX shell word: single-quoted, each ' written as '\''.
inline std::string shell_quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'' ? std::string("'\\''") : std::string(1, c));
  return q + "'";
}

/// Reads a gzip file through the system's gzip (always present on Debian), so the example needs no
/// zlib. nullopt when gzip fails (not gzip data, truncated, unreadable).
inline std::optional<std::string> gunzip(const std::string& path) {
  FILE* pipe = popen(("gzip -dc " + shell_quoted(path) + " 2>/dev/null").c_str(), "r");
  if (!pipe) return std::nullopt;
  std::string out;
  char buf[65536];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  if (pclose(pipe) != 0) return std::nullopt;
  return out;
}

}  // namespace detail

/// Gaussian class clusters in 64 dimensions, 10 classes: learnable, not trivial (clusters overlap).
inline Dataset synthetic_dense(std::uint64_t seed, const std::string& why) {
  Dataset d;
  d.synthetic = true;
  d.features = 64;
  d.classes = 10;
  detail::Rng rng(seed ^ 0x5EED);
  std::vector<double> centers(static_cast<std::size_t>(d.classes * d.features));
  for (auto& c : centers) c = 0.5 * rng.normal();
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const int c = i % d.classes;
    for (int f = 0; f < d.features; ++f)
      d.x.push_back(static_cast<float>(centers[static_cast<std::size_t>(c * d.features + f)] + rng.normal()));
    d.y.push_back(c);
  }
  d.source = "synthetic: 2000 Gaussian-cluster samples, 64 features, 10 classes (" + why + ")";
  return d;
}

/// A token stream from a random sparse bigram chain over 32 symbols.
inline Dataset synthetic_text(int context, std::uint64_t seed, const std::string& why) {
  Dataset d;
  d.synthetic = true;
  d.context = context;
  d.classes = 32;
  for (int v = 0; v < d.classes; ++v) d.vocab.push_back(static_cast<char>('a' + v % 26));
  detail::Rng rng(seed ^ 0x7E47);
  std::vector<std::vector<int>> next(static_cast<std::size_t>(d.classes));
  for (auto& n : next)
    for (int k = 0; k < 3; ++k) n.push_back(static_cast<int>(rng.next() % static_cast<std::uint64_t>(d.classes)));
  int t = 0;
  for (int i = 0; i < 100000; ++i) {
    d.tokens.push_back(t);
    t = next[static_cast<std::size_t>(t)][rng.next() % 3];
  }
  d.source = "synthetic: 100000-token bigram chain over 32 symbols (" + why + ")";
  return d;
}

/// scikit-learn's digits: 1797 8x8 images, 64 pixels in 0..16 then the label per CSV line. Pixels
/// are scaled to [0, 1]. A missing or malformed file falls back to synthetic_dense or throws (`mode`).
inline Dataset load_digits(const std::string& path, std::uint64_t seed, Unloadable mode = Unloadable::use_synthetic) {
  const auto unloadable = [&](const std::string& why) {
    if (mode == Unloadable::fail) throw std::invalid_argument("cannot load the digits CSV " + path + ": " + why);
    return synthetic_dense(seed, path + ": " + why + "; install python3-sklearn");
  };
  if (!std::filesystem::exists(path)) return unloadable("it does not exist");
  const std::optional<std::string> text = detail::gunzip(path);
  if (!text) return unloadable("gzip cannot decompress it");
  Dataset d;
  d.features = 64;
  d.classes = 10;
  std::istringstream lines(*text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (line.empty()) continue;
    std::istringstream cells(line);
    std::string cell;
    std::vector<double> v;
    while (std::getline(cells, cell, ',')) v.push_back(std::atof(cell.c_str()));
    if (v.size() != 65 || v[64] < 0 || v[64] > 9)
      return unloadable("line " + std::to_string(number) + " is not 64 pixels and a label 0-9 (65 columns)");
    for (int f = 0; f < 64; ++f) d.x.push_back(static_cast<float>(v[static_cast<std::size_t>(f)] / 16.0));
    d.y.push_back(static_cast<int>(v[64]));
  }
  if (d.y.empty()) return unloadable("it holds no rows");
  d.source = "digits: " + path + " (" + std::to_string(d.y.size()) + " images, 64 pixels, 10 classes)";
  return d;
}

/// The fortune files (fortunes, literature, riddles from fortunes-min, plus any others in `dir`) as
/// one byte stream; the '%' separator lines become blank lines. A missing directory or one with less
/// than 10 kB of text falls back to synthetic_text or throws (`mode`).
inline Dataset load_text(const std::string& dir, int context, std::uint64_t seed,
                         Unloadable mode = Unloadable::use_synthetic) {
  constexpr std::size_t min_bytes = 10000;  // below this a context-8 model has little to learn
  const auto unloadable = [&](const std::string& why) {
    if (mode == Unloadable::fail) throw std::invalid_argument("cannot load fortune text from " + dir + ": " + why);
    return synthetic_text(context, seed, dir + ": " + why + "; install fortunes-min");
  };
  if (!std::filesystem::exists(dir)) return unloadable("it does not exist");
  if (!std::filesystem::is_directory(dir)) return unloadable("it is not a directory");
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension().empty()) files.push_back(e.path());  // skip *.dat indexes
  std::sort(files.begin(), files.end());
  std::string corpus;
  for (const auto& f : files) {
    std::ifstream in(f);
    for (std::string line; std::getline(in, line);) corpus += (line == "%" ? std::string() : line) + '\n';
  }
  if (corpus.size() < min_bytes)
    return unloadable("its " + std::to_string(files.size()) + " fortune files hold " + std::to_string(corpus.size()) +
                      " bytes, fewer than " + std::to_string(min_bytes));
  Dataset d;
  d.context = context;
  int id_of[256];
  std::fill(std::begin(id_of), std::end(id_of), -1);
  for (unsigned char c : corpus) id_of[c] = 0;
  for (int c = 0; c < 256; ++c)
    if (id_of[c] == 0) id_of[c] = static_cast<int>(d.vocab.size()), d.vocab.push_back(static_cast<char>(c));
  d.classes = static_cast<int>(d.vocab.size());
  for (unsigned char c : corpus) d.tokens.push_back(id_of[c]);
  d.source = "text: " + std::to_string(files.size()) + " fortune files in " + dir + " (" +
             std::to_string(corpus.size()) + " bytes, " + std::to_string(d.classes) + " distinct)";
  return d;
}

/// Loads `kind`; an empty path means the Debian default location.
inline Dataset load_dataset(DataKind kind, const std::string& path, int context, std::uint64_t seed,
                            Unloadable mode = Unloadable::use_synthetic) {
  switch (kind) {
    case DataKind::digits:
      return load_digits(path.empty() ? digits_default_path : path, seed, mode);
    case DataKind::text:
      return load_text(path.empty() ? fortunes_default_dir : path, context, seed, mode);
    case DataKind::synthetic:
      break;
  }
  return synthetic_dense(seed, "requested with --data synthetic");
}

}  // namespace pipeline
