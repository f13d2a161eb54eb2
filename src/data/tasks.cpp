#include "slimbert/data/tasks.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "slimbert/core/error.h"
#include "slimbert/core/fs.h"
#include "slimbert/core/json.h"
#include "slimbert/text/unicode.h"

namespace fs = std::filesystem;

namespace slimbert {
namespace {

struct GlueLayout {
  const char* name;
  const char* dir_name;
  bool header;         // first row is a header
  int text_a, text_b;  // column indices (-1 = none); negative counts from the end
  int label;           // column index of the label (-1 = last column)
  std::vector<std::string> labels;
  const char* metric;
  const char* dev_file;
  const char* test_file;
  int test_text_a, test_text_b;  // test files drop the label and may reorder columns
};

// The layouts of the files the GLUE download script produces.
const std::vector<GlueLayout>& glue_layouts() {
  // One row per task, kept as a table.
  // clang-format off
  static const std::vector<GlueLayout> layouts = {
      {"cola", "CoLA", false, 3, -1, 1, {"0", "1"}, "mcc", "dev.tsv", "test.tsv", 1, -1},
      {"sst2", "SST-2", true, 0, -1, 1, {"0", "1"}, "accuracy", "dev.tsv", "test.tsv", 1, -1},
      {"mrpc", "MRPC", true, 3, 4, 0, {"0", "1"}, "acc_and_f1", "dev.tsv", "test.tsv", 3, 4},
      {"stsb", "STS-B", true, 7, 8, -1, {}, "corr", "dev.tsv", "test.tsv", 7, 8},
      {"qqp", "QQP", true, 3, 4, 5, {"0", "1"}, "acc_and_f1", "dev.tsv", "test.tsv", 1, 2},
      {"mnli", "MNLI", true, 8, 9, -1, {"contradiction", "entailment", "neutral"}, "accuracy",
       "dev_matched.tsv", "test_matched.tsv", 8, 9},
      {"mnli-mm", "MNLI", true, 8, 9, -1, {"contradiction", "entailment", "neutral"}, "accuracy",
       "dev_mismatched.tsv", "test_mismatched.tsv", 8, 9},
      {"qnli", "QNLI", true, 1, 2, 3, {"entailment", "not_entailment"}, "accuracy", "dev.tsv", "test.tsv", 1, 2},
      {"rte", "RTE", true, 1, 2, 3, {"entailment", "not_entailment"}, "accuracy", "dev.tsv", "test.tsv", 1, 2},
      {"wnli", "WNLI", true, 1, 2, 3, {"0", "1"}, "accuracy", "dev.tsv", "test.tsv", 1, 2},
  };
  // clang-format on
  return layouts;
}

const GlueLayout* find_glue(const std::string& name) {
  for (const auto& l : glue_layouts())
    if (name == l.name) return &l;
  return nullptr;
}

std::vector<std::string> split_tab(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t tab = line.find('\t', start);
    out.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) break;
    start = tab + 1;
  }
  return out;
}

std::vector<std::string> read_lines(const std::string& path) {
  return split_lines(read_file(path), true);
}

int resolve(int index, size_t columns) {
  return index < 0 ? static_cast<int>(columns) + index : index;
}

// The columns a row needs for `index` to exist in it (negative: counted from the end).
size_t columns_needed(int index) {
  return static_cast<size_t>(index < 0 ? -index : index + 1);
}

// Generic header-based tables: which column holds what.
struct Columns {
  int a = -1, b = -1, label = -1;
};

Columns find_columns(const std::vector<std::string>& header, const std::string& where) {
  Columns c;
  for (size_t i = 0; i < header.size(); ++i) {
    const std::string& h = header[i];
    if (h == "sentence" || h == "text" || h == "sentence1" || h == "text_a" || h == "question1" ||
        h == "question")
      c.a = c.a < 0 ? static_cast<int>(i) : c.a;
    else if (h == "sentence2" || h == "text_b" || h == "text_pair" || h == "question2")
      c.b = static_cast<int>(i);
    else if (h == "label" || h == "score")
      c.label = static_cast<int>(i);
  }
  if (c.a < 0) {
    std::string names;
    for (const auto& h : header) names += (names.empty() ? "" : ", ") + json_quoted(h);
    fail(where, ": header needs a text column (sentence, text, sentence1 or text_a), got: ",
         excerpt(names, 200));
  }
  return c;
}

}  // namespace

