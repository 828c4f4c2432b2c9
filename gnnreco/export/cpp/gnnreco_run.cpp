// gnnreco_run: call a gnnreco TorchScript export from C++ (libtorch), as a reconstruction framework does.
//
//   gnnreco_run <model.pt> <io_dir> [repeats=1] [threads=0] [warmup=2]
//
// <io_dir>/inputs.txt lists the call's inputs in order, one per line:  <name> <dtype> <ndim> <d0> <d1> ...
// and <io_dir>/<name>.bin holds each input's bytes (C order, native byte order). dtype is one of
// float32, float64, int64, int32, bool. The program loads the module, wraps the buffers as tensors (the
// from_blob call of docs/export.md), runs forward `warmup` untimed times (TorchScript's profiling executor
// optimises the graph during the first calls), then `repeats` timed times, and writes every output tensor the same
// way (<io_dir>/outputs.txt, <io_dir>/out<i>.bin; a tuple output gives one entry per element, in order).
// It prints `calls=<n> median_ms=<t> min_ms=<t>` for the timed calls. Exit code 2 on bad input.
// gnnreco.export.native (Python) writes the inputs, builds this program and reads the outputs back.

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Entry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
};

c10::ScalarType scalar_type(const std::string& dtype) {
  if (dtype == "float32") return torch::kFloat32;
  if (dtype == "float64") return torch::kFloat64;
  if (dtype == "int64") return torch::kInt64;
  if (dtype == "int32") return torch::kInt32;
  if (dtype == "bool") return torch::kBool;
  throw std::runtime_error("unsupported dtype '" + dtype + "' (expected float32, float64, int64, int32 or bool)");
}

std::string dtype_name(c10::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "float32";
    case torch::kFloat64: return "float64";
    case torch::kInt64: return "int64";
    case torch::kInt32: return "int32";
    case torch::kBool: return "bool";
    default: throw std::runtime_error(std::string("output dtype ") + c10::toString(t) + " cannot be written");
  }
}

std::vector<Entry> read_list(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<Entry> out;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    std::istringstream ss(line);
    Entry e;
    int64_t ndim = -1;
    if (!(ss >> e.name >> e.dtype >> ndim) || ndim < 0) {
      throw std::runtime_error(path + ":" + std::to_string(lineno) + ": expected '<name> <dtype> <ndim> <dims...>'");
    }
    for (int64_t i = 0; i < ndim; ++i) {
      int64_t d = -1;
      if (!(ss >> d) || d < 0) {
        throw std::runtime_error(path + ":" + std::to_string(lineno) + ": expected " + std::to_string(ndim) +
                                 " non-negative dimensions");
      }
      e.shape.push_back(d);
    }
    out.push_back(e);
  }
  return out;
}

torch::Tensor read_tensor(const std::string& dir, const Entry& e) {
  const std::string path = dir + "/" + e.name + ".bin";
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + path);
  torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(scalar_type(e.dtype)));
  const auto nbytes = static_cast<std::streamsize>(t.numel() * t.element_size());
  if (in.tellg() != nbytes) {
    throw std::runtime_error(path + ": " + std::to_string(static_cast<long long>(in.tellg())) +
                             " bytes, expected " + std::to_string(static_cast<long long>(nbytes)) +
                             " for " + e.dtype + " of the listed shape");
  }
  in.seekg(0);
  in.read(static_cast<char*>(t.data_ptr()), nbytes);
  return t;
}

void flatten(const c10::IValue& v, std::vector<torch::Tensor>& out) {
  if (v.isTensor()) {
    out.push_back(v.toTensor());
  } else if (v.isTuple()) {
    for (const auto& el : v.toTupleRef().elements()) flatten(el, out);
  } else if (v.isTensorList()) {
    for (const auto& t : v.toTensorVector()) out.push_back(t);
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) flatten(kv.value(), out);
  } else {
    throw std::runtime_error("forward returned a " + v.tagKind() + "; expected tensors or tuples of tensors");
  }
}

void write_outputs(const std::string& dir, const std::vector<torch::Tensor>& outs) {
  std::ofstream list(dir + "/outputs.txt");
  for (size_t i = 0; i < outs.size(); ++i) {
    torch::Tensor t = outs[i].contiguous().cpu();
    const std::string name = "out" + std::to_string(i);
    list << name << ' ' << dtype_name(t.scalar_type()) << ' ' << t.dim();
    for (auto d : t.sizes()) list << ' ' << d;
    list << '\n';
    std::ofstream bin(dir + "/" + name + ".bin", std::ios::binary);
    bin.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: gnnreco_run <model.pt> <io_dir> [repeats=1] [threads=0 (libtorch default)] [warmup=2]\n";
    return 2;
  }
  const std::string model_path = argv[1], dir = argv[2];
  const int repeats = argc > 3 ? std::max(1, std::atoi(argv[3])) : 1;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 0;
  const int warmup = argc > 5 ? std::max(0, std::atoi(argv[5])) : 2;
  try {
    if (threads > 0) at::set_num_threads(threads);
    torch::jit::script::Module model = torch::jit::load(model_path);
    model.eval();
    torch::NoGradGuard no_grad;

    std::vector<torch::jit::IValue> inputs;
    for (const auto& e : read_list(dir + "/inputs.txt")) inputs.emplace_back(read_tensor(dir, e));

    c10::IValue result;
    for (int w = 0; w < warmup; ++w) result = model.forward(inputs);
    std::vector<double> ms;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      result = model.forward(inputs);
      const auto t1 = std::chrono::steady_clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::vector<torch::Tensor> outs;
    flatten(result, outs);
    write_outputs(dir, outs);
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    std::cout << "calls=" << repeats << " median_ms=" << sorted[sorted.size() / 2] << " min_ms=" << sorted.front()
              << std::endl;
  } catch (const std::exception& ex) {
    std::cerr << "gnnreco_run: " << ex.what() << std::endl;
    return 2;
  }
  return 0;
}
