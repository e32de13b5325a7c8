// `mind4 chat`: a conversation in the terminal. Line editing and history come from libedit (BSD
// licensed, readline-compatible); piped input is read line by line instead. Harmony models get a
// system message with the reasoning effort and today's date and developer instructions from
// main.md; plain-text models (such as the bundled one) continue a transcript.
#include <editline/readline.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "chat/assistant_turn.h"
#include "chat/conversation.h"
#include "chat/generator.h"
#include "chat/tools.h"
#include "command.h"
#include "mind4/status.h"
#include "model_session.h"

namespace {

using mind4::chat::ChatMode;

struct ChatOptions {
  mind4::cli::SessionFlags session;
  std::string developer, effort = "medium", tools_file, apply_patch_dir, plain_stop = "\\n\\n";
  bool python = false, show_reasoning = false;
  double python_timeout_s = 10;
  int python_memory_mb = 1024;
};

std::atomic<bool> chat_interrupted{false};

void chat_on_sigint(int) {
  chat_interrupted = true;
}

const char* kChatHelp =
    "Type a message and press Enter. A line ending in '\\' continues on the next line; a line\n"
    "with only \"\"\" starts and ends a block. Ctrl-C stops a reply; Ctrl-D or /quit leaves.\n"
    "  /help              this text\n"
    "  /reset             start the conversation again\n"
    "  /system [TEXT]     show the system message, or set the model identity line to TEXT\n"
    "  /effort LEVEL      reasoning effort: low, medium or high (harmony)\n"
    "  /save FILE         save the conversation as JSON\n"
    "  /load FILE         load a conversation saved with /save\n"
    "  /tokens            the prompt as the model sees it, and its size\n"
    "  /stats             timing of the last reply and of the whole chat\n"
    "  /quit              leave\n";

// Reads one line: libedit on a terminal (editing, history), plain getline otherwise. Returns
// false at end of input. A Ctrl-C at the prompt gives an empty line and clears the flag.
class ChatInput {
 public:
  explicit ChatInput(bool tty) : tty_(tty) {
    if (!tty_) return;
    const char* home = std::getenv("HOME");
    if (const char* env = std::getenv("MIND4_CHAT_HISTORY"))
      history_ = env;
    else if (home)
      history_ = std::string(home) + "/.mind4_chat_history";
    using_history();
    if (!history_.empty()) read_history(history_.c_str());
  }
  ~ChatInput() {
    if (tty_ && !history_.empty()) write_history(history_.c_str());
  }
  bool read(const char* prompt, std::string& line) {
    if (!tty_) {
      std::fputs(prompt, stdout);
      std::fflush(stdout);
      return bool(std::getline(std::cin, line));
    }
    char* raw = readline(prompt);
    if (!raw) {
      if (chat_interrupted.exchange(false)) {  // Ctrl-C at the prompt: a fresh line
        std::fputc('\n', stdout);
        line.clear();
        return true;
      }
      return false;
    }
    line = raw;
    std::free(raw);
    if (!line.empty()) add_history(line.c_str());
    return true;
  }

 private:
  bool tty_;
  std::string history_;
};

// A message: one line, lines continued with a trailing '\', or a """ block.
bool chat_read_message(ChatInput& input, std::string& text) {
  std::string line;
  if (!input.read("> ", line)) return false;
  text.clear();
  if (line == "\"\"\"") {
    while (input.read("... ", line) && line != "\"\"\"") text += line + "\n";
    if (!text.empty()) text.pop_back();
    return true;
  }
  while (!line.empty() && line.back() == '\\') {
    line.pop_back();
    text += line + "\n";
    if (!input.read("... ", line)) break;
  }
  text += line;
  return true;
}

std::string chat_unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char n = s[++i];
      out += n == 'n' ? '\n' : n == 't' ? '\t' : n;
    } else {
      out += s[i];
    }
  }
  return out;
}

struct ChatTotals {
  int replies = 0, generated = 0;
  double decode_s = 0;
};