std::vector<std::string> split_csv_line(const std::string& line, const std::string& where) {
  std::vector<std::string> out;
  std::string field;
  bool quoted = false, was_quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quoted) {
      if (ch == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        field += ch;
      }
    } else if (ch == '"' && field.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (ch == ',') {
      out.push_back(std::move(field));
      field.clear();
      was_quoted = false;
    } else {
      field += ch;
    }
  }
  if (quoted) fail(where, ": unterminated quoted field");
  out.push_back(std::move(field));
  return out;
}

std::vector<std::string> TaskSpec::glue_names() {
  std::vector<std::string> names;
  for (const auto& l : glue_layouts()) names.push_back(l.name);
  return names;
}

TaskSpec TaskSpec::make(const std::string& name, const std::string& dir, bool skip_bad_rows) {
  TaskSpec spec;
  spec.name = name;
  spec.dir = dir;
  spec.skip_bad_rows = skip_bad_rows;
  if (const GlueLayout* g = find_glue(name)) {
    spec.labels = g->labels;
    spec.regression = g->labels.empty();
    spec.main_metric = g->metric;
    return spec;
  }
  if (name != "tsv" && name != "csv" && name != "jsonl") {
    std::string names;
    for (const auto& n : glue_names()) names += n + ", ";
    fail("unknown task format '", name, "' (expected one of ", names, "tsv, csv, jsonl)");
  }
  spec.main_metric = "accuracy";
  if (!std::filesystem::is_directory(dir))
    fail(dir, ": task directory not found (expected its train, dev and test files there)");
  // The label set of a generic task: every label of the training split, sorted.
  TaskData train = spec.load("train");
  std::set<std::string> labels;
  bool numeric = true;
  for (const auto& e : train.examples) {
    labels.insert(e.label);
    numeric &= label_number(e.label).has_value();
  }
  if (labels.empty()) fail(train.source, ": no labelled examples");
  // Many distinct numbers: a regression task (an STS-like score), not classes.
  spec.regression = numeric && labels.size() > 20;
  if (spec.regression) {
    spec.main_metric = "corr";
  } else {
    if (labels.size() < 2)
      fail(train.source, ": only one label ('", *labels.begin(),
           "') in the training split; a classifier needs two or more");
    spec.labels.assign(labels.begin(), labels.end());
  }
  return spec;
}

std::string TaskSpec::display_name() const {
  if (find_glue(name)) return name;
  const fs::path d = fs::path(dir).lexically_normal();
  const std::string base = (d.filename().empty() ? d.parent_path() : d).filename().string();
  return base.empty() ? name : base;
}

std::string TaskSpec::path(const std::string& split) const {
  if (split != "train" && split != "dev" && split != "test")
    fail("unknown split '", split, "' (expected train, dev or test)");
  if (const GlueLayout* g = find_glue(name)) {
    const char* file = split == "train" ? "train.tsv" : split == "dev" ? g->dev_file : g->test_file;
    // Accept both DIR/MRPC/train.tsv (the GLUE root) and DIR/train.tsv.
    const fs::path nested = fs::path(dir) / g->dir_name / file;
    return fs::exists(nested) ? nested.string() : (fs::path(dir) / file).string();
  }
  const std::string ext = name == "jsonl" ? ".jsonl" : "." + name;
  return (fs::path(dir) / (split + ext)).string();
}

