// torch.save's zip format (transformers' pytorch_model.bin) without running pickle code: the zip
// archive through libtorch's own reader, data.pkl through a small pickle machine that knows the
// opcodes torch.save writes and only three callables (OrderedDict, _rebuild_tensor_v2,
// _rebuild_parameter); anything else is an error naming the file. libtorch's unpickler is not
// used: it reads collections.OrderedDict, the type of every state dict, as None.
#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <variant>

#include "slimbert/core/error.h"
#include "slimbert/io/tensor_io.h"

namespace slimbert {
namespace {

struct Value;
using Ptr = std::shared_ptr<Value>;

struct Global {
  std::string module, name;
  std::string full() const { return module + "." + name; }
};
struct Mark {};
struct Tuple {
  std::vector<Ptr> items;
};
struct Dict {
  std::vector<std::pair<Ptr, Ptr>> items;
};
struct Storage {
  at::Tensor data;  // 1-D, the storage's dtype
};

struct Value {
  std::variant<std::monostate, bool, int64_t, double, std::string, Global, Mark, Tuple, Dict,
               Storage, at::Tensor>
      v;
};

Ptr make(decltype(Value::v) v) {
  auto p = std::make_shared<Value>();
  p->v = std::move(v);
  return p;
}

at::ScalarType storage_dtype(const std::string& name, const std::string& path) {
  static const std::map<std::string, at::ScalarType> types = {
      {"FloatStorage", at::kFloat},       {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"DoubleStorage", at::kDouble},
      {"LongStorage", at::kLong},         {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort},       {"CharStorage", at::kChar},
      {"ByteStorage", at::kByte},         {"BoolStorage", at::kBool}};
  auto it = types.find(name);
  if (it == types.end()) fail(path, ": unsupported storage type torch.", name);
  return it->second;
}

class Machine {
 public:
  Machine(caffe2::serialize::PyTorchStreamReader& zip, std::string path)
      : zip_(zip), path_(std::move(path)) {}

