// ProgressBar and the logger: output format, rate limiting, the environment switch and
// thread-safe counting, checked on captured streams.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/progress.h"

namespace mind4 {
namespace {

// A temporary stream whose content can be read back after the bar wrote to it.
class CapturedStream {
 public:
  CapturedStream() : file_(std::tmpfile()) {}
  ~CapturedStream() { std::fclose(file_); }
  std::FILE* get() { return file_; }
  std::string text() {
    std::fflush(file_);
    long size = std::ftell(file_);
    std::string out(static_cast<size_t>(size), '\0');
    std::rewind(file_);
    size_t got = std::fread(out.data(), 1, out.size(), file_);
    out.resize(got);
    return out;
  }

 private:
  std::FILE* file_;
};

ProgressOptions plain(std::FILE* f) {
  ProgressOptions o;
  o.stream = f;
  o.terminal = 0;
  o.honour_env = false;
  return o;
}

ProgressOptions term(std::FILE* f, int width) {
  ProgressOptions o;
  o.stream = f;
  o.terminal = 1;
  o.honour_env = false;
  o.width = width;
  return o;
}

TEST(ProgressFormat, SiPrefixesAndDurations) {
  EXPECT_EQ(progress_format::si(999), "999");
  EXPECT_EQ(progress_format::si(1000), "1.00k");
  EXPECT_EQ(progress_format::si(1234567), "1.23M");
  EXPECT_EQ(progress_format::si(45.6e9), "45.6G");
  EXPECT_EQ(progress_format::amount(2500000, "B"), "2.50 MB");
  EXPECT_EQ(progress_format::amount(512, "B"), "512 B");
  EXPECT_EQ(progress_format::amount(512, "tok"), "512");
  EXPECT_EQ(progress_format::rate(2.5e9, "B"), "2.50 GB/s");
  EXPECT_EQ(progress_format::rate(90.04, "it"), "90.0 it/s");
  EXPECT_EQ(progress_format::rate(1.5e6, "tok"), "1.50M tok/s");
  EXPECT_EQ(progress_format::duration(65), "01:05");
  EXPECT_EQ(progress_format::duration(3723), "1:02:03");
  EXPECT_EQ(progress_format::duration(-1), "?");
}

TEST(ProgressBar, PlainOutputHasNoCarriageReturnsAndOneFinishLine) {
  CapturedStream out;
  {
    ProgressBar bar("tokenize", 1000, "doc", plain(out.get()));
    for (int i = 0; i < 1000; ++i) bar.add(1);
    bar.finish();
    bar.finish();  // idempotent
  }
  std::string text = out.text();
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_NE(text.find("tokenize: done, 1000/1000 doc in 00:00"), std::string::npos) << text;
}

TEST(ProgressBar, PlainOutputPrintsPeriodicLines) {
  CapturedStream out;
  ProgressOptions o = plain(out.get());
  o.plain_interval_s = 0.02;
  {
    ProgressBar bar("steps", 50, "it", o);
    for (int i = 0; i < 5; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      bar.add(10);
    }
  }  // the destructor finishes
  std::string text = out.text();
  EXPECT_GE(std::count(text.begin(), text.end(), '\n'), 3) << text;
  EXPECT_NE(text.find("steps: "), std::string::npos);
  EXPECT_NE(text.find("% "), std::string::npos);
  EXPECT_NE(text.find("ETA "), std::string::npos);
  EXPECT_NE(text.find("steps: done, 50/50 it"), std::string::npos) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos);
}

TEST(ProgressBar, TerminalRedrawsOneLineWithinWidth) {
  CapturedStream out;
  {
    ProgressBar bar("load", 2500000, "B", term(out.get(), 70));
    bar.update(1250000);
    bar.update(2500000);
    bar.finish();
  }
  std::string text = out.text();
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text[0], '\r');
  EXPECT_EQ(text.back(), '\n');
  EXPECT_NE(text.find("100%"), std::string::npos) << text;
  EXPECT_NE(text.find("2.50 MB/2.50 MB"), std::string::npos) << text;
  EXPECT_NE(text.find("B/s]"), std::string::npos) << text;
  // Every drawn state fits the terminal width (ignoring the control sequences).
  size_t pos = 0;
  while ((pos = text.find('\r', pos)) != std::string::npos) {
    size_t end = text.find("\033[K", pos);
    ASSERT_NE(end, std::string::npos);
    EXPECT_LE(end - pos - 1, 70u) << text.substr(pos + 1, end - pos - 1);
    pos = end;
  }
}

