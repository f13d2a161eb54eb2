#include "commands.h"
#include "common.h"

namespace slimbert::cli {

void add_tokenize(CLI::App& app) {
  struct Opts {
    std::string dir, output = "-", truncation = "longest_first";
    InputOptions input;
    bool jsonl = false, no_special = false, decode = false;
    int64_t max_length = 0;
    RuntimeConfig runtime;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "tokenize", "tokenize text (lines or JSONL {text, text_pair?, max_length?}) into JSONL ids");
  cmd->add_option("dir", opts->dir, "directory with vocab.txt and tokenizer_config.json")
      ->required();
  add_input_options(cmd, &opts->input);
  cmd->add_flag("--jsonl", opts->jsonl, "input is JSONL (same as --format jsonl)");
  cmd->add_option("--output,-o", opts->output, "output file ('-' = standard output)")
      ->capture_default_str();
  cmd->add_option("--max-length", opts->max_length,
                  "truncate to at most this many ids (0 = no limit)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_option("--truncation", opts->truncation, "longest_first, only_first or only_second")
      ->check(CLI::IsMember({"longest_first", "only_first", "only_second"}))
      ->capture_default_str();
  cmd->add_flag("--no-special-tokens", opts->no_special, "do not add [CLS] / [SEP]");
  cmd->add_flag("--decode", opts->decode, "also write the decoded text");
  add_runtime_options(cmd, &opts->runtime);
  cmd->callback([opts] {
    if (opts->jsonl) opts->input.format = "jsonl";
    const Tokenizer tokenizer = Tokenizer::from_dir(opts->dir);
    RecordReader reader(opts->input);
    Output out(opts->output);
    for (auto records = reader.next(256); !records.empty(); records = reader.next(256), out.flush())
      for (const auto& r : records) {
        EncodeOptions eo;
        eo.truncation = parse_truncation(opts->truncation);
        eo.add_special_tokens = !opts->no_special;
        if (r.max_length)
          eo.max_length = r.max_length;
        else if (opts->max_length > 0)
          eo.max_length = opts->max_length;
        const Encoding e = tokenizer.encode(r.text, r.text_pair, eo);
        nlohmann::json j;
        if (!r.id.is_null()) j["id"] = r.id;
        j["tokens"] = e.tokens;
        j["input_ids"] = e.input_ids;
        j["token_type_ids"] = e.token_type_ids;
        if (opts->decode)
          j["decoded"] = tokenizer.decode(e.input_ids, /*skip_special_tokens=*/true);
        out.stream() << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      }
    out.commit();
  });
}

}  // namespace slimbert::cli
