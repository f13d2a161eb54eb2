// Loading what a server runs: the profile first (it decides the engine), then the model packed
// for the profile's widths, then a short profile when there was none.
#include <filesystem>
#include <iostream>

#include "slimbert/core/error.h"
#include "slimbert/io/checkpoint.h"
#include "slimbert/serve/server.h"

namespace slimbert::serve {

ServedModel load_served(const ServeSetup& setup) {
  const std::string path = setup.profile.empty()
                               ? infer::default_profile_path(setup.model_dir, setup.int8)
                               : setup.profile;
  std::string gemm = setup.gemm;
  std::optional<infer::LatencyProfile> profile;
  if (std::filesystem::exists(path)) {
    profile = infer::LatencyProfile::load(path);
    if (profile->int8 != setup.int8)
      fail(path, ": a profile measured ", profile->int8 ? "with" : "without",
           " --int8; this server runs ", setup.int8 ? "int8" : "fp32");
    // The budgets rest on the profile's timings: run the engine they were measured on.
    if (!setup.int8 && !profile->gemm.empty()) {
      if (gemm == "auto")
        gemm = profile->gemm;
      else if (gemm != profile->gemm)
        fail(path, ": a profile measured with --gemm ", profile->gemm,
             "; this server would run --gemm ", gemm,
             " (its budgets would rest on another engine's timings: profile again, or drop "
             "--gemm)");
    }
  } else if (!setup.profile.empty()) {
    fail(setup.profile, ": file not found");
  }
  std::vector<SubNet> subnets;
  if (profile)
    for (const auto& s : profile->subnets) subnets.push_back(s.subnet);
  else
    subnets = setup.subnets;
  if (subnets.empty()) fail("serve: no sub-networks to serve");
  ServedModel served{
      infer::load_configured(setup.model_dir,
                             {setup.int8, infer::widths_to_pack(subnets), infer::parse_gemm(gemm)},
                             setup.runtime),
      Tokenizer::from_dir(setup.model_dir),
      {}};
  check_tokenizer_fits(served.tokenizer, served.model->config(), setup.model_dir);
  if (!profile) {
    std::cerr << "serve: no " << path << ": measuring a short profile of " << subnets.size()
              << " sub-networks (`slimbert profile` makes a better one)\n";
    infer::ProfileOptions po;
    po.subnets = subnets;
    po.fit = {{1, 16}, {1, 128}, {8, 32}, {8, 128}};
    po.held_out = {};
    po.iters = 3;
    po.grid_json = setup.grid;
    profile = infer::measure_profile(*served.model, po);
  }
  served.profile = std::move(*profile);
  return served;
}

}  // namespace slimbert::serve
