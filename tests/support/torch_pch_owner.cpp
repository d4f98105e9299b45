// Compiles the LibTorch tests' precompiled header once (see tests/CMakeLists.txt).
