/// \file delayopt/io/checkpoint.hpp
/// \brief Saving and restoring an optimizer's per-run state (checkpoint / restart).
///
///   delayopt::io::save_state("opt.ckpt", space, opt, params, state);   // fences `space`
///   state = delayopt::io::load_state("opt.ckpt", space, opt, params);  // a new State value
///
/// The file holds the state only: counters, moment slots, the basis' factors, bases and counters,
/// and the delay policy's slots; not the parameters, not the hyperparameters (a restart may change
/// the learning rate). load_state checks the whole file before it returns: format and version, a
/// checksum over every byte, the composition (Basis, Moment, Delay names), the value type, the
/// blocks' names and shapes, every array's extents, and every value (finite; second moments
/// non-negative). A failed check throws invalid_input (shape_mismatch when the parameters differ)
/// naming what differs. It fills a freshly initialised state, so on any error the caller's state is
/// untouched. The format is binary in the host's byte order (a checkpoint from a machine of the
/// other byte order is refused, not misread); docs/design.md describes it.
#pragma once

#include "delayopt/core/concepts.hpp"
#include "delayopt/core/error.hpp"
#include "delayopt/core/optimizer.hpp"
#include "delayopt/core/param_set.hpp"

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace delayopt::io {

namespace detail {

inline constexpr char magic[8] = {'D', 'L', 'Y', 'O', 'P', 'T', 'C', 'K'};
inline constexpr std::uint32_t format_version = 1;
inline constexpr std::uint32_t byte_order_mark = 0x01020304u;
enum class Kind : std::uint8_t { value = 0, count = 1 };  // an array of T, an int64 counter array

/// FNV-1a, 64 bits: catches truncation and flipped bits (not deliberate tampering).
inline std::uint64_t fnv1a(const char* p, std::size_t n, std::uint64_t h) {
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 0x100000001b3ull;
  return h;
}
inline constexpr std::uint64_t fnv_basis = 0xcbf29ce484222325ull;

template <class Opt>
std::string composition() {
  return std::string(Opt::basis_type::name) + ", " + Opt::moment_type::name + ", " + Opt::delay_type::name;
}

template <class T>
const char* type_name() {
  return std::is_same_v<T, float> ? "float" : "double";
}

/// Writes through a running checksum.
class Writer {
 public:
  explicit Writer(std::ostream& out) : out_(out) {}
  void bytes(const void* p, std::size_t n) {
    out_.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
    hash_ = fnv1a(static_cast<const char*>(p), n, hash_);
  }
  template <class U>
  void pod(U v) {
    bytes(&v, sizeof v);
  }
  void str(std::string_view s) {
    pod(static_cast<std::uint64_t>(s.size()));
    bytes(s.data(), s.size());
  }
  void finish() {
    const std::uint64_t h = hash_;
    out_.write(reinterpret_cast<const char*>(&h), sizeof h);
  }

 private:
  std::ostream& out_;
  std::uint64_t hash_ = fnv_basis;
};

/// Reads from the file's bytes; running past the end is a corrupt file.
class Reader {
 public:
  Reader(const char* begin, const char* end) : p_(begin), end_(end) {}
  const char* take(std::size_t n, std::string_view what) {
    if (static_cast<std::size_t>(end_ - p_) < n)
      throw invalid_input("delayopt::io::load_state: checkpoint ends inside " + std::string(what));
    const char* at = p_;
    p_ += n;
    return at;
  }
  template <class U>
  U pod(std::string_view what) {
    U v;
    std::memcpy(&v, take(sizeof v, what), sizeof v);
    return v;
  }
  std::string str(std::string_view what) {
    const auto n = pod<std::uint64_t>(what);
    return std::string(take(n, what), n);
  }
  bool done() const { return p_ == end_; }
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }

 private:
  const char* p_;
  const char* end_;
};

struct Record {
  Kind kind = Kind::value;
  std::uint8_t element_size = 0;
  std::vector<std::uint64_t> extents;
  const char* data = nullptr;
  bool used = false;
};

inline std::string extents_text(const std::vector<std::uint64_t>& e) {
  if (e.empty()) return "a scalar";
  std::string s;
  // append, not an operator+ chain: GCC 12 -O3 reports a false -Wrestrict on that (as in describe()).
  for (std::size_t i = 0; i < e.size(); ++i) s.append(i ? "x" : "").append(std::to_string(e[i]));
  return s;
}

template <class View>
std::vector<std::uint64_t> extents_of(const View& v) {
  std::vector<std::uint64_t> e;
  for (unsigned r = 0; r < View::rank; ++r) e.push_back(v.extent(r));
  return e;
}

/// Visits the state for save_state: writes each array's host copy and each counter.
template <class T, class ExecSpace>
struct SaveVisitor {
  Writer& w;
  const ExecSpace& space;
  const std::vector<BlockShape>& shapes;

  /// One record: key, kind, element size, rank, extents, then the raw values.
  void record(std::string_view key, Kind kind, std::size_t element_size, const std::vector<std::uint64_t>& extents,
              const void* data, std::size_t bytes) {
    w.str(key);
    w.pod(kind);
    w.pod(static_cast<std::uint8_t>(element_size));
    w.pod(static_cast<std::uint32_t>(extents.size()));
    for (auto e : extents) w.pod(e);
    w.bytes(data, bytes);
  }
  void count(std::string_view key, std::int64_t value) {
    record(key, Kind::count, sizeof value, {}, &value, sizeof value);
  }
  template <class Get, class Set>
  void count(std::string_view key, Get get, Set) {
    count(key, static_cast<std::int64_t>(get()));
  }
  template <class View>
  void array(const std::string& key, const View& v, bool /*second_moment*/ = false) {
    using U = typename View::non_const_value_type;
    auto host = Kokkos::create_mirror_view(Kokkos::HostSpace(), v);
    Kokkos::deep_copy(space, host, v);
    space.fence();  // the host copy is read next
    record(key, std::is_same_v<U, std::int64_t> ? Kind::count : Kind::value, sizeof(U), extents_of(v), host.data(),
           host.size() * sizeof(U));
  }
  template <class View>
  void array(std::string_view what, std::size_t block, const View& v) {
    array(std::string(what) + "/" + shapes.at(block).name, v);
  }
};

/// Visits a fresh state for load_state: fills each array and counter from its record, checking it.
template <class T, class ExecSpace>
struct LoadVisitor {
  std::map<std::string, Record, std::less<>>& records;
  const ExecSpace& space;
  const std::vector<BlockShape>& shapes;

  Record& find(std::string_view key) {
    const auto it = records.find(key);
    if (it == records.end())
      throw invalid_input("delayopt::io::load_state: the checkpoint has no '" + std::string(key) +
                          "', which this state needs: was it saved with another basis configuration "
                          "(geometry, max_dim, source, rank-1 handling)?");
    it->second.used = true;
    return it->second;
  }
  void count(std::string_view key, std::int64_t& value) {
    const Record& r = find(key);
    if (r.kind != Kind::count || !r.extents.empty() || r.element_size != sizeof(std::int64_t))
      throw invalid_input("delayopt::io::load_state: '" + std::string(key) + "' is not a counter in the checkpoint");
    std::memcpy(&value, r.data, sizeof value);
    if (value < 0)
      throw invalid_input("delayopt::io::load_state: counter '" + std::string(key) + "' is negative (" +
                          std::to_string(value) + ")");
  }
  template <class Get, class Set>
  void count(std::string_view key, Get, Set set) {
    std::int64_t v = 0;
    count(key, v);
    set(v);
  }
  template <class View>
  void array(const std::string& key, const View& v, bool second_moment = false) {
    using U = typename View::non_const_value_type;
    constexpr bool is_count = std::is_same_v<U, std::int64_t>;
    const Record& r = find(key);
    if ((r.kind == Kind::count) != is_count || r.element_size != sizeof(U))
      throw invalid_input(
          "delayopt::io::load_state: '" + key + "' holds " +
          (r.kind == Kind::count ? std::string("counters") : std::to_string(r.element_size * 8) + "-bit values") +
          " in the checkpoint; this state wants " +
          (is_count ? std::string("counters") : std::to_string(sizeof(U) * 8) + "-bit values"));
    if (r.extents != extents_of(v))
      throw invalid_input("delayopt::io::load_state: '" + key + "' is " + extents_text(r.extents) +
                          " in the checkpoint and " + extents_text(extents_of(v)) + " in this state");
    auto host = Kokkos::create_mirror_view(Kokkos::HostSpace(), v);
    std::memcpy(host.data(), r.data, host.size() * sizeof(U));
    if constexpr (!is_count) {
      for (std::size_t i = 0; i < host.size(); ++i) {
        const U x = host.data()[i];
        if (!std::isfinite(x) || (second_moment && x < 0))
          throw invalid_input("delayopt::io::load_state: '" + key + "' element " + std::to_string(i) + " is " +
                              std::to_string(x) + (second_moment ? " (a second moment: finite and >= 0)" : ""));
      }
    } else {
      for (std::size_t i = 0; i < host.size(); ++i)
        if (host.data()[i] < 0)
          throw invalid_input("delayopt::io::load_state: counter '" + key + "' element " + std::to_string(i) +
                              " is negative");
    }
    Kokkos::deep_copy(space, v, host);
    space.fence();  // `host` dies at return
  }
  template <class View>
  void array(std::string_view what, std::size_t block, const View& v) {
    array(std::string(what) + "/" + shapes.at(block).name, v);
  }
};

/// A basis policy whose state can be checkpointed: basis::Identity (no state), or one that shows
/// its counters and arrays to a visitor (EigenbasisPolicy::visit_state is the model).
template <class Basis, class State, class Visitor>
concept CheckpointableBasis = Basis::is_identity || requires(State& s, Visitor& v) {
  Basis::visit_state(s, v);
};

/// Every array and counter of an Optimizer state, in file order.
template <class Opt, class T, class ExecSpace, class State, class Visitor>
void visit(State& state, const ParamSet<T, ExecSpace>& params, Visitor& v) {
  using Basis = typename Opt::basis_type;
  using Moment = typename Opt::moment_type;
  constexpr bool checkpointable = CheckpointableBasis<Basis, decltype(state.basis), Visitor>;
  static_assert(checkpointable,
                "delayopt::io: this basis policy has no visit_state(state, visitor), so its state cannot be "
                "checkpointed (docs/design.md, 'Checkpoints')");
  v.count("calls", state.calls);
  v.array(std::string("counters"), state.counters);
  for (int k = 0; k < Moment::slots; ++k)
    for (std::size_t i = 0; i < params.num_blocks(); ++i)
      v.array("moment" + std::to_string(k) + "/" + params.shape(i).name, state.moments[k].flat(i),
              Moment::slot_kinds[k] == SlotKind::second_moment);
  if constexpr (checkpointable && !Basis::is_identity) Basis::visit_state(state.basis, v);  // one error, not two
  for (int k = 0; k < Opt::delay_type::slots; ++k)
    for (std::size_t i = 0; i < params.num_blocks(); ++i)
      v.array("delay" + std::to_string(k) + "/" + params.shape(i).name, state.delay[k].flat(i));
}

}  // namespace detail

