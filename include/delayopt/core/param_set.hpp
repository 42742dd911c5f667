/// \file delayopt/core/param_set.hpp
/// \brief ParamSet: a set of named rank-1 / rank-2 blocks of one value type in one memory space.
///
/// Parameters, gradients and every per-element optimizer state use this container. It keeps a
/// device-side table of block pointers and a table of fixed-size chunks, so one kernel launch covers
/// every block (per-tensor launches are where small blocks lose their bandwidth).
#pragma once

#include "delayopt/core/compat.hpp"
#include "delayopt/core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace delayopt {

/// Storage order of a rank-2 block (rank-1 blocks are always `right`).
enum class Layout { right, left };

/// Name and extents of one block. Rank-1 blocks have cols == 1.
struct BlockShape {
  std::string name;
  int rank = 1;
  std::size_t rows = 0;
  std::size_t cols = 1;
  Layout layout = Layout::right;

  std::size_t size() const { return rows * cols; }
  friend bool operator==(const BlockShape&, const BlockShape&) = default;
};

/// "W1 (8x6)" / "b (5)": how blocks are named in error messages.
inline std::string describe(const BlockShape& s) {
  // Appends rather than operator+ chains: GCC 12 -O3 reports a false -Wrestrict on those.
  std::string out = "'";
  out.append(s.name).append("' (").append(std::to_string(s.rows));
  if (s.rank == 2) {
    out.append("x").append(std::to_string(s.cols));
    if (s.layout == Layout::left) out.append(", LayoutLeft");
  }
  return out.append(")");
}

namespace detail {

/// Raw pointer and length of one block, readable inside kernels.
template <class T>
struct BlockRef {
  T* data = nullptr;
  std::size_t size = 0;
};

/// A contiguous range [begin, end) of one block: the unit of work of the element kernels.
struct Chunk {
  std::uint32_t block = 0;
  std::uint32_t pad = 0;
  std::size_t begin = 0;
  std::size_t end = 0;
};

/// Elements per chunk: large enough to amortize the table lookup, small enough that 256 blocks of
/// 64Ki still split evenly over threads.
template <class ExecSpace>
inline constexpr std::size_t chunk_elements = compat::is_host_space_v<ExecSpace> ? 4096 : 16384;

}  // namespace detail

/// A set of named blocks. Copies are shallow, like Kokkos::View; use clone() for a deep copy.
template <class T, class ExecSpace = Kokkos::DefaultExecutionSpace>
class ParamSet {
  static_assert(std::is_floating_point_v<T>, "delayopt::ParamSet<T>: T must be float or double");
  static_assert(compat::is_execution_space_v<ExecSpace>,
                "delayopt::ParamSet<T, ExecSpace>: ExecSpace must be a Kokkos execution space");

 public:
  using value_type = T;
  using execution_space = ExecSpace;
  using memory_space = typename ExecSpace::memory_space;
  /// Unmanaged rank-1 view of one block's elements, in storage order.
  using flat_view = Kokkos::View<T*, Kokkos::LayoutRight, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  using vector_view = Kokkos::View<T*, memory_space>;
  using matrix_view = Kokkos::View<T**, Kokkos::LayoutRight, memory_space>;
  using matrix_left_view = Kokkos::View<T**, Kokkos::LayoutLeft, memory_space>;

  ParamSet() = default;

  /// Allocates one zero-initialised buffer holding every block, each 64-byte aligned. Shapes are
  /// checked as add() checks its views (unique names, rank 1 or 2, rank-1 blocks n x 1 LayoutRight):
  /// shape_mismatch before anything is allocated.
  explicit ParamSet(const std::vector<BlockShape>& shapes, const std::string& label = "delayopt::ParamSet") {
    for (std::size_t i = 0; i < shapes.size(); ++i)
      check_shape("delayopt::ParamSet", std::span(shapes.data(), i), shapes[i]);
    std::size_t total = 0;
    std::vector<std::size_t> offsets;
    for (const auto& s : shapes) {
      offsets.push_back(total);
      total += round_up(s.size());
    }
    Kokkos::View<T*, memory_space> buffer(label, total);
    auto keep = std::make_shared<Kokkos::View<T*, memory_space>>(buffer);
    for (std::size_t i = 0; i < shapes.size(); ++i)
      push(shapes[i], flat_view(buffer.data() + offsets[i], shapes[i].size()), keep);
    rebuild_tables();
  }

  /// A new zero-filled set with the same block shapes.
  static ParamSet zeros_like(const ParamSet& other, const std::string& label = "delayopt::ParamSet") {
    return ParamSet(other.shapes(), label);
  }

