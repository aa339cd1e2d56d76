"""Link options shared by tests built under --config=asan."""

def sanitizer_cxx_runtime():
    """UBSan's C++ runtime for clang links under --config=asan (see //tools/bazel:asan)."""
    return select({
        "//tools/bazel:asan": ["-fsanitize-link-c++-runtime"],
        "//conditions:default": [],
    })