/// Writes `state` (of `opt`, for `params`) to `out`. Fences `space`: the state is read on the host.
/// Throws invalid_input when the stream fails.
template <class B, class M, class D, class S, class T, class ExecSpace>
void save_state(std::ostream& out, const ExecSpace& space, const Optimizer<B, M, D, S>& /*opt*/,
                const ParamSet<T, ExecSpace>& params,
                const typename Optimizer<B, M, D, S>::template State<T, ExecSpace>& state) {
  using Opt = Optimizer<B, M, D, S>;
  ParamSet<T, ExecSpace>::require_same_shapes(params, state.moments[0], "delayopt::io::save_state", "params", "state");
  detail::Writer w(out);
  w.bytes(detail::magic, sizeof detail::magic);
  w.pod(detail::format_version);
  w.pod(detail::byte_order_mark);
  w.str(detail::composition<Opt>());
  w.pod(static_cast<std::uint8_t>(sizeof(T)));
  w.pod(static_cast<std::uint64_t>(params.num_blocks()));
  for (const auto& s : params.shapes()) {
    w.str(s.name);
    w.pod(static_cast<std::uint8_t>(s.rank));
    w.pod(static_cast<std::uint64_t>(s.rows));
    w.pod(static_cast<std::uint64_t>(s.cols));
    w.pod(static_cast<std::uint8_t>(s.layout));
  }
  detail::SaveVisitor<T, ExecSpace> v{w, space, params.shapes()};
  // visit() takes the state by non-const reference (the load side fills it); saving only reads.
  auto& mutable_state = const_cast<typename Opt::template State<T, ExecSpace>&>(state);
  detail::visit<Opt>(mutable_state, params, v);
  w.str("");  // end of records
  w.finish();
  if (!out) throw invalid_input("delayopt::io::save_state: writing the checkpoint failed");
}

