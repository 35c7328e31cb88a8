// QuantBlock: the GGUF block layouts of runtime/model/quant_block.h against the gguf PyPI package's dequantize
// (tests/data/quant, made by examples/make_quant_fixtures.py from random blocks): every weight bit for bit, for
// Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K; sizes, names and the error for a partial block.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/model/quant_block.h"

namespace zt {
namespace {

std::vector<char> read_bytes(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    EXPECT_TRUE(f.good()) << "missing fixture " << path << " (examples/make_quant_fixtures.py makes it)";
    return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

TEST(QuantBlock, DequantizationMatchesTheGgufPackageBitForBit) {
    for (const char * name : {"Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"}) {
        const QuantType t = *quant_type_from_name(name);
        const std::string base = std::string(ZT_TEST_DATA) + "/quant/" + name;
        const std::vector<char> raw = read_bytes(base + ".bin"), want_bytes = read_bytes(base + ".f32");
        const int64_t n = int64_t(want_bytes.size() / 4);
        ASSERT_EQ(quant_row_bytes(t, n), int64_t(raw.size())) << name;
        std::vector<float> got(size_t(n), -1.0f);
        dequantize_row(t, raw.data(), got.data(), n);
        int mismatches = 0;
        for (int64_t i = 0; i < n; ++i) {
            float want;
            std::memcpy(&want, want_bytes.data() + 4 * i, 4);
            if (std::memcmp(&want, &got[size_t(i)], 4) != 0 && mismatches++ < 5)
                ADD_FAILURE() << name << " weight " << i << ": " << got[size_t(i)] << " vs gguf's " << want;
        }
        EXPECT_EQ(mismatches, 0) << name << ": " << mismatches << " of " << n << " weights differ";
    }
}

TEST(QuantBlock, LayoutsAndBitsPerWeight) {
    EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantType::Q8_0), 8.5);
    EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantType::Q4_0), 4.5);
    EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantType::Q4_1), 5.0);
    EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantType::Q4_K), 4.5);
    EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantType::Q5_K), 5.5);
    EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantType::Q6_K), 6.5625);
    EXPECT_FALSE(quant_type_from_name("IQ2_XS").has_value());
    EXPECT_EQ(quant_row_bytes(QuantType::Q4_K, 512), 288);
}

TEST(QuantBlock, ARowThatIsNotWholeBlocksIsAnErrorNamingTheType) {
    try {
        quant_row_bytes(QuantType::Q4_K, 300);
        FAIL() << "no error";
    } catch (const std::exception & e) {
        EXPECT_NE(std::string(e.what()).find("Q4_K weights come in blocks of 256"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace zt