  /// Adds a user-owned rank-1 view (kept alive by this set).
  template <class... P>
  void add(const std::string& name, const Kokkos::View<T*, P...>& v) {
    BlockShape shape{name, 1, v.extent(0), 1, Layout::right};
    check_addable(shape, v);
    push(std::move(shape), flat_view(v.data(), v.size()), std::make_shared<Kokkos::View<T*, P...>>(v));
    rebuild_tables();
  }

  /// Adds a user-owned contiguous rank-2 view, LayoutRight or LayoutLeft.
  template <class... P>
  void add(const std::string& name, const Kokkos::View<T**, P...>& v) {
    using layout = typename Kokkos::View<T**, P...>::array_layout;
    static_assert(std::is_same_v<layout, Kokkos::LayoutRight> || std::is_same_v<layout, Kokkos::LayoutLeft>,
                  "delayopt::ParamSet::add: rank-2 blocks must be LayoutRight or LayoutLeft");
    const Layout lay = std::is_same_v<layout, Kokkos::LayoutLeft> ? Layout::left : Layout::right;
    BlockShape shape{name, 2, v.extent(0), v.extent(1), lay};
    check_addable(shape, v);
    push(std::move(shape), flat_view(v.data(), v.size()), std::make_shared<Kokkos::View<T**, P...>>(v));
    rebuild_tables();
  }

  std::size_t num_blocks() const { return blocks_.size(); }
  /// Number of elements over all blocks (padding excluded).
  std::size_t total_size() const {
    std::size_t n = 0;
    for (const auto& s : shapes_) n += s.size();
    return n;
  }
  const BlockShape& shape(std::size_t i) const { return shapes_.at(i); }
  /// Every block's shape, indexed like the blocks; valid until the next add().
  const std::vector<BlockShape>& shapes() const { return shapes_; }
  /// Index of the block called `name`; throws shape_mismatch if there is none.
  std::size_t index(const std::string& name) const {
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      if (shapes_[i].name == name) return i;
    throw shape_mismatch("delayopt::ParamSet: no block named '" + name + "'");
  }

  /// Block i as a rank-1 view over its elements in storage order.
  flat_view flat(std::size_t i) const { return blocks_.at(i).data; }
  flat_view flat(const std::string& name) const { return flat(index(name)); }
  /// Rank-2 block i (LayoutRight storage) as a rows x cols view.
  auto matrix(std::size_t i) const {
    const auto& s = shape(i);
    if (s.rank != 2 || s.layout != Layout::right)
      throw shape_mismatch("delayopt::ParamSet::matrix: block " + describe(s) + " is not a LayoutRight rank-2 block");
    return Kokkos::View<T**, Kokkos::LayoutRight, memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(
        blocks_[i].data.data(), s.rows, s.cols);
  }

  /// Device table of block pointers, indexed like the blocks.
  const Kokkos::View<detail::BlockRef<T>*, memory_space>& refs() const { return refs_; }
  /// Device table of chunks covering every element of every block.
  const Kokkos::View<detail::Chunk*, memory_space>& chunks() const { return chunks_; }

  /// Deep copy into a new contiguous set: allocates (a Kokkos allocation zero-fills and fences, as
  /// every allocation does), then enqueues the copy on `space`. Not for a per-step path: keep a set
  /// and assign() into it.
  ParamSet clone(const ExecSpace& space, const std::string& label = "delayopt::ParamSet") const {
    ParamSet out(shapes(), label);
    out.assign(space, *this);
    return out;
  }

  /// Copies every block of `src` into this set (same shapes required), enqueued on `space`.
  void assign(const ExecSpace& space, const ParamSet& src) {
    require_same_shapes(*this, src, "delayopt::ParamSet::assign", "destination", "source");
    for (std::size_t i = 0; i < blocks_.size(); ++i) Kokkos::deep_copy(space, blocks_[i].data, src.blocks_[i].data);
  }