/// Reads a checkpoint written by save_state into a new state for `params`, checking everything
/// first (file comment). Fences `space`.
template <class B, class M, class D, class S, class T, class ExecSpace>
typename Optimizer<B, M, D, S>::template State<T, ExecSpace> load_state(std::istream& in, const ExecSpace& space,
                                                                        const Optimizer<B, M, D, S>& opt,
                                                                        const ParamSet<T, ExecSpace>& params) {
  using Opt = Optimizer<B, M, D, S>;
  const std::string where = "delayopt::io::load_state: ";
  const std::vector<char> file{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) throw invalid_input(where + "reading the checkpoint failed");
  if (file.size() < sizeof detail::magic + 8 + sizeof(std::uint64_t) ||
      std::memcmp(file.data(), detail::magic, sizeof detail::magic) != 0)
    throw invalid_input(where + "not a delayopt checkpoint (no 'DLYOPTCK' header)");
  const std::size_t body = file.size() - sizeof(std::uint64_t);
  std::uint64_t stored_hash;
  std::memcpy(&stored_hash, file.data() + body, sizeof stored_hash);
  detail::Reader r(file.data() + sizeof detail::magic, file.data() + body);
  const auto version = r.pod<std::uint32_t>("the header");
  if (version != detail::format_version)
    throw invalid_input(where + "checkpoint format version " + std::to_string(version) + "; this build reads " +
                        std::to_string(detail::format_version));
  if (r.pod<std::uint32_t>("the header") != detail::byte_order_mark)
    throw invalid_input(where + "the checkpoint was written with the other byte order");
  if (detail::fnv1a(file.data(), body, detail::fnv_basis) != stored_hash)
    throw invalid_input(where + "checksum mismatch: the checkpoint is truncated or corrupt");

  const std::string saved = r.str("the composition");
  if (saved != detail::composition<Opt>())
    throw invalid_input(where + "the checkpoint was saved by Optimizer<" + saved + ">; this is Optimizer<" +
                        detail::composition<Opt>() + ">");
  const auto value_size = r.pod<std::uint8_t>("the header");
  if (value_size != sizeof(T))
    throw invalid_input(where + "the checkpoint holds " + std::to_string(value_size * 8) + "-bit state; this is " +
                        detail::type_name<T>() + " (" + std::to_string(sizeof(T) * 8) + "-bit)");
  const auto blocks = r.pod<std::uint64_t>("the block list");
  if (blocks != params.num_blocks())
    throw shape_mismatch(where + "the checkpoint has " + std::to_string(blocks) + " blocks, params " +
                         std::to_string(params.num_blocks()));
  for (std::size_t i = 0; i < params.num_blocks(); ++i) {
    BlockShape s;
    s.name = r.str("the block list");
    s.rank = r.pod<std::uint8_t>("the block list");
    s.rows = r.pod<std::uint64_t>("the block list");
    s.cols = r.pod<std::uint64_t>("the block list");
    s.layout = static_cast<Layout>(r.pod<std::uint8_t>("the block list"));
    if (!(s == params.shape(i)))
      throw shape_mismatch(where + "block " + std::to_string(i) + " is " + describe(s) + " in the checkpoint and " +
                           describe(params.shape(i)) + " in params");
  }
  std::map<std::string, detail::Record, std::less<>> records;
  for (std::string key; !(key = r.str("the record list")).empty();) {
    detail::Record rec;
    rec.kind = r.pod<detail::Kind>("record '" + key + "'");
    rec.element_size = r.pod<std::uint8_t>("record '" + key + "'");
    const auto rank = r.pod<std::uint32_t>("record '" + key + "'");
    if (rank > 2 || (rec.kind != detail::Kind::value && rec.kind != detail::Kind::count) ||
        (rec.element_size != 4 && rec.element_size != 8))
      throw invalid_input(where + "record '" + key + "' has a malformed header");
    std::uint64_t n = 1;  // elements, guarded against overflow: extents come from the file
    for (std::uint32_t k = 0; k < rank; ++k) {
      rec.extents.push_back(r.pod<std::uint64_t>("record '" + key + "'"));
      const std::uint64_t e = rec.extents.back();
      if (e != 0 && n > r.remaining() / rec.element_size / e)
        throw invalid_input(where + "checkpoint ends inside record '" + key + "'");
      n *= e;
    }
    rec.data = r.take(n * rec.element_size, "record '" + key + "'");
    if (!records.emplace(key, rec).second) throw invalid_input(where + "record '" + key + "' appears twice");
  }
  if (!r.done()) throw invalid_input(where + "bytes after the last record");

  auto state = opt.init(space, params);
  detail::LoadVisitor<T, ExecSpace> v{records, space, params.shapes()};
  detail::visit<Opt>(state, params, v);
  for (const auto& [key, rec] : records)
    if (!rec.used)
      throw invalid_input(where + "the checkpoint holds '" + key +
                          "', which this state does not have: was it saved with another basis configuration "
                          "(geometry, max_dim, source, rank-1 handling)?");
  return state;
}

