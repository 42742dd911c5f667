/// \file json_file.hpp
/// \brief Writing the command-line programs' JSON results: a check before the run that the file
/// can be written, and a write that reports a failure of the close as well as of the stream.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace delayopt::tools {

/// Whether `path` can be opened for writing, checked without truncating or leaving behind a file:
/// so a program can refuse an unwritable --json before a long run instead of after it.
inline bool can_write_json(const std::string& path) {
  std::error_code ec;
  const bool existed = std::filesystem::exists(path, ec);
  if (!std::ofstream(path, std::ios::app)) return false;  // append mode leaves the content as it is
  if (!existed) std::filesystem::remove(path, ec);
  return true;
}

/// Writes `j` to `path` (indent 1, trailing newline). Throws std::runtime_error naming the path
/// when the file cannot be opened or a write fails, including the final flush at close.
inline void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(1) << '\n';
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace delayopt::tools