  /// Throws shape_mismatch naming the first block where `a` and `b` differ. (string_view: the names
  /// are literals on every step's path; strings are built only on error.)
  template <class U>
  static void require_same_shapes(const ParamSet& a, const ParamSet<U, ExecSpace>& b, std::string_view where,
                                  std::string_view a_name, std::string_view b_name) {
    const std::size_t n = std::min(a.num_blocks(), b.num_blocks());
    std::size_t i = 0;
    while (i < n && a.shape(i) == b.shape(i)) ++i;
    if (i == n && a.num_blocks() == b.num_blocks()) return;
    const std::string w(where), an(a_name), bn(b_name);
    if (i < n && a.shape(i).name != b.shape(i).name)
      throw shape_mismatch(w + ": block " + std::to_string(i) + " of " + bn + " is " + describe(b.shape(i)) + " but " +
                           an + " has " + describe(a.shape(i)) + " there");
    if (i < n)
      throw shape_mismatch(w + ": block " + describe(a.shape(i)) + " of " + an + " does not match " +
                           describe(b.shape(i)) + " of " + bn);
    if (a.num_blocks() > n)
      throw shape_mismatch(w + ": block " + describe(a.shape(n)) + " of " + an + " is missing from " + bn);
    throw shape_mismatch(w + ": " + bn + " has an extra block " + describe(b.shape(n)) + " that " + an + " lacks");
  }

 private:
  struct Block {
    flat_view data;
    std::shared_ptr<const void> keepalive;
  };

  static std::size_t round_up(std::size_t n) {
    constexpr std::size_t align = 64 / sizeof(T);
    return (n + align - 1) / align * align;
  }

  /// The checks every new block passes, from the constructor and from add(): a name unique among
  /// `earlier`, rank 1 or 2, and a rank-1 block n x 1 in LayoutRight (BlockShape's invariants).
  static void check_shape(const std::string& where, std::span<const BlockShape> earlier, const BlockShape& s) {
    for (const auto& e : earlier)
      if (e.name == s.name) throw shape_mismatch(where + ": duplicate block name '" + s.name + "'");
    if (s.rank != 1 && s.rank != 2)
      throw shape_mismatch(where + ": block '" + s.name + "' has rank " + std::to_string(s.rank) +
                           " (expected 1 or 2)");
    if (s.rank == 1 && s.cols != 1)
      throw shape_mismatch(where + ": rank-1 block '" + s.name + "' has cols = " + std::to_string(s.cols) +
                           " (expected 1)");
    if (s.rank == 1 && s.layout != Layout::right)
      throw shape_mismatch(where + ": rank-1 block '" + s.name + "' is LayoutLeft (rank-1 blocks are LayoutRight)");
  }

  template <class V>
  void check_addable(const BlockShape& shape, const V& v) const {
    static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename V::memory_space>::accessible,
                  "delayopt::ParamSet::add: the view's memory space is not accessible from the execution space");
    check_shape("delayopt::ParamSet::add", shapes_, shape);
    if (!v.span_is_contiguous())
      throw shape_mismatch("delayopt::ParamSet::add: block '" + shape.name + "' is not contiguous");
  }

  void push(BlockShape shape, flat_view data, std::shared_ptr<const void> keep) {
    // Reserve both first: the push_backs below cannot throw, so shapes_ and blocks_ stay in step.
    shapes_.reserve(shapes_.size() + 1);
    blocks_.reserve(blocks_.size() + 1);
    shapes_.push_back(std::move(shape));
    blocks_.push_back(Block{data, std::move(keep)});
  }

  // Setup-time only: tables are rebuilt when blocks are added, never per step.
  void rebuild_tables() {
    constexpr std::size_t per_chunk = detail::chunk_elements<ExecSpace>;
    refs_ = Kokkos::View<detail::BlockRef<T>*, memory_space>("delayopt::ParamSet::refs", blocks_.size());
    auto refs_h = Kokkos::create_mirror_view(refs_);
    std::vector<detail::Chunk> chunks;
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      const std::size_t n = shapes_[i].size();
      refs_h(i) = detail::BlockRef<T>{blocks_[i].data.data(), n};
      for (std::size_t b = 0; b < n; b += per_chunk)
        chunks.push_back(detail::Chunk{static_cast<std::uint32_t>(i), 0, b, std::min(b + per_chunk, n)});
    }
    Kokkos::deep_copy(refs_, refs_h);
    chunks_ = Kokkos::View<detail::Chunk*, memory_space>("delayopt::ParamSet::chunks", chunks.size());
    auto chunks_h = Kokkos::create_mirror_view(chunks_);
    for (std::size_t c = 0; c < chunks.size(); ++c) chunks_h(c) = chunks[c];
    Kokkos::deep_copy(chunks_, chunks_h);
  }

  std::vector<BlockShape> shapes_;  // apart from blocks_ so that shapes() can return a reference
  std::vector<Block> blocks_;
  Kokkos::View<detail::BlockRef<T>*, memory_space> refs_;
  Kokkos::View<detail::Chunk*, memory_space> chunks_;
};

}  // namespace delayopt
