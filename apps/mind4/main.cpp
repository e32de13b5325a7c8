// The `mind4` command: one binary, one subcommand per lab task (see command.h).
#include <algorithm>
#include <cstdio>
#include <exception>

#include "command.h"
#include "mind4/status.h"

namespace mind4::cli {

std::vector<CommandEntry>& registry() {
  static std::vector<CommandEntry> commands;
  return commands;
}

Command::Command(std::string name, std::string description, Setup setup) {
  registry().push_back({std::move(name), std::move(description), std::move(setup)});
}

}  // namespace mind4::cli

int main(int argc, char** argv) {
  CLI::App app{"Mind 4: a laboratory for generative transformers (gpt-oss architecture)", "mind4"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mind4 0.1.0");
  app.get_formatter()->column_width(36);
  auto& commands = mind4::cli::registry();
  std::sort(commands.begin(), commands.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (auto& c : commands) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    sub->option_defaults()->always_capture_default();
    c.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mind4::Error& e) {
    std::fprintf(stderr, "mind4: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mind4: internal error: %s\n", e.what());
    return 70;
  }
  return 0;
}
