# The two set-up commands: `make demo` and `make test`. Both install what they need.
BUILD ?= build
JOBS ?= $(shell nproc)
DEMO_DIR ?= demo-out
FUZZ_SECONDS ?= 60

.PHONY: all deps build test test-sanitize fuzz demo bench format clean

all: build

deps:
	scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The test suite again, built with ASan + UBSan + _GLIBCXX_ASSERTIONS (build-asan/).
test-sanitize:
	scripts/sanitize.sh

# Every libFuzzer target for FUZZ_SECONDS each (build-fuzz/); non-zero on a finding.
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# The demo builds only the program it runs (the test binary is most of a full build).
demo: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS) --target slimbert_cli
	scripts/demo.sh $(BUILD)/slimbert $(DEMO_DIR)

bench: build
	scripts/install-deps.sh --bench
	bench/inference.sh $(BUILD)/slimbert

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-fuzz $(DEMO_DIR)
