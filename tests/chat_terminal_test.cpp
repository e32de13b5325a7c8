// `mind4 chat` and `mind4 generate` driven the way a person uses them: chat runs under a
// pseudo-terminal (typing, streaming output, Ctrl-C, the /commands), generate from a shell.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "chat_test_util.h"

namespace mind4 {
namespace {

using testing::mind4_binary;

// A child process on the far side of a pseudo-terminal; what it prints accumulates in output().
class PtySession {
 public:
  explicit PtySession(std::vector<std::string> argv, const std::string& history) {
    winsize ws{24, 100, 0, 0};
    pid_ = forkpty(&master_, nullptr, nullptr, &ws);
    if (pid_ == 0) {
      setenv("MIND4_CHAT_HISTORY", history.c_str(), 1);
      setenv("MIND4_NO_PROGRESS", "1", 1);
      setenv("TERM", "xterm", 1);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~PtySession() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) close(master_);
  }
  bool started() const { return pid_ > 0; }

  void type(const std::string& text) {
    ASSERT_EQ(write(master_, text.data(), text.size()), ssize_t(text.size()));
  }

  // Reads until `pattern` appears after `from` in the output (or the timeout); returns its
  // position, npos when it did not come.
  size_t wait_for(const std::string& pattern, size_t from, double timeout_s = 60) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      size_t at = out_.find(pattern, from);
      if (at != std::string::npos) return at;
      if (std::chrono::steady_clock::now() > deadline || !pump(100)) return std::string::npos;
    }
  }
  // The line editor switches the terminal out of canonical mode while it reads a line (on Linux
  // the master side reports the terminal's modes). Keys typed before that, Ctrl-D above all, may
  // be taken by the kernel's line discipline instead.
  bool wait_line_editor(double timeout_s = 30) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    termios t{};
    while (tcgetattr(master_, &t) == 0 && (t.c_lflag & ICANON)) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      pump(10);
    }
    return true;
  }
  // Reads whatever arrives within `ms`; false when the child closed the terminal.
  bool pump(int ms) {
    pollfd p{master_, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return true;
    char buf[4096];
    ssize_t n = read(master_, buf, sizeof buf);
    if (n <= 0) return false;
    out_.append(buf, size_t(n));
    return true;
  }
  int wait_exit(double timeout_s = 30) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      pump(50);
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
    }
    return -2;
  }
  const std::string& output() const { return out_; }

  // Waits for the next prompt at the start of a line after `from` (keystrokes sent before the
  // line editor is ready may be discarded with the terminal's pending input), types `line` and
  // Enter, and waits for `expect`; returns where it appeared (npos when it did not).
  size_t say(size_t& from, const std::string& line, const std::string& expect) {
    size_t prompt = wait_for("\n> ", from);
    if (prompt == std::string::npos || !wait_line_editor()) return std::string::npos;
    type(line + "\r");
    size_t at = wait_for(expect, prompt + 3);
    from = at == std::string::npos ? prompt + 3 : at;
    return at;
  }

 private:
  pid_t pid_ = -1;
  int master_ = -1;
  bool exited_ = false;
  std::string out_;
};