void run_chat(const ChatOptions& o) {
  auto session = mind4::cli::open_model_session(o.session);
  const mind4::Config& config = session.resolved.config;
  const mind4::Tokenizer& tok = *session.tokenizer;
  mind4::chat::Conversation conv(session.mode, tok);
  mind4::chat::ToolBox tools;
  const bool harmony = session.mode == ChatMode::kHarmony;
  if (!harmony) {
    MIND4_CHECK(o.tools_file.empty() && !o.python && o.apply_patch_dir.empty(),
                mind4::Status::kInvalidArgument,
                "tools need a harmony model; this one chats in plain text");
  }
  if (!o.tools_file.empty()) tools.add_functions(mind4::chat::load_tools_file(o.tools_file));
  if (!o.apply_patch_dir.empty()) tools.enable_apply_patch(o.apply_patch_dir);
  std::filesystem::path python_dir;
  if (o.python) {
    python_dir =
        std::filesystem::temp_directory_path() / ("mind4-python-" + std::to_string(getpid()));
    std::filesystem::create_directories(python_dir);
    tools.enable_python({.timeout_s = o.python_timeout_s,
                         .memory_bytes = size_t(o.python_memory_mb) << 20,
                         .working_dir = python_dir.string()});
  }
  if (harmony) {
    conv.effort = mind4::chat::parse_effort(o.effort);
    if (!o.developer.empty()) {
      conv.developer = mind4::chat::text_or_file(o.developer);
    } else if (std::filesystem::exists("main.md")) {
      conv.developer = mind4::chat::text_or_file("main.md");
    }
    conv.function_tools = tools.function_descriptions();
    conv.builtin_tools = tools.builtin_namespaces();
  }
  mind4::chat::Generator generator(
      session.model, tok, config.sampling,
      {.context_length = session.context, .threads = config.execution.threads});
  const bool tty_in = isatty(STDIN_FILENO), tty_out = isatty(STDOUT_FILENO);
  ChatInput input(tty_in);
  struct sigaction sa {};
  sa.sa_handler = chat_on_sigint;  // no SA_RESTART: a blocked read returns, the flag is seen
  sigaction(SIGINT, &sa, nullptr);

  mind4::chat::TurnOptions turn;
  turn.context = session.context;
  turn.max_new_tokens = config.sampling.max_new_tokens;
  turn.plain_stops = {chat_unescape(o.plain_stop)};
  turn.style = {.out = stdout, .show_reasoning = o.show_reasoning, .color = tty_out};
  turn.cancel = &chat_interrupted;
  turn.notice = [&](const std::string& text) {
    std::fprintf(stdout, "%s%s%s\n", tty_out ? "\x1b[36m" : "", text.c_str(),
                 tty_out ? "\x1b[0m" : "");
    std::fflush(stdout);
  };
  std::printf("mind4 chat · %s · %s mode · context %d · /help for commands\n",
              config.paths.checkpoint.c_str(), mind4::chat::chat_mode_name(session.mode),
              session.context);
  mind4::chat::TurnResult last;
  ChatTotals totals;
  std::string text;
  while (chat_read_message(input, text)) {
    chat_interrupted = false;
    if (text.empty()) continue;
    try {
      if (text[0] == '/') {
        std::istringstream words(text);
        std::string cmd, arg;
        words >> cmd;
        std::getline(words >> std::ws, arg);
        if (cmd == "/quit" || cmd == "/exit") break;
        if (cmd == "/help") {
          std::fputs(kChatHelp, stdout);
        } else if (cmd == "/reset") {
          conv.clear();
          std::puts("[conversation cleared]");
        } else if (cmd == "/system") {
          if (!arg.empty()) conv.system_identity = arg;
          if (harmony)
            std::puts(mind4::harmony::render_message(conv.system_message()).str().c_str());
          else
            std::puts("[plain mode: there is no system message]");
        } else if (cmd == "/effort") {
          conv.effort = mind4::chat::parse_effort(arg);
          std::printf("[reasoning effort: %s]\n", mind4::chat::effort_name(conv.effort));
        } else if (cmd == "/save") {
          MIND4_CHECK(!arg.empty(), mind4::Status::kInvalidArgument, "/save needs a file name");
          const std::string tmp = arg + ".tmp";
          {
            std::ofstream out(tmp);
            MIND4_CHECK(out.good(), mind4::Status::kIoError, "cannot write ", arg);
            out << conv.to_json().dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
          }
          std::filesystem::rename(tmp, arg);
          std::printf("[saved %zu messages to %s]\n", conv.messages().size(), arg.c_str());
        } else if (cmd == "/load") {
          std::ifstream in(arg);
          MIND4_CHECK(in.good(), mind4::Status::kIoError, "cannot read '", arg, "'");
          mind4::harmony::Json j;
          try {
            j = mind4::harmony::Json::parse(in);
          } catch (const std::exception& e) {
            throw mind4::Error(mind4::Status::kInvalidArgument, arg + ": not valid JSON");
          }
          conv.load_json(j);
          std::printf("[loaded %zu messages from %s]\n", conv.messages().size(), arg.c_str());
        } else if (cmd == "/tokens") {
          auto prompt = conv.prompt(session.context, 0);
          std::printf("%s\n[%zu tokens of %d in the context]\n", conv.rendered_text().c_str(),
                      prompt.tokens.size(), session.context);
        } else if (cmd == "/stats") {
          const auto& s = last.last;
          std::printf(
              "[last reply: %d prompt tokens (%d reused), %d generated, stop %s; first token "
              "%.3f s, prefill %.1f tok/s, decode %.2f tok/s]\n[chat: %d replies, %d tokens, "
              "decode %.2f tok/s]\n",
              s.prompt_tokens, s.reused_tokens, last.generated,
              mind4::chat::stop_cause_name(s.stop), s.first_token_s, s.prefill_tok_s(),
              s.decode_tok_s(), totals.replies, totals.generated,
              totals.decode_s > 0 ? totals.generated / totals.decode_s : 0.0);
        } else {
          std::printf("[unknown command %s: /help lists them]\n", cmd.c_str());
        }
        continue;
      }
      conv.add_user(text);
      try {
        last = mind4::chat::run_assistant_turn(conv, generator, tok, &tools, turn);
      } catch (const mind4::Error& e) {
        if (e.status() == mind4::Status::kContextOverflow) conv.undo_last_user();
        throw;
      }
      ++totals.replies;
      totals.generated += last.generated;
      totals.decode_s += last.last.decode_s;
      std::fputs(last.cancelled ? "\n[stopped]\n" : "\n", stdout);
      std::fflush(stdout);
    } catch (const mind4::Error& e) {
      std::printf("[error: %s]\n", e.what());
      std::fflush(stdout);
    }
  }
  std::fputc('\n', stdout);
  if (!python_dir.empty()) std::filesystem::remove_all(python_dir);
}

