// The apply_patch tool: a patch format made for language models (whole-file adds and deletes,
// and context hunks without line numbers), applied to files under one directory only. Every
// file's new text is worked out before anything is written, so a patch that does not apply
// leaves the directory as it was.
#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "chat/tools.h"
#include "mind4/status.h"

namespace mind4::chat {

namespace {

namespace fs = std::filesystem;

std::vector<std::string> patch_split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::string patch_join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += l + "\n";
  return out;
}

// root/relative, refusing anything that would leave root (absolute paths, "..", symlinks out).
fs::path patch_target(const fs::path& root, const std::string& relative) {
  MIND4_CHECK(!relative.empty(), Status::kInvalidArgument, "apply_patch: an empty path");
  fs::path rel(relative);
  MIND4_CHECK(rel.is_relative(), Status::kInvalidArgument, "apply_patch: '", relative,
              "' is absolute; paths are relative to the patch directory");
  fs::path full = fs::weakly_canonical(root / rel);
  auto [r, f] = std::mismatch(root.begin(), root.end(), full.begin(), full.end());
  MIND4_CHECK(r == root.end(), Status::kInvalidArgument, "apply_patch: '", relative,
              "' is outside the patch directory");
  return full;
}

std::string patch_read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t patch_find(const std::vector<std::string>& lines, const std::vector<std::string>& block,
                  size_t from) {
  auto rstrip = [](std::string s) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
    return s;
  };
  for (int loose = 0; loose < 2; ++loose) {  // exact first, then ignoring trailing blanks
    for (size_t at = from; at + block.size() <= lines.size(); ++at) {
      bool match = true;
      for (size_t k = 0; match && k < block.size(); ++k)
        match = loose ? rstrip(lines[at + k]) == rstrip(block[k]) : lines[at + k] == block[k];
      if (match) return at;
    }
  }
  return std::string::npos;
}

bool patch_is_header(const std::string& line) {
  return line.rfind("*** ", 0) == 0;
}

}  // namespace

std::string apply_patch(const fs::path& root_in, const std::string& patch) {
  const fs::path root = fs::canonical(root_in);
  std::vector<std::string> lines = patch_split_lines(patch);
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  size_t i = 0;
  while (i < lines.size() && lines[i].empty()) ++i;
  MIND4_CHECK(i < lines.size() && lines[i] == "*** Begin Patch", Status::kInvalidArgument,
              "apply_patch: the patch must start with '*** Begin Patch'");
  MIND4_CHECK(lines.back() == "*** End Patch", Status::kInvalidArgument,
              "apply_patch: the patch must end with '*** End Patch'");
  ++i;
  std::map<fs::path, std::optional<std::string>> result;  // new text, or nullopt = delete
  std::vector<std::string> summary;
  auto current = [&](const fs::path& p, const std::string& name) {
    auto it = result.find(p);
    if (it != result.end()) {
      MIND4_CHECK(it->second.has_value(), Status::kInvalidArgument, "apply_patch: '", name,
                  "' was deleted earlier in the patch");
      return *it->second;
    }
    MIND4_CHECK(fs::is_regular_file(p), Status::kInvalidArgument, "apply_patch: '", name,
                "' does not exist");
    return patch_read(p);
  };
  const size_t end = lines.size() - 1;
  while (i < end) {
    const std::string& h = lines[i];
    if (h.rfind("*** Add File: ", 0) == 0) {
      const std::string name = h.substr(14);
      fs::path p = patch_target(root, name);
      MIND4_CHECK(!fs::exists(p) && !result.count(p), Status::kInvalidArgument, "apply_patch: '",
                  name, "' already exists");
      std::vector<std::string> body;
      for (++i; i < end && !patch_is_header(lines[i]); ++i) {
        MIND4_CHECK(!lines[i].empty() && lines[i][0] == '+', Status::kInvalidArgument,
                    "apply_patch: line ", i + 1, " of an added file must start with '+'");
        body.push_back(lines[i].substr(1));
      }
      result[p] = patch_join_lines(body);
      summary.push_back("A " + name);
    } else if (h.rfind("*** Delete File: ", 0) == 0) {
      const std::string name = h.substr(17);
      fs::path p = patch_target(root, name);
      current(p, name);
      result[p] = std::nullopt;
      summary.push_back("D " + name);
      ++i;
    } else if (h.rfind("*** Update File: ", 0) == 0) {
      const std::string name = h.substr(17);
      fs::path p = patch_target(root, name);
      std::vector<std::string> text = patch_split_lines(current(p, name));
      ++i;
      fs::path move_to;
      if (i < end && lines[i].rfind("*** Move to: ", 0) == 0) {
        move_to = patch_target(root, lines[i].substr(13));
        ++i;
      }
      size_t cursor = 0;
      int hunk = 0;
      while (i < end && !patch_is_header(lines[i])) {
        MIND4_CHECK(lines[i].rfind("@@", 0) == 0, Status::kInvalidArgument, "apply_patch: line ",
                    i + 1, " should start a hunk with '@@'");
        ++hunk;
        std::vector<std::string> before, after;
        for (++i; i < end && lines[i].rfind("@@", 0) != 0 && !patch_is_header(lines[i]); ++i) {
          const std::string& l = lines[i];
          const char kind = l.empty() ? ' ' : l[0];
          const std::string body = l.empty() ? "" : l.substr(1);
          MIND4_CHECK(kind == ' ' || kind == '-' || kind == '+', Status::kInvalidArgument,
                      "apply_patch: line ", i + 1, " must start with ' ', '-' or '+'");
          if (kind != '+') before.push_back(body);
          if (kind != '-') after.push_back(body);
        }
        if (i < end && lines[i] == "*** End of File") ++i;
        const size_t at = patch_find(text, before, cursor);
        MIND4_CHECK(at != std::string::npos, Status::kInvalidArgument, "apply_patch: hunk ", hunk,
                    " of '", name, "' does not match the file");
        text.erase(text.begin() + long(at), text.begin() + long(at + before.size()));
        text.insert(text.begin() + long(at), after.begin(), after.end());
        cursor = at + after.size();
      }
      MIND4_CHECK(hunk > 0 || !move_to.empty(), Status::kInvalidArgument, "apply_patch: '", name,
                  "' is updated without any hunk");
      if (!move_to.empty()) {
        result[p] = std::nullopt;
        p = move_to;
      }
      result[p] = patch_join_lines(text);
      summary.push_back("M " + name);
    } else {
      throw Error(Status::kInvalidArgument, "apply_patch: line " + std::to_string(i + 1) + " ('" +
                                                h +
                                                "') is not an Add, Update or Delete File header");
    }
  }
  for (const auto& [p, text] : result) {
    if (!text) {
      fs::remove(p);
      continue;
    }
    fs::create_directories(p.parent_path());
    const fs::path tmp = p.string() + ".mind4-tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      MIND4_CHECK(out.good(), Status::kIoError, "apply_patch: cannot write ", p.string());
      out << *text;
    }
    fs::rename(tmp, p);
  }
  std::string out = "applied:";
  for (const std::string& s : summary) out += "\n" + s;
  return out;
}

}  // namespace mind4::chat
