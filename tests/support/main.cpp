// Catch2 runner that owns Kokkos' lifetime (the library never initializes Kokkos itself).
#define CATCH_CONFIG_RUNNER
#include "catch.hpp"

#include <Kokkos_Core.hpp>

#include <cstdlib>

int main(int argc, char* argv[]) {
  // Kokkos' OpenMP backend prints a warning to stdout without OMP_PROC_BIND; ctest's test discovery
  // would read it as test names. "false" is what Kokkos recommends for unit tests.
  setenv("OMP_PROC_BIND", "false", /*overwrite=*/0);
  Kokkos::ScopeGuard guard;  // Kokkos options come from KOKKOS_* environment variables
  return Catch::Session().run(argc, argv);
}
