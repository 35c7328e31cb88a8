// GgufCheckpoint: a mapped GGUF file whose tensors go by their Hugging Face names (see gguf_checkpoint.h).
#include "runtime/model/gguf_checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/base/error.h"
#include "runtime/model/gguf_names.h"

namespace zt {

namespace {

bool ends_with(const std::string & s, const std::string & suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// {arch}.attention.head_count(_kv) as a positive integer; `fallback` when absent (head_count_kv defaults to
// head_count in llama.cpp).
int64_t head_count(const GgufFile & f, const std::string & key, int64_t fallback) {
    const auto it = f.metadata.find(key);
    if (it == f.metadata.end()) {
        ZT_CHECK(fallback > 0, "{}: GGUF metadata has no \"{}\"; the file is incomplete (re-convert it)", f.path, key);
        return fallback;
    }
    ZT_CHECK(it->is_number_integer() && it->get<int64_t>() > 0, "{}: GGUF metadata \"{}\" = {} must be a positive "
             "integer (per-layer head counts are not supported)", f.path, key, it->dump());
    return it->get<int64_t>();
}

}  // namespace

bool is_gguf_model_path(const std::string & path) {
    struct stat st{};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

GgufCheckpoint::GgufCheckpoint(const std::string & path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ZT_CHECK(fd >= 0, "{}: cannot open GGUF file: {}", path, std::strerror(errno));
    struct stat st{};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        const int err = errno;
        ::close(fd);
        ZT_FAIL("{}: not a readable, non-empty regular file{}", path, err ? std::string(": ") + std::strerror(err) : "");
    }
    size_ = size_t(st.st_size);
    void * m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    ZT_CHECK(m != MAP_FAILED, "{}: cannot mmap {} bytes: {}", path, size_, std::strerror(err));
    map_ = static_cast<const uint8_t *>(m);
    try {
        file_ = parse_gguf_header(map_, size_, path);
        const auto arch = file_.metadata.find("general.architecture");
        ZT_CHECK(arch != file_.metadata.end() && arch->is_string(), "{}: GGUF metadata has no \"general."
                 "architecture\" string; not a model file (re-convert it with llama.cpp's convert_hf_to_gguf)", path);
        permute_qk_ = gguf_arch_permutes_qk(arch->get<std::string>());
        for (const GgufTensorInfo & t : file_.tensors) {
            if (auto hf = hf_name_from_gguf(t.name)) index_.emplace_back(*hf, &t);
        }
        std::sort(index_.begin(), index_.end(), [](const auto & a, const auto & b) { return a.first < b.first; });
        for (size_t i = 1; i < index_.size(); ++i)   // the table is one to one; a file cannot name a tensor twice
            ZT_CHECK(index_[i].first != index_[i - 1].first, "{}: tensors {} and {} both map to {}", path,
                     index_[i - 1].second->name, index_[i].second->name, index_[i].first);
    } catch (...) {
        ::munmap(const_cast<uint8_t *>(map_), size_);
        map_ = nullptr;
        throw;
    }
}

GgufCheckpoint::~GgufCheckpoint() {
    if (map_) ::munmap(const_cast<uint8_t *>(map_), size_);
}

const GgufTensorInfo & GgufCheckpoint::info(const std::string & name) const {
    auto it = std::lower_bound(index_.begin(), index_.end(), name,
                               [](const auto & a, const std::string & n) { return a.first < n; });
    ZT_CHECK(it != index_.end() && it->first == name, "{}: tensor '{}' (GGUF {}) is not in the file", file_.path,
             name, gguf_name_from_hf(name).value_or("name unknown"));
    return *it->second;
}

bool GgufCheckpoint::has(const std::string & name) const {
    auto it = std::lower_bound(index_.begin(), index_.end(), name,
                               [](const auto & a, const std::string & n) { return a.first < n; });
    return it != index_.end() && it->first == name;
}

Tensor GgufCheckpoint::view(const GgufTensorInfo & t) const {
    const auto dt = dtype_from_name(t.type_name);
    ZT_CHECK(dt.has_value(), "{}: tensor {} has type {}, which ztinfer cannot use as a weight", file_.path, t.name,
             t.type_name);
    return Tensor(const_cast<uint8_t *>(map_ + t.offset), *dt, t.shape);
}

Tensor GgufCheckpoint::tensor(const std::string & name) const {
    const GgufTensorInfo & t = info(name);
    if (permute_qk_) {
        const bool q = ends_with(name, "self_attn.q_proj.weight") || ends_with(name, "self_attn.q_proj.bias");
        const bool k = ends_with(name, "self_attn.k_proj.weight") || ends_with(name, "self_attn.k_proj.bias");
        if (q || k) {
            const std::string arch = file_.metadata["general.architecture"].get<std::string>();
            const int64_t heads = head_count(file_, arch + ".attention.head_count", 0);
            return unpermute(name, t, k ? head_count(file_, arch + ".attention.head_count_kv", heads) : heads);
        }
    }
    return view(t);
}

// Row r of the result is row gguf_qk_row_of_hf_row(r, D) of the file's tensor, D = rows / heads. A weight's rows
// are (rows, K) with whole blocks per row for quantized types; a bias is one float per row.
Tensor GgufCheckpoint::unpermute(const std::string & name, const GgufTensorInfo & t, int64_t heads) const {
    const Tensor src = view(t);
    ZT_CHECK(src.dims() == 1 || src.dims() == 2, "{}: tensor {} has shape {}; a q/k projection is 1-D (bias) or 2-D",
             file_.path, t.name, src.shape_str());
    const int64_t rows = src.dim(0);
    ZT_CHECK(src.dims() == 2 || !dtype_is_quantized(src.dtype), "{}: tensor {} is a {} bias; biases must be F32, F16 "
             "or BF16", file_.path, t.name, dtype_name(src.dtype));
    ZT_CHECK(rows % heads == 0 && (rows / heads) % 2 == 0, "{}: tensor {} has {} rows, not {} heads of an even "
             "head size: the file does not match its attention.head_count metadata", file_.path, t.name, rows, heads);
    const int64_t head_dim = rows / heads;
    const size_t row_bytes = src.dims() == 2 ? size_t(dtype_row_bytes(src.dtype, src.dim(1))) : dtype_size(src.dtype);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = unpermuted_.find(name);
    if (it == unpermuted_.end()) {
        std::vector<uint8_t> out(size_t(rows) * row_bytes);
        const uint8_t * in = static_cast<const uint8_t *>(src.data);
        for (int64_t r = 0; r < rows; ++r)
            std::memcpy(out.data() + size_t(r) * row_bytes,
                        in + size_t(gguf_qk_row_of_hf_row(r, head_dim)) * row_bytes, row_bytes);
        it = unpermuted_.emplace(name, std::move(out)).first;
    }
    return Tensor(it->second.data(), src.dtype, src.shape);
}

std::vector<std::string> GgufCheckpoint::names() const {
    std::vector<std::string> out;
    out.reserve(index_.size());
    for (const auto & p : index_) out.push_back(p.first);
    return out;
}

std::string GgufCheckpoint::identity_text() const {
    struct stat st{};
    ZT_CHECK(::stat(file_.path.c_str(), &st) == 0, "{}: cannot stat: {}", file_.path, std::strerror(errno));
    std::string s = "gguf " + std::filesystem::path(file_.path).filename().string() + " " +
                    std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
                    std::to_string(st.st_mtim.tv_nsec) + "\n";
    s.append(reinterpret_cast<const char *>(map_), size_t(file_.data_offset));   // header: metadata + tensor index
    return s;
}

}  // namespace zt