/// save_state to a file, atomically: written to `path`.tmp, then renamed over `path`, so a crash
/// mid-write leaves the previous checkpoint intact.
template <class B, class M, class D, class S, class T, class ExecSpace>
void save_state(const std::filesystem::path& path, const ExecSpace& space, const Optimizer<B, M, D, S>& opt,
                const ParamSet<T, ExecSpace>& params,
                const typename Optimizer<B, M, D, S>::template State<T, ExecSpace>& state) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw invalid_input("delayopt::io::save_state: cannot write " + tmp.string());
    save_state(out, space, opt, params, state);
    out.close();
    if (!out) throw invalid_input("delayopt::io::save_state: writing " + tmp.string() + " failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw invalid_input("delayopt::io::save_state: cannot rename " + tmp.string() + " to " + path.string());
}

/// load_state from a file.
template <class B, class M, class D, class S, class T, class ExecSpace>
typename Optimizer<B, M, D, S>::template State<T, ExecSpace> load_state(const std::filesystem::path& path,
                                                                        const ExecSpace& space,
                                                                        const Optimizer<B, M, D, S>& opt,
                                                                        const ParamSet<T, ExecSpace>& params) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw invalid_input("delayopt::io::load_state: cannot open " + path.string());
  try {
    return load_state(in, space, opt, params);
  } catch (const shape_mismatch& e) {
    throw shape_mismatch(std::string(e.what()) + " (" + path.string() + ")");
  } catch (const invalid_input& e) {
    throw invalid_input(std::string(e.what()) + " (" + path.string() + ")");
  }
}

}  // namespace delayopt::io
