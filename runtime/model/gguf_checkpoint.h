// GgufCheckpoint: a GGUF file (llama.cpp's format) as a checkpoint with Hugging Face tensor names. The file is
// mapped read-only and its tensors are views into the mapping, named as a safetensors save of the same model names
// them (gguf_names.h: "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"), with GGUF's dtype (F32,
// F16, BF16, Q8_0 .. Q6_K) and row-major shape. Files of general.architecture "llama" store q_proj / k_proj rows
// (and biases) interleaved per head; those tensors are un-permuted back to HF's order into owned host buffers,
// whole rows at a time, so quantized rows move as they are. Tensors the name table does not know (rope_freqs.weight)
// are not exposed.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/model/gguf_file.h"
#include "runtime/model/tensor.h"

namespace zt {

// Whether `path` names a GGUF model: a regular file (after links) rather than a model folder.
bool is_gguf_model_path(const std::string & path);

class GgufCheckpoint {
public:
    // Reads and checks the header (read_gguf_header), maps the file. Throws zt::Error naming the file.
    explicit GgufCheckpoint(const std::string & path);
    ~GgufCheckpoint();
    GgufCheckpoint(const GgufCheckpoint &) = delete;
    GgufCheckpoint & operator=(const GgufCheckpoint &) = delete;

    const GgufFile & file() const { return file_; }
    const std::string & path() const { return file_.path; }
    bool has(const std::string & hf_name) const;
    // View of the tensor under its HF name (un-permuted for llama q/k); throws zt::Error naming it when absent.
    Tensor tensor(const std::string & hf_name) const;
    std::vector<std::string> names() const;   // HF names, sorted
    // What identifies this file without reading tensor data: its name, size, modification time and header bytes
    // (metadata and tensor index). Checkpoint::identity hashes it.
    std::string identity_text() const;

private:
    GgufFile file_;
    const uint8_t * map_ = nullptr;
    size_t size_ = 0;
    std::vector<std::pair<std::string, const GgufTensorInfo *>> index_;   // HF name -> tensor, sorted by name
    bool permute_qk_ = false;                                             // general.architecture "llama"
    mutable std::mutex mu_;
    mutable std::map<std::string, std::vector<uint8_t>> unpermuted_;     // HF name -> q/k rows in HF order

    const GgufTensorInfo & info(const std::string & hf_name) const;
    Tensor view(const GgufTensorInfo & t) const;
    Tensor unpermute(const std::string & hf_name, const GgufTensorInfo & t, int64_t heads) const;
};

}  // namespace zt