TEST(ProgressBar, UnknownTotalShowsCountAndRateOnly) {
  CapturedStream out;
  {
    ProgressBar bar("scan", 0, "file", term(out.get(), 80));
    bar.add(7);
  }
  std::string text = out.text();
  EXPECT_EQ(text.find('%'), std::string::npos) << text;
  EXPECT_NE(text.find("scan 7 file ["), std::string::npos) << text;
}

TEST(ProgressBar, TerminalRedrawsAreRateLimited) {
  CapturedStream out;
  ProgressOptions o = term(out.get(), 80);
  o.terminal_interval_s = 0.1;
  auto start = std::chrono::steady_clock::now();
  double seconds = 0;
  {
    ProgressBar bar("busy", 0, "it", o);
    while (seconds < 0.35) {
      bar.add(1);
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  }
  std::string text = out.text();
  long redraws = std::count(text.begin(), text.end(), '\r');
  // Initial draw + at most one per 100 ms + the final one.
  EXPECT_GE(redraws, 2);
  EXPECT_LE(redraws, 2 + static_cast<long>(seconds / 0.1) + 1) << text;
}

TEST(ProgressBar, EnvironmentSwitchSilencesBars) {
  CapturedStream out;
  ProgressOptions o = term(out.get(), 80);
  o.honour_env = true;
  setenv("MIND4_NO_PROGRESS", "1", 1);
  {
    ProgressBar bar("quiet", 10, "it", o);
    bar.add(10);
    EXPECT_EQ(bar.done(), 10u);
  }
  unsetenv("MIND4_NO_PROGRESS");
  EXPECT_EQ(out.text(), "");
}

TEST(ProgressBar, ConcurrentAddsAreCounted) {
  CapturedStream out;
  ProgressBar bar("threads", 400000, "it", plain(out.get()));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&bar] {
      for (int i = 0; i < 100000; ++i) bar.add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bar.done(), 400000u);
  bar.finish();
  EXPECT_NE(out.text().find("400000/400000"), std::string::npos);
}

int g_evaluations = 0;
int counted() {
  return ++g_evaluations;
}

TEST(Log, WritesLevelPrefixAndRespectsThreshold) {
  LogLevel saved = log::level();
  log::set_level(LogLevel::kWarning);
  g_evaluations = 0;
  ::testing::internal::CaptureStderr();
  MIND4_LOG_INFO("hidden ", counted());
  MIND4_LOG_DEBUG("hidden too ", counted());
  MIND4_LOG_WARNING("disk ", 3, " is slow");
  MIND4_LOG_ERROR("gone");
  std::string text = ::testing::internal::GetCapturedStderr();
  log::set_level(saved);
  EXPECT_EQ(text, "[warning] disk 3 is slow\n[error] gone\n");
  EXPECT_EQ(g_evaluations, 0) << "disabled log lines must not evaluate their arguments";
}

TEST(Log, ParsesLevelNames) {
  EXPECT_EQ(log::parse_level("debug"), LogLevel::kDebug);
  EXPECT_EQ(log::parse_level("warn"), LogLevel::kWarning);
  EXPECT_STREQ(log::level_name(LogLevel::kError), "error");
  try {
    log::parse_level("loud");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("loud"), std::string::npos);
  }
}

}  // namespace
}  // namespace mind4
