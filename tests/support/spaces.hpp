// Every enabled host execution space x {float, double}: the axis of TEMPLATE_LIST_TEST_CASE.
#pragma once

#include <Kokkos_Core.hpp>

#include <tuple>

namespace delayopt::test {

template <class ExecSpace, class T>
struct Case {
  using space = ExecSpace;
  using value = T;
};

#if defined(KOKKOS_ENABLE_SERIAL) && defined(KOKKOS_ENABLE_OPENMP)
using all_cases = std::tuple<Case<Kokkos::Serial, float>, Case<Kokkos::Serial, double>, Case<Kokkos::OpenMP, float>,
                             Case<Kokkos::OpenMP, double>>;
#elif defined(KOKKOS_ENABLE_SERIAL)
using all_cases = std::tuple<Case<Kokkos::Serial, float>, Case<Kokkos::Serial, double>>;
#else
using all_cases =
    std::tuple<Case<Kokkos::DefaultHostExecutionSpace, float>, Case<Kokkos::DefaultHostExecutionSpace, double>>;
#endif

}  // namespace delayopt::test
