/// \file delayopt/core/for_each_chunk.hpp
/// \brief One launch over every element of every block of a ParamSet.
#pragma once

#include "delayopt/core/compat.hpp"
#include "delayopt/core/param_set.hpp"

#include <string>

namespace delayopt::detail {

/// Calls f.element(f.chunk_context(c), i) for every chunk c and every i in it, unless the context's
/// `skip` flag is set (a step cancelled on the device). Host spaces give each
/// thread whole chunks so the inner loop runs over raw pointers and vectorizes; device spaces give
/// each chunk to a team whose threads stride over it (coalesced).
template <class ExecSpace, class Functor>
void for_each_chunk(const ExecSpace& space, const std::string& label,
                    const Kokkos::View<Chunk*, typename ExecSpace::memory_space>& chunks, const Functor& f) {
  const auto n = chunks.extent(0);
  if constexpr (compat::is_host_space_v<ExecSpace>) {
    Kokkos::parallel_for(
        label, Kokkos::RangePolicy<ExecSpace>(space, 0, n), KOKKOS_LAMBDA(const std::size_t c) {
          const Chunk ch = chunks(c);
          const auto ctx = f.chunk_context(ch);
          if (ctx.skip) return;
          for (std::size_t i = ch.begin; i < ch.end; ++i) f.element(ctx, i);
        });
  } else {
    using team_policy = Kokkos::TeamPolicy<ExecSpace>;
    Kokkos::parallel_for(
        label, team_policy(space, static_cast<int>(n), Kokkos::AUTO),
        KOKKOS_LAMBDA(const typename team_policy::member_type& team) {
          const Chunk ch = chunks(team.league_rank());
          const auto ctx = f.chunk_context(ch);
          if (ctx.skip) return;
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, ch.begin, ch.end),
                               [&](const std::size_t i) { f.element(ctx, i); });
        });
  }
}

}  // namespace delayopt::detail
