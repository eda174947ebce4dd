"""Constants of the Lepton artifact format, shared by the writer (compiler) and reader (runtime).

An artifact is one uncompressed POSIX tar file holding exactly these members:

- ``manifest.json``   compact JSON: format version, ABI, versions, target, signature, and the
                      sha256 and size of every other member;
- ``manifest.sha256`` hex sha256 of the bytes of ``manifest.json``;
- ``plan.json``       ordered kernel calls over a statically planned arena;
- ``weights.bin``     constants as raw little-endian arrays at ``ALIGNMENT``-byte offsets;
- ``kernels.so``      the compiled kernels plus the artifact's own parallel runtime.
"""

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)

# The calling convention of kernels.so: tvm-ffi packed functions over DLPack tensors.
ABI = "tvm-ffi-0.1"
SUPPORTED_ABIS = (ABI,)

# Plan version 2 adds value guards: calls whose int64[3] status output the runtime checks.
# Version 3 adds pins (inputs fixed at build time, compared with a weight at every call) and
# the unsigned 16/32/64-bit dtypes.
PLAN_VERSION = 3
SUPPORTED_PLAN_VERSIONS = (1, 2, 3)
GUARD_CHECKS = ("index", "divisor")

MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"
PLAN = "plan.json"
WEIGHTS = "weights.bin"
KERNELS = "kernels.so"
HASHED_MEMBERS = (PLAN, WEIGHTS, KERNELS)
ALL_MEMBERS = (MANIFEST, MANIFEST_DIGEST, *HASHED_MEMBERS)

# Every buffer handed to a kernel starts at a multiple of this many bytes (TVM assumes it).
ALIGNMENT = 64

# dtypes a plan may use; kept explicit so a tampered plan cannot name an arbitrary numpy type.
DTYPES = (
    "float32", "float64", "float16", "int8", "uint8", "int16", "int32", "int64", "bool",
    "uint16", "uint32", "uint64",
)  # fmt: skip

TENSOR_KINDS = ("input", "output", "arena", "weight", "view")

# Values of ``lepton_npu_set_mode`` in kernels.so: "fast" runs the host emulation, "sim" the
# bit-exact simulator with cycle accounting.
NPU_MODES = {"fast": 0, "sim": 1}