  Ptr run(const uint8_t* p, size_t n) {
    p_ = p;
    end_ = p + n;
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80:  // PROTO
          byte();
          break;
        case 0x95:  // FRAME (protocol 4)
          bytes(8);
          break;
        case '.':  // STOP
          if (stack_.size() != 1) bad("STOP with ", stack_.size(), " values on the stack");
          return stack_.back();
        case 'c': {  // GLOBAL module\nname\n
          std::string module = line(), name = line();
          push(make(Global{module, name}));
          break;
        }
        case 'q':  // BINPUT
          memo_[byte()] = top();
          break;
        case 'r':  // LONG_BINPUT
          memo_[u32()] = top();
          break;
        case 0x94:  // MEMOIZE
          memo_[static_cast<uint32_t>(memo_.size())] = top();
          break;
        case 'h':  // BINGET
          push(memo(byte()));
          break;
        case 'j':  // LONG_BINGET
          push(memo(u32()));
          break;
        case '(':  // MARK
          marks_.push_back(stack_.size());
          break;
        case ')':  // EMPTY_TUPLE
          push(make(Tuple{}));
          break;
        case 't':  // TUPLE
          push(make(Tuple{pop_to_mark()}));
          break;
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const size_t k = op - 0x84u;
          if (stack_.size() < k) bad("TUPLE", k, " on a short stack");
          std::vector<Ptr> items(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
          stack_.resize(stack_.size() - k);
          push(make(Tuple{std::move(items)}));
          break;
        }
        case '}':  // EMPTY_DICT
          push(make(Dict{}));
          break;
        case ']':  // EMPTY_LIST: read as a tuple (state dicts hold none)
          push(make(Tuple{}));
          break;
        case 'a': {  // APPEND
          Ptr v = pop();
          as<Tuple>(top(), "APPEND").items.push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<Ptr> items = pop_to_mark();
          auto& list = as<Tuple>(top(), "APPENDS").items;
          list.insert(list.end(), items.begin(), items.end());
          break;
        }
        case 's': {  // SETITEM
          Ptr value = pop(), key = pop();
          as<Dict>(top(), "SETITEM").items.emplace_back(key, value);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Ptr> kv = pop_to_mark();
          if (kv.size() % 2) bad("SETITEMS with an odd number of values");
          auto& dict = as<Dict>(top(), "SETITEMS").items;
          for (size_t i = 0; i < kv.size(); i += 2) dict.emplace_back(kv[i], kv[i + 1]);
          break;
        }
        case 'b':  // BUILD: object state (a state dict's _metadata); not needed
          pop();
          break;
        case 'X': {  // BINUNICODE
          const uint32_t n = u32();
          const uint8_t* s = bytes(n);
          push(make(std::string(reinterpret_cast<const char*>(s), n)));
          break;
        }
        case 0x8c: {  // SHORT_BINUNICODE
          const uint8_t n = byte();
          const uint8_t* s = bytes(n);
          push(make(std::string(reinterpret_cast<const char*>(s), n)));
          break;
        }
        case 'K':  // BININT1
          push(make(int64_t{byte()}));
          break;
        case 'M': {  // BININT2
          const uint8_t* b = bytes(2);
          push(make(int64_t{b[0] | (b[1] << 8)}));
          break;
        }
        case 'J': {  // BININT
          int32_t v;
          std::memcpy(&v, bytes(4), 4);
          push(make(int64_t{v}));
          break;
        }
        case 0x8a: {  // LONG1
          const uint8_t n = byte();
          if (n > 8) bad("integer of ", n, " bytes");
          const uint8_t* b = bytes(n);
          uint64_t v = 0;
          for (uint8_t i = 0; i < n; ++i) v |= uint64_t{b[i]} << (8 * i);
          if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign
          push(make(static_cast<int64_t>(v)));
          break;
        }
        case 'G': {  // BINFLOAT (big-endian)
          const uint8_t* b = bytes(8);
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];
          double d;
          std::memcpy(&d, &bits, 8);
          push(make(d));
          break;
        }
        case 0x88:  // NEWTRUE
          push(make(true));
          break;
        case 0x89:  // NEWFALSE
          push(make(false));
          break;
        case 'N':  // NONE
          push(make(std::monostate{}));
          break;
        case 'Q':  // BINPERSID
          push(storage(pop()));
          break;
        case 'R': {  // REDUCE
          Ptr args = pop(), fn = pop();
          push(reduce(as<Global>(fn, "REDUCE"), as<Tuple>(args, "REDUCE").items));
          break;
        }
        default:
          bad("pickle opcode 0x", std::hex, int{op}, " is not one torch.save writes");
      }
    }
  }

 private:
  template <typename... Args>
  [[noreturn]] void bad(Args&&... args) const {
    fail(path_, ": data.pkl: ", std::forward<Args>(args)...);
  }
  uint8_t byte() { return *bytes(1); }
  const uint8_t* bytes(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) bad("ends in the middle of a value");
    const uint8_t* at = p_;
    p_ += n;
    return at;
  }
  uint32_t u32() {
    uint32_t v;
    std::memcpy(&v, bytes(4), 4);
    return v;
  }
  std::string line() {
    const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p_, '\n', end_ - p_));
    if (!nl || nl - p_ > 256) bad("a GLOBAL name without its end");
    std::string s(reinterpret_cast<const char*>(p_), nl - p_);
    p_ = nl + 1;
    return s;
  }
  void push(Ptr v) { stack_.push_back(std::move(v)); }
  Ptr top() const {
    if (stack_.empty()) bad("empty stack");
    return stack_.back();
  }
  Ptr pop() {
    Ptr v = top();
    stack_.pop_back();
    return v;
  }
  Ptr memo(uint32_t i) const {
    auto it = memo_.find(i);
    if (it == memo_.end()) bad("memo entry ", i, " read before it was written");
    return it->second;
  }
  std::vector<Ptr> pop_to_mark() {
    if (marks_.empty()) bad("no MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    if (m > stack_.size()) bad("MARK past the stack");
    std::vector<Ptr> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  template <typename T>
  T& as(const Ptr& v, const char* where) const {
    T* t = std::get_if<T>(&v->v);
    if (!t) bad(where, ": unexpected value type");
    return *t;
  }
  int64_t integer(const Ptr& v, const char* what) const {
    const int64_t* i = std::get_if<int64_t>(&v->v);
    if (!i) bad(what, " is not an integer");
    return *i;
  }

  // ('storage', torch.<Type>Storage, key, location, numel): data/<key> of the archive, read once
  // and shared by every tensor that views it (tied weights).
  Ptr storage(const Ptr& pid) {
    const auto& t = as<Tuple>(pid, "BINPERSID").items;
    if (t.size() != 5) bad("a storage reference of ", t.size(), " fields, expected 5");
    const std::string key = as<std::string>(t[2], "storage key");
    if (auto it = storages_.find(key); it != storages_.end()) return it->second;
    const at::ScalarType dtype = storage_dtype(as<Global>(t[1], "storage type").name, path_);
    const int64_t numel = integer(t[4], "storage size");
    const std::string record = "data/" + key;
    if (!zip_.hasRecord(record)) bad("storage ", key, " is not in the archive");
    auto [data, size] = zip_.getRecord(record);
    const size_t item = at::elementSize(dtype);
    if (numel < 0 || static_cast<uint64_t>(numel) > size / item ||
        static_cast<size_t>(numel) * item != size)
      bad("storage ", key, " holds ", size, " bytes, not ", numel, " x ", item);
    at::Tensor s = at::empty({numel}, at::TensorOptions().dtype(dtype));
    if (size) std::memcpy(s.data_ptr(), data.get(), size);
    Ptr out = make(Storage{s});
    storages_[key] = out;
    return out;
  }

  std::vector<int64_t> ints(const Ptr& v, const char* what) const {
    std::vector<int64_t> out;
    for (const Ptr& i : as<Tuple>(v, what).items) out.push_back(integer(i, what));
    if (out.size() > 16) bad(what, " with ", out.size(), " dimensions");
    return out;
  }

  Ptr reduce(const Global& fn, const std::vector<Ptr>& args) {
    const std::string name = fn.full();
    if (name == "collections.OrderedDict") return make(Dict{});
    if (name == "torch._utils._rebuild_parameter") {
      if (args.empty()) bad("_rebuild_parameter without arguments");
      return args[0];
    }
    if (name != "torch._utils._rebuild_tensor_v2") bad("calls ", name, ", which is not allowed");
    if (args.size() < 4) bad("_rebuild_tensor_v2 with ", args.size(), " arguments");
    const at::Tensor& s = as<Storage>(args[0], "tensor storage").data;
    const int64_t offset = integer(args[1], "storage offset");
    const std::vector<int64_t> size = ints(args[2], "tensor size"),
                               stride = ints(args[3], "tensor stride");
    if (size.size() != stride.size()) bad("a tensor's size and stride differ in length");
    // The last element the view reaches must lie in the storage.
    int64_t last = offset;
    bool empty = false;
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] < 0 || stride[d] < 0) bad("a negative tensor size or stride");
      if (size[d] == 0) empty = true;
      int64_t reach = 0;
      if (size[d] > 0 && (__builtin_mul_overflow(size[d] - 1, stride[d], &reach) ||
                          __builtin_add_overflow(last, reach, &last)))
        bad("a tensor view reaches past its storage of ", s.numel(), " elements");
    }
    if (offset < 0 || (!empty && last >= s.numel()))
      bad("a tensor view reaches past its storage of ", s.numel(), " elements");
    return make(empty ? at::empty(size, s.options()) : s.as_strided(size, stride, offset));
  }

  caffe2::serialize::PyTorchStreamReader& zip_;
  std::string path_;
  const uint8_t* p_ = nullptr;
  const uint8_t* end_ = nullptr;
  std::vector<Ptr> stack_;
  std::vector<size_t> marks_;
  std::map<uint32_t, Ptr> memo_;
  std::map<std::string, Ptr> storages_;
};

}  // namespace

