// What slimbert did to a model, kept in its config.json as "slimbert_history": a list of steps
// ("rewired", "dynabert train-width", "wid student", "exported w0.5_d1", ...). transformers
// ignores the key and saves it back. `slimbert info` shows it; slicing a model that was never
// rewired gets a warning, since its first heads are not its most important ones.
#pragma once

#include <string>
#include <vector>

#include "slimbert/model/config.h"

namespace slimbert {

void add_history(BertConfig& config, const std::string& step);
std::vector<std::string> history(const BertConfig& config);
// Rewired by importance (every DynaBERT model is): narrower widths keep the important heads.
bool width_adaptive(const BertConfig& config);

}  // namespace slimbert
