#include "harmony/typescript_schema.h"

#include <set>
#include <vector>

namespace mind4::harmony {
namespace {

const Json* member(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const std::string* string_member(const Json& object, const char* key) {
  const Json* value = member(object, key);
  return value && value->is_string() ? value->get_ptr<const std::string*>() : nullptr;
}

bool has_enum(const Json& schema) {
  const Json* values = member(schema, "enum");
  return values && values->is_array() && !values->empty();
}

bool is_nullable(const Json& schema) {
  const Json* nullable = member(schema, "nullable");
  return nullable && nullable->is_boolean() && nullable->get<bool>();
}

// A string default is quoted unless the member is an enum (whose values are already quoted in
// the union, so the model sees the bare value); other values are written as JSON.
std::string default_text(const Json& value, const Json& owner) {
  if (value.is_string()) {
    const auto& s = value.get_ref<const std::string&>();
    return has_enum(owner) ? s : "\"" + s + "\"";
  }
  return value.dump();
}

std::string with_null(std::string type, const Json& schema) {
  if (is_nullable(schema) && type.find("null") == std::string::npos) type += " | null";
  return type;
}

// `a // comment b` after a union variant: its description and default.
std::string variant_comments(const Json& variant, bool skip_description,
                             const std::string* property_description) {
  std::vector<std::string> comments;
  if (!skip_description) {
    const std::string* desc = string_member(variant, "description");
    if (desc && !(property_description && *desc == *property_description))
      comments.push_back(*desc);
  }
  if (const Json* def = member(variant, "default")) {
    comments.push_back("default: " + default_text(*def, variant));
  }
  if (comments.empty()) return {};
  std::string out = " //";
  for (const auto& c : comments) out += " " + c;
  return out;
}

std::string top_level_one_of(const Json& variants, const std::string& indent) {
  std::string out;
  for (const Json& variant : variants) {
    out += "\n" + indent + " | ";
    out += with_null(schema_to_typescript(variant, indent + "   "), variant);
    out += variant_comments(variant, false, nullptr);
  }
  return out;
}

void render_one_of_property(const std::string& key, const Json& property, const Json& variants,
                            bool required, const std::string& indent, std::string& out) {
  const std::string* property_desc = string_member(property, "description");
  // A property description equal to the first variant's is said once, by the variant.
  bool same_as_first = false;
  if (property_desc && !variants.empty()) {
    const std::string* first_desc = string_member(variants.front(), "description");
    same_as_first = first_desc && *first_desc == *property_desc;
  }
  bool desc_above = false;
  if (property_desc && !same_as_first) {
    out += indent + "// " + *property_desc + "\n";
    desc_above = true;
  }
  if (const Json* def = member(property, "default")) {
    out += indent + "// default: " + default_text(*def, property) + "\n";
  }
  out += indent + key + (required ? "" : "?") + ":\n";
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const Json& variant = variants[i];
    out += indent + " | ";
    out += with_null(schema_to_typescript(variant, indent + "   "), variant);
    out += variant_comments(variant, i == 0 && desc_above, property_desc);
    out += "\n";
  }
  out += indent + ",\n";
}

std::string object_type(const Json& schema, const std::string& indent) {
  std::string out;
  if (const std::string* desc = string_member(schema, "description")) {
    out += indent + "// " + *desc + "\n";
  }
  out += "{\n";
  std::set<std::string> required;
  if (const Json* req = member(schema, "required"); req && req->is_array()) {
    for (const Json& r : *req) {
      if (r.is_string()) required.insert(r.get<std::string>());
    }
  }
  const Json* properties = member(schema, "properties");
  if (properties && properties->is_object()) {
    for (const auto& [key, property] : properties->items()) {
      const bool is_required = required.count(key) > 0;
      const Json* one_of = member(property, "oneOf");
      if (const std::string* title = string_member(property, "title")) {
        out += indent + "// " + *title + "\n" + indent + "//\n";
      }
      if (!one_of) {
        if (const std::string* desc = string_member(property, "description")) {
          out += indent + "// " + *desc + "\n";
        }
      }
      if (const Json* examples = member(property, "examples");
          examples && examples->is_array() && !examples->empty()) {
        out += indent + "// Examples:\n";
        for (const Json& example : *examples) {
          if (example.is_string()) {
            out += indent + "// - \"" + example.get<std::string>() + "\"\n";
          }
        }
      }
      if (one_of && one_of->is_array()) {
        render_one_of_property(key, property, *one_of, is_required, indent, out);
        continue;
      }
      out += indent + key + (is_required ? "" : "?") + ": ";
      out += with_null(schema_to_typescript(property, indent + "    "), property);
      out += ",";
      if (!one_of) {
        if (const Json* def = member(property, "default")) {
          out += " // default: " + default_text(*def, property);
        }
      }
      out += "\n";
    }
  }
  out += indent + "}";
  return out;
}

}  // namespace

std::string schema_to_typescript(const Json& schema, const std::string& indent) {
  if (const Json* one_of = member(schema, "oneOf"); one_of && one_of->is_array()) {
    return top_level_one_of(*one_of, indent);
  }
  const Json* type = member(schema, "type");
  if (type && type->is_array()) {
    std::string out;
    for (const Json& t : *type) {
      if (!t.is_string()) continue;
      if (!out.empty()) out += " | ";
      const auto& name = t.get_ref<const std::string&>();
      out += name == "integer" ? "number" : name;
    }
    if (!out.empty()) return out;
  }
  if (!type || !type->is_string()) return "any";
  const auto& name = type->get_ref<const std::string&>();
  if (name == "object") return object_type(schema, indent);
  if (name == "string") {
    std::string out;
    if (const Json* values = member(schema, "enum"); values && values->is_array()) {
      for (const Json& v : *values) {
        if (!v.is_string()) continue;
        if (!out.empty()) out += " | ";
        out += "\"" + v.get<std::string>() + "\"";
      }
    }
    return out.empty() ? "string" : out;
  }
  if (name == "number" || name == "integer") return "number";
  if (name == "boolean") return "boolean";
  if (name == "array") {
    const Json* items = member(schema, "items");
    return items ? schema_to_typescript(*items, indent) + "[]" : "Array<any>";
  }
  return "any";
}

}  // namespace mind4::harmony
