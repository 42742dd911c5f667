/// \file delayopt/core/compat.hpp
/// \brief Every difference between the Kokkos versions delayopt supports (3.4 through 5.x).
///
/// Nothing else in the library tests KOKKOS_VERSION: add a shim here instead.
#pragma once

#include <Kokkos_Core.hpp>

#include <string>
#include <type_traits>

#if !defined(KOKKOS_VERSION) || KOKKOS_VERSION < 30400
#error "delayopt needs Kokkos 3.4 or newer"
#endif

namespace delayopt::compat {

// Math functions moved from Kokkos::Experimental to Kokkos in 3.7 and the old names went away in 5.0.
#if KOKKOS_VERSION >= 30700
using Kokkos::exp;
using Kokkos::isfinite;
using Kokkos::pow;
using Kokkos::sqrt;
#else
using Kokkos::Experimental::exp;
using Kokkos::Experimental::isfinite;
using Kokkos::Experimental::pow;
using Kokkos::Experimental::sqrt;
#endif

/// Kokkos::Experimental::sort_by_key (the CUDA eigenbasis backend's eigenvalue re-sort) is 4.3+.
inline constexpr bool has_sort_by_key = KOKKOS_VERSION >= 40300;

/// Kokkos::is_view_v is 4.x only.
template <class T>
inline constexpr bool is_view_v = Kokkos::is_view<T>::value;

/// Kokkos::is_execution_space_v is 4.x only.
template <class T>
inline constexpr bool is_execution_space_v = Kokkos::is_execution_space<T>::value;

/// Fences one execution-space instance; 3.x has no labelled overload.
template <class ExecSpace>
void fence(const ExecSpace& space, [[maybe_unused]] const std::string& label) {
#if KOKKOS_VERSION >= 30600
  space.fence(label);
#else
  space.fence();
#endif
}

/// RAII profiling region (Kokkos::Profiling::ScopedRegion is not in 3.4).
class ScopedRegion {
 public:
  explicit ScopedRegion(const std::string& name) { Kokkos::Profiling::pushRegion(name); }
  ~ScopedRegion() { Kokkos::Profiling::popRegion(); }
  ScopedRegion(const ScopedRegion&) = delete;
  ScopedRegion& operator=(const ScopedRegion&) = delete;
};

/// True for execution spaces whose kernels run on the host (Serial, OpenMP, Threads, ...).
template <class ExecSpace>
inline constexpr bool is_host_space_v =
    Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename ExecSpace::memory_space>::accessible&&
        std::is_same_v<typename ExecSpace::memory_space, Kokkos::HostSpace>;

}  // namespace delayopt::compat
