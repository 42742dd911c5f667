// Catch2 runner that owns Kokkos' lifetime (the library never initializes Kokkos itself).
#define CATCH_CONFIG_RUNNER
#include "catch.hpp"

#include <Kokkos_Core.hpp>

int main(int argc, char* argv[]) {
  Kokkos::ScopeGuard guard;  // Kokkos options come from KOKKOS_* environment variables
  return Catch::Session().run(argc, argv);
}
