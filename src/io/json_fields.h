// Strict reading of one JSON object of a config file: each getter checks presence and type, and
// finish() rejects keys nobody asked for (with a "did you mean" when a key is a near-miss of a
// known one). Every error is Error(kInvalidConfig) naming the file and the dotted field path.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace mind4::io {

// Edit distance (insert / delete / substitute), for suggestions.
int edit_distance(const std::string& a, const std::string& b);
// The candidate closest to `word` when it is close enough to be a likely typo, else "".
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

class JsonFields {
 public:
  // `prefix` is the path of this object ("" for the top level, "sampling", "rope_scaling").
  JsonFields(const nlohmann::json& object, std::string prefix, std::string source);

  bool has(const std::string& key) const;
  int get_int(const std::string& key);
  uint64_t get_u64(const std::string& key);
  float get_float(const std::string& key);
  bool get_bool(const std::string& key);
  std::string get_string(const std::string& key);
  const nlohmann::json& get_object(const std::string& key);
  // Marks a key as known without reading it (optional fields that are handled elsewhere).
  void allow(const std::string& key) { known_.insert(key); }
  void allow(std::initializer_list<const char*> keys) {
    for (auto k : keys) known_.insert(k);
  }

  // strict: any unknown key is an error. Lenient (checkpoint configs carry many fields we do not
  // use): only a key that looks like a misspelling of a known one is an error.
  void finish(bool strict);

  std::string path(const std::string& key) const {
    return prefix_.empty() ? key : prefix_ + "." + key;
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;

 private:
  const nlohmann::json& require(const std::string& key);
  const nlohmann::json& object_;
  std::string prefix_, source_;
  mutable std::set<std::string> known_;  // has() marks a key as part of the schema too
};

// "string \"abc\"", "number 1.5", ... for messages about a value of the wrong type.
std::string describe_json(const nlohmann::json& v);

}  // namespace mind4::io