TensorMap load_torch_save(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  std::string pickle;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    if (!zip->hasRecord("data.pkl")) fail(path, ": no data.pkl in the archive");
    auto [data, size] = zip->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(data.get()), size);
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    if (const size_t nl = why.find('\n'); nl != std::string::npos) why.resize(nl);
    fail(path, ": not a torch.save zip archive (PyTorch 1.6 or later; ", why,
         "); re-save it, e.g. with save_pretrained(safe_serialization=True)");
  }
  Machine machine(*zip, path);
  Ptr root;
  try {
    root = machine.run(reinterpret_cast<const uint8_t*>(pickle.data()), pickle.size());
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    if (const size_t nl = why.find('\n'); nl != std::string::npos) why.resize(nl);
    fail(path, ": cannot be read as a torch.save state dict (", why, ")");
  } catch (const std::bad_alloc&) {
    // The archive's headers bound stored records by the file's size; a compressed one may claim
    // any size.
    fail(path, ": a record claims more memory than can be allocated (a damaged archive)");
  }
  const Dict* dict = std::get_if<Dict>(&root->v);
  if (!dict) fail(path, ": expected a state dict (tensor name -> tensor)");
  TensorMap out;
  for (const auto& [key, value] : dict->items) {
    const std::string* name = std::get_if<std::string>(&key->v);
    if (!name) fail(path, ": expected tensor names as the state dict's keys");
    const at::Tensor* t = std::get_if<at::Tensor>(&value->v);
    if (!t) fail(path, ": '", *name, "' is not a tensor");
    // Own contiguous data: views keep their strides, tied tensors share storage in the file.
    out[*name] = t->is_floating_point() ? t->to(at::kFloat, false, /*copy=*/true).contiguous()
                                        : t->clone().contiguous();
  }
  return out;
}

}  // namespace slimbert
