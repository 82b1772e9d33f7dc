"""tools.benchlib: what every benchmark's header says of the machine."""

from tools import benchlib

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
EPYC = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_the_cpu_is_named_with_the_vector_extensions_it_has_and_lacks():
    assert benchlib.cpu_model(XEON) == (
        "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz "
        "(AVX2, AVX-512, AVX-512 BF16, AMX)"
    )
    assert benchlib.cpu_model(EPYC) == (
        "AMD EPYC 7B13 (AVX2; no AVX-512, AVX-512 BF16, AMX)"
    )
    old = EPYC.replace(" avx avx2 fma", "")
    assert benchlib.cpu_model(old) == (
        "AMD EPYC 7B13 (no AVX2, AVX-512, AVX-512 BF16, AMX)"
    )
    assert benchlib.cpu_model("model name\t: Some CPU\n") == "Some CPU"