void setup_chat(CLI::App& app) {
  auto o = std::make_shared<ChatOptions>();
  mind4::cli::add_session_flags(app, o->session);
  app.add_option("--developer", o->developer,
                 "Harmony: developer instructions, text or a file (default: ./main.md if present)");
  app.add_option("--reasoning-effort", o->effort, "Harmony: low | medium | high")
      ->check(CLI::IsMember({"low", "medium", "high"}));
  app.add_flag("--show-reasoning", o->show_reasoning,
               "Harmony: show the analysis channel (dimmed)");
  app.add_option("--tools", o->tools_file,
                 "Function tools: a JSON list of {name, description, parameters, command, "
                 "timeout_s}");
  app.add_flag("--python", o->python, "Enable the built-in python tool (a python3 subprocess)");
  app.add_option("--python-timeout", o->python_timeout_s, "Seconds a python call may run");
  app.add_option("--python-memory", o->python_memory_mb, "Memory limit of a python call, MiB");
  app.add_option("--apply-patch", o->apply_patch_dir,
                 "Enable the apply_patch tool, confined to this directory");
  app.add_option("--plain-stop", o->plain_stop, "Plain mode: text that ends a reply (\\n escapes)");
  app.callback([o] { run_chat(*o); });
}

mind4::cli::Command register_chat{"chat", "Chat with the model in the terminal", setup_chat};

}  // namespace
