/// \file delayopt/version.hpp
/// \brief Library version (kept in step with project(VERSION) in CMakeLists.txt).
#pragma once

#define DELAYOPT_VERSION_MAJOR 0
#define DELAYOPT_VERSION_MINOR 1
#define DELAYOPT_VERSION_PATCH 0
#define DELAYOPT_VERSION (DELAYOPT_VERSION_MAJOR * 10000 + DELAYOPT_VERSION_MINOR * 100 + DELAYOPT_VERSION_PATCH)
