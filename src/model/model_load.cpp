// Model::load: the checkpoint reader of src/io binds the tensors; Model::from_weights checks them.
#include "io/checkpoint.h"
#include "mind4/model.h"
#include "mind4/status.h"
#include "model/weights.h"

namespace mind4 {

std::shared_ptr<const Model> Model::load(const Config& config) {
  MIND4_CHECK(!config.paths.checkpoint.empty(), Status::kInvalidArgument,
              "Model::load: no checkpoint given (paths.checkpoint", 
              config.source.empty() ? "" : " in " + config.source, " is empty)");
  return from_weights(load_checkpoint(config.paths.checkpoint), config.execution);
}

}  // namespace mind4