std::vector<std::string> chat_command(std::vector<std::string> extra) {
  std::vector<std::string> argv = {
      mind4_binary(), "chat",          "--checkpoint", testing::tiny_harmony_checkpoint(),
      "--tokenizer",  "o200k_harmony", "--seed",       "5"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

int last_token_count(const std::string& out) {
  std::smatch m;
  std::string s = out;
  int n = -1;
  std::regex re("\\[(\\d+) tokens of \\d+ in the context\\]");
  for (std::sregex_iterator it(s.begin(), s.end(), re), end; it != end; ++it)
    n = std::stoi((*it)[1]);
  return n;
}

TEST(ChatTerminal, TypingStreamingCtrlCAndTheCommands) {
  testing::ScratchDir dir("chat_pty");
  PtySession chat(chat_command({"--max-new-tokens", "3000", "--context", "4096"}), dir / "history");
  ASSERT_TRUE(chat.started());
  size_t at = 0;
  // Typing: the line is echoed, then the reply streams in while generation goes on.
  ASSERT_NE(chat.say(at, "hello there", "hello there"), std::string::npos) << chat.output();
  EXPECT_NE(chat.output().find("harmony mode"), std::string::npos);
  const size_t reply_start = at + 11;
  size_t seen = chat.output().size();
  int growths = 0;
  for (int i = 0; i < 200 && growths < 3; ++i) {
    chat.pump(50);
    if (chat.output().size() > seen + 8) {
      ++growths;
      seen = chat.output().size();
    }
  }
  EXPECT_GE(growths, 3) << "the reply did not arrive in pieces: " << chat.output();
  EXPECT_EQ(chat.output().find("\n> ", reply_start), std::string::npos)
      << "3000 tokens should still be generating";

  // Ctrl-C stops the reply and the chat goes on.
  chat.type("\x03");
  at = chat.wait_for("[stopped]", reply_start);
  ASSERT_NE(at, std::string::npos) << chat.output();
  EXPECT_NE(chat.say(at, "/stats", "stop cancelled"), std::string::npos) << chat.output();

  // /effort changes the rendered system message.
  EXPECT_NE(chat.say(at, "/system", "Reasoning: medium"), std::string::npos) << chat.output();
  ASSERT_NE(chat.say(at, "/effort high", "[reasoning effort: high]"), std::string::npos);
  EXPECT_NE(chat.say(at, "/system", "Reasoning: high"), std::string::npos) << chat.output();

  // /save, /reset, /load: the conversation comes back token for token.
  ASSERT_NE(chat.say(at, "/tokens", "in the context]"), std::string::npos) << chat.output();
  const int before = last_token_count(chat.output());
  EXPECT_GT(before, 50);
  const std::string saved = dir / "conversation.json";
  ASSERT_NE(chat.say(at, "/save " + saved, "[saved 2 messages"), std::string::npos)
      << chat.output();
  ASSERT_NE(chat.say(at, "/reset", "[conversation cleared]"), std::string::npos);
  ASSERT_NE(chat.say(at, "/tokens", "in the context]"), std::string::npos);
  EXPECT_LT(last_token_count(chat.output()), before);
  ASSERT_NE(chat.say(at, "/load " + saved, "[loaded 2 messages"), std::string::npos)
      << chat.output();
  ASSERT_NE(chat.say(at, "/tokens", "in the context]"), std::string::npos);
  EXPECT_EQ(last_token_count(chat.output()), before);
  EXPECT_NE(testing::read_file(saved).find("\"reasoning_effort\": \"high\""), std::string::npos);

  // A bad /load keeps the conversation.
  EXPECT_NE(chat.say(at, "/load " + (dir / "missing.json"), "[error: cannot read"),
            std::string::npos)
      << chat.output();

  chat.say(at, "/quit", "");
  EXPECT_EQ(chat.wait_exit(), 0) << chat.output();
  // libedit keeps the history file vis(3)-encoded: the space is written as \\040.
  EXPECT_NE(testing::read_file(dir / "history").find("/effort"), std::string::npos);
}

TEST(ChatTerminal, APromptLongerThanTheContextIsRefusedAndTheChatGoesOn) {
  testing::ScratchDir dir("chat_pty_long");
  PtySession chat(chat_command({"--max-new-tokens", "4", "--context", "128"}), dir / "history");
  size_t at = 0;
  std::string long_message;
  for (int i = 0; i < 100; ++i) long_message += "words ";
  ASSERT_NE(chat.say(at, long_message, "[error: the last message needs"), std::string::npos)
      << chat.output();
  ASSERT_NE(chat.say(at, "short", "\n> "), std::string::npos) << chat.output();
  EXPECT_NE(chat.say(at, "/stats", "generated, stop max_tokens"), std::string::npos)
      << chat.output();
  chat.wait_for("\n> ", at);
  ASSERT_TRUE(chat.wait_line_editor());
  chat.type("\x04");  // Ctrl-D leaves
  EXPECT_EQ(chat.wait_exit(), 0) << chat.output();
}

TEST(ChatTerminal, PlainModeContinuesText) {
  testing::ScratchDir dir("chat_pty_plain");
  PtySession chat(chat_command({"--mode", "plain", "--max-new-tokens", "5"}), dir / "history");
  size_t at = chat.wait_for("plain mode", 0);
  ASSERT_NE(at, std::string::npos) << chat.output();
  ASSERT_NE(chat.say(at, "In the beginning", "\n> "), std::string::npos) << chat.output();
  EXPECT_NE(chat.say(at, "/system", "no system message"), std::string::npos) << chat.output();
  chat.say(at, "/quit", "");
  EXPECT_EQ(chat.wait_exit(), 0);
}

// Runs a shell command line; returns its exit code and what it printed (stdout and stderr).
std::pair<int, std::string> run_shell(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(ChatTerminal, BadStartsGiveAClearMessage) {
  testing::ScratchDir dir("chat_bad");
  const std::string bin = mind4_binary();
  auto [rc1, out1] = run_shell("echo hi | " + bin + " chat --checkpoint " + MIND4_SOURCE_DIR +
                               "/tests/fixtures/yarn32_mxfp4_mha --tokenizer o200k_harmony");
  EXPECT_EQ(rc1, 1);
  EXPECT_NE(out1.find("the vocabulary does not match the model"), std::string::npos) << out1;
  testing::write_file(dir / "tools.json",
                      R"([{"name": "w", "command": "true", "parameters": {"type": "array"}}])");
  auto [rc2, out2] =
      run_shell("echo hi | " + bin + " chat --checkpoint " + testing::tiny_harmony_checkpoint() +
                " --tokenizer o200k_harmony --tools " + (dir / "tools.json"));
  EXPECT_EQ(rc2, 1);
  EXPECT_NE(out2.find("tool 0 ('w'): 'parameters' must be a JSON Schema object"), std::string::npos)
      << out2;
  auto [rc3, out3] = run_shell(bin + " chat --checkpoint " + dir.str() + "/none < /dev/null");
  EXPECT_EQ(rc3, 1);
  EXPECT_NE(out3.find("does not exist"), std::string::npos) << out3;
}

TEST(ChatTerminal, GenerateReadsStdinAndPrintsJson) {
  const std::string cmd = "printf 'Once upon a time' | " + mind4_binary() +
                          " generate --checkpoint " + testing::tiny_harmony_checkpoint() +
                          " --tokenizer o200k_harmony --mode plain --temperature 0"
                          " --max-new-tokens 6 --logprobs 2 --json";
  auto [rc, out] = run_shell(cmd);
  ASSERT_EQ(rc, 0) << out;
  auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(j["mode"], "plain");
  EXPECT_EQ(j["generated_tokens"], 6);
  EXPECT_EQ(j["stop"], "max_tokens");
  ASSERT_EQ(j["tokens"].size(), 6u);
  for (const auto& t : j["tokens"]) {
    ASSERT_EQ(t["top"].size(), 2u);
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(t["id"], t["top"][0]["id"]);
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
  }
  EXPECT_GT(j["timing"]["decode_tok_s"].get<double>(), 0.0);
  auto [rc2, out2] =
      run_shell(mind4_binary() + " generate --checkpoint " + testing::tiny_harmony_checkpoint() +
                " --tokenizer o200k_harmony --stop-token nonsense hi");
  EXPECT_EQ(rc2, 1);
  EXPECT_NE(out2.find("--stop-token 'nonsense'"), std::string::npos) << out2;
  // A prompt longer than the context: a clear message, and the prompt is not echoed first.
  testing::ScratchDir dir("generate_long");
  std::string long_prompt;
  for (int i = 0; i < 200; ++i) long_prompt += "many words ";
  testing::write_file(dir / "prompt.txt", long_prompt);
  auto [rc3, out3] = run_shell(
      mind4_binary() + " generate --checkpoint " + testing::tiny_harmony_checkpoint() +
      " --tokenizer o200k_harmony --mode plain --context 64 --prompt-file " + (dir / "prompt.txt"));
  EXPECT_EQ(rc3, 1);
  EXPECT_NE(out3.find("the prompt has"), std::string::npos) << out3;
  EXPECT_NE(out3.find("the context holds 64"), std::string::npos) << out3;
  EXPECT_EQ(out3.find("many words"), std::string::npos) << out3;
}

}  // namespace
}  // namespace mind4
