// Subcommand registry of the `mind4` command. Each apps/mind4/cmd_*.cpp file registers itself:
//
//   static mind4::cli::Command register_tokenize{"tokenize", "Text to token ids and back", setup_tokenize};
//
// where setup_tokenize(CLI::App&) adds the options and a callback. main.cpp needs no edit.
// The command is built as one unity translation unit (CLI11 parsed once), so each file's
// registration variable needs its own name: register_<subcommand>.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace mind4::cli {

using Setup = std::function<void(CLI::App&)>;

struct Command {
  Command(std::string name, std::string description, Setup setup);
};

struct CommandEntry {
  std::string name, description;
  Setup setup;
};
std::vector<CommandEntry>& registry();

}  // namespace mind4::cli
