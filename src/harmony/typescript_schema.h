// JSON Schema -> the TypeScript-like types of the harmony tool sections
// (`type get_weather = (_: { location: string, ... }) => any;`).
#pragma once

#include <string>

#include "mind4/harmony.h"

namespace mind4::harmony {

// The type text for `schema`; `indent` prefixes the lines of nested object members. Follows the
// layout of the published renderer (openai/harmony): property comments on the line above,
// `?` for optional members, string enums as unions, `// default: ...` after the member.
std::string schema_to_typescript(const Json& schema, const std::string& indent);

}  // namespace mind4::harmony
