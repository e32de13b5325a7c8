#include "io/json_fields.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "mind4/status.h"

namespace mind4::io {

using json = nlohmann::json;

int edit_distance(const std::string& a, const std::string& b) {
  // Optimal string alignment: a swap of neighbours ("modle") counts as one edit, like a typo.
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<int>> d(n + 1, std::vector<int>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = int(i);
  for (size_t j = 0; j <= m; ++j) d[0][j] = int(j);
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j) {
      d[i][j] =
          std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[n][m];
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  int best_distance = std::numeric_limits<int>::max();
  for (const auto& c : candidates) {
    int d = edit_distance(word, c);
    if (d < best_distance) best_distance = d, best = c;
  }
  // A third of the word's length (at least 1, at most 3) catches typos without suggesting
  // unrelated keys.
  int allowed = std::clamp(int(word.size()) / 3, 1, 3);
  return best_distance <= allowed ? best : "";
}

std::string describe_json(const json& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return std::string(v.type_name()) + " " + text;
}

JsonFields::JsonFields(const json& object, std::string prefix, std::string source)
    : object_(object), prefix_(std::move(prefix)), source_(std::move(source)) {
  if (!object_.is_object()) {
    throw Error(Status::kInvalidConfig,
                source_ + ": " + (prefix_.empty() ? "the file" : "'" + prefix_ + "'") +
                    " must be a JSON object, found " + describe_json(object_));
  }
}

void JsonFields::fail(const std::string& key, const std::string& what) const {
  throw Error(Status::kInvalidConfig, source_ + ": field '" + path(key) + "' " + what);
}

bool JsonFields::has(const std::string& key) const {
  // An optional key asked about is part of the schema: finish() then suggests it for a misspelling.
  known_.insert(key);
  return object_.contains(key);
}

const json& JsonFields::require(const std::string& key) {
  known_.insert(key);
  auto it = object_.find(key);
  if (it == object_.end()) {
    // Suggest a key of the file that is not (yet) a known field: "top_pp" for a missing "top_p",
    // rather than its correctly spelt neighbour "top_k".
    std::vector<std::string> present;
    for (auto i = object_.begin(); i != object_.end(); ++i)
      if (!known_.count(i.key())) present.push_back(i.key());
    std::string near = closest_match(key, present);
    fail(key, "is missing" +
                  (near.empty() ? std::string() : " (found '" + path(near) + "': misspelt?)"));
  }
  return *it;
}

int JsonFields::get_int(const std::string& key) {
  const json& v = require(key);
  if (!v.is_number_integer()) fail(key, "must be an integer, found " + describe_json(v));
  int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX
                                                                                : v.get<int64_t>();
  if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max())
    fail(key, "= " + v.dump() + " does not fit a 32-bit integer");
  return int(x);
}

uint64_t JsonFields::get_u64(const std::string& key) {
  const json& v = require(key);
  if (!v.is_number_unsigned())
    fail(key, "must be a non-negative integer, found " + describe_json(v));
  return v.get<uint64_t>();
}

float JsonFields::get_float(const std::string& key) {
  const json& v = require(key);
  if (!v.is_number()) fail(key, "must be a number, found " + describe_json(v));
  double d = v.get<double>();
  if (!std::isfinite(d) || std::fabs(d) > double(std::numeric_limits<float>::max()))
    fail(key, "= " + v.dump() + " is not a finite 32-bit float");
  return float(d);
}

bool JsonFields::get_bool(const std::string& key) {
  const json& v = require(key);
  if (!v.is_boolean()) fail(key, "must be true or false, found " + describe_json(v));
  return v.get<bool>();
}

std::string JsonFields::get_string(const std::string& key) {
  const json& v = require(key);
  if (!v.is_string()) fail(key, "must be a string, found " + describe_json(v));
  return v.get<std::string>();
}

const json& JsonFields::get_object(const std::string& key) {
  const json& v = require(key);
  if (!v.is_object()) fail(key, "must be an object, found " + describe_json(v));
  return v;
}

void JsonFields::finish(bool strict) {
  std::vector<std::string> known(known_.begin(), known_.end());
  for (auto it = object_.begin(); it != object_.end(); ++it) {
    if (known_.count(it.key())) continue;
    std::string near = closest_match(it.key(), known);
    if (!strict && near.empty()) continue;
    fail(it.key(),
         "is unknown" + (near.empty() ? std::string() : " (did you mean '" + path(near) + "'?)"));
  }
}

}  // namespace mind4::io
