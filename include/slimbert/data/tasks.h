// Labelled task data: the GLUE directory layouts and generic TSV / CSV / JSONL files.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace slimbert {

struct Example {
  std::string text_a;
  std::optional<std::string> text_b;
  std::string label;  // class name, or the number for regression; "" when unlabelled (test)
  size_t line = 0;    // 1-based line in the source file
};

struct TaskData {
  std::string source;  // file read
  std::vector<Example> examples;
  int64_t skipped_rows = 0;  // malformed rows skipped with skip_bad_rows
};

// How a task is read and scored.
struct TaskSpec {
  std::string name;  // cola sst2 mrpc stsb qqp mnli mnli-mm qnli rte wnli, or tsv / csv / jsonl
  std::string dir;   // directory with train / dev / test files
  bool regression = false;
  std::vector<std::string> labels;  // the label set (GLUE: fixed; generic: from the train split)
  std::string main_metric;          // accuracy, f1, mcc, acc_and_f1, corr
  bool skip_bad_rows = false;

  // GLUE tasks by name; "tsv" / "csv" / "jsonl" for files with a header (text or sentence /
  // sentence1, optional sentence2, label). The label set of generic tasks comes from train.
  static TaskSpec make(const std::string& name, const std::string& dir, bool skip_bad_rows = false);
  static std::vector<std::string> glue_names();
  // How reports name the task: the GLUE name, or a generic task's directory name ("spam").
  std::string display_name() const;
  // split: train, dev, test (MNLI: dev = dev_matched, mnli-mm: dev_mismatched).
  std::string path(const std::string& split) const;
  TaskData load(const std::string& split) const;
  // Label index of an example; errors name file:line for labels outside the set.
  int64_t label_index(const Example& e, const std::string& source) const;
};

// A label that states a number (a regression target, an STS score); nullopt for a class name.
std::optional<double> label_number(const std::string& label);

// Splits one line of a CSV file (RFC 4180 quoting); fails on an unterminated quote.
std::vector<std::string> split_csv_line(const std::string& line, const std::string& where);

}  // namespace slimbert