TaskData TaskSpec::load(const std::string& split) const {
  TaskData data;
  data.source = path(split);
  const std::vector<std::string> lines = read_lines(data.source);
  auto bad = [&](size_t line_no, const std::string& what) {
    if (!skip_bad_rows)
      fail(data.source, ":", line_no, ": ", what, " (use --skip-bad-rows to skip such rows)");
    ++data.skipped_rows;
  };
  const GlueLayout* glue = find_glue(name);
  const bool test_split = split == "test";

  if (name == "jsonl") {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(lines[i]);
      } catch (const nlohmann::json::exception&) {
        bad(i + 1, "not valid JSON");
        continue;
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        bad(i + 1, "expected an object with a string \"text\"");
        continue;
      }
      Example e;
      e.line = i + 1;
      e.text_a = j["text"].get<std::string>();
      if (j.contains("text_pair") && j["text_pair"].is_string())
        e.text_b = j["text_pair"].get<std::string>();
      if (j.contains("label") && !j["label"].is_null())
        e.label = j["label"].is_string() ? j["label"].get<std::string>() : j["label"].dump();
      data.examples.push_back(std::move(e));
    }
    return data;
  }

  const bool csv = name == "csv";
  auto split_row = [&](const std::string& line, size_t line_no) {
    return csv ? split_csv_line(line, cat(data.source, ":", line_no)) : split_tab(line);
  };
  size_t first = 0, columns = 0;
  int a = 0, b = -1, label = -1;
  if (glue) {
    first = glue->header || (test_split && std::string(glue->name) == "cola")
                ? 1
                : 0;  // CoLA's test has one
    a = test_split ? glue->test_text_a : glue->text_a;
    b = test_split ? glue->test_text_b : glue->text_b;
    label = test_split ? -2 : glue->label;  // -2: no label column
    // Every row has as many columns as the header (or, without one, as the layout reads).
    size_t need = columns_needed(a);
    if (b != -1) need = std::max(need, columns_needed(b));
    if (label != -2) need = std::max(need, columns_needed(label));
    columns = need;
    if (first == 1 && !lines.empty()) {
      columns = split_tab(lines[0]).size();
      if (columns < need)
        fail(data.source, ":1: the header has ", columns, " tab-separated columns; the ",
             glue->name, " layout reads ", need);
    }
  } else {
    if (lines.empty()) fail(data.source, ": empty file (expected a header row)");
    const auto header = split_row(lines[0], 1);
    const Columns c = find_columns(header, data.source + ":1");
    a = c.a;
    b = c.b;
    label = c.label < 0 ? -2 : c.label;
    columns = header.size();
    first = 1;
  }
  for (size_t i = first; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    const auto fields = split_row(lines[i], i + 1);
    if (fields.size() != columns) {
      bad(i + 1, cat("expected ", columns, " columns, got ", fields.size(),
                     csv ? "" : " (fields are separated by tabs)"));
      continue;
    }
    Example e;
    e.line = i + 1;
    e.text_a = fields[static_cast<size_t>(resolve(a, fields.size()))];
    if (b != -1) e.text_b = fields[static_cast<size_t>(resolve(b, fields.size()))];
    if (label != -2) {
      e.label = fields[static_cast<size_t>(resolve(label, fields.size()))];
      if (!unicode::is_valid_utf8(e.label)) {
        bad(i + 1, "the label is not valid UTF-8");
        continue;
      }
    }
    data.examples.push_back(std::move(e));
  }
  return data;
}

int64_t TaskSpec::label_index(const Example& e, const std::string& source) const {
  if (regression) return -1;
  auto it = std::find(labels.begin(), labels.end(), e.label);
  if (it == labels.end()) {
    std::string set;
    for (const auto& l : labels) set += (set.empty() ? "" : ", ") + l;
    fail(source, ":", e.line, ": label '", e.label, "' is not in the label set {", set, "}");
  }
  return it - labels.begin();
}

std::optional<double> label_number(const std::string& label) {
  if (label.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(label.c_str(), &end);
  if (!end || *end != '\0') return std::nullopt;
  return v;
}

}  // namespace slimbert
