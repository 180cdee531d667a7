# vtpm-agent build. Two commands matter to a newcomer: `make demo` and `make test`.
# Everything else is a step they use.

VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
CC           ?= cc
CLANG        ?= clang
BUILD        ?= build
PKGS         := libcurl yaml-0.1 jansson libvirt openssl libmicrohttpd libnghttp2
PKG_CFLAGS   := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS     := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
SWTPM_INC    ?= /usr/include/swtpm

WARN    := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wvla -Wno-unused-parameter \
           -Wno-missing-field-initializers -Wstrict-prototypes -Wmissing-prototypes
HARDEN  := -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fstack-clash-protection \
           -fcf-protection -fPIE
HARDLD  := -pie -Wl,-z,relro,-z,now,-z,noexecstack
BASEFLAGS = -std=gnu17 -D_GNU_SOURCE $(WARN) -Ipkg -Iagent -I$(SWTPM_INC) $(PKG_CFLAGS) \
            -DVTPM_VERSION='"$(VERSION)"' -pthread
# gnu17: C17 plus the POSIX/GNU interfaces a Linux daemon needs (setns, open_tree).

CFLAGS_RELEASE := $(BASEFLAGS) -O2 -g $(HARDEN)
# The test build: sanitizers, and the crash-injection hooks (VTPM_TEST_HOOKS,
# pkg/keys/rotation.h) that the release build must not contain.
CFLAGS_ASAN    := $(BASEFLAGS) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                  -fno-sanitize-recover=undefined -DVTPM_TEST_HOOKS
LDLIBS         := $(PKG_LIBS) -lcap -lm -pthread

LIB_SRCS   := $(sort $(wildcard pkg/*/*.c))
AGENT_SRCS := $(sort $(filter-out agent/main.c,$(wildcard agent/*.c agent/*/*.c)))
UNIT_SRCS  := $(sort $(wildcard test/unit/test-*.c))
FUZZ_SRCS  := $(sort $(wildcard test/fuzz/fuzz-*.c))
TOOL_SRCS  := $(sort $(wildcard test/tools/*.c))

define objs
$(patsubst %.c,$(1)/%.o,$(2))
endef

REL_OBJS  := $(call objs,$(BUILD)/rel,$(LIB_SRCS) $(AGENT_SRCS))
ASAN_OBJS := $(call objs,$(BUILD)/asan,$(LIB_SRCS) $(AGENT_SRCS))

.PHONY: image all agent asan unit-bins fuzz-bins tools asan-tools deps control-plane cluster-up cluster-down test-kubevirt \
        test unit e2e fuzz bench demo clean valgrind

all: $(BUILD)/vtpm-agent

agent: $(BUILD)/vtpm-agent

# V=1 shows the full commands.
Q := $(if $(V),,@)

$(BUILD)/rel/%.o: %.c $(wildcard pkg/*/*.h agent/*.h agent/*/*.h) Makefile
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_RELEASE) -c $< -o $@

$(BUILD)/asan/%.o: %.c $(wildcard pkg/*/*.h agent/*.h agent/*/*.h test/unit/*.h) Makefile
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC-ASAN $<")
	$(Q)$(CC) $(CFLAGS_ASAN) -c $< -o $@

$(BUILD)/libvtpm.a: $(REL_OBJS)
	@rm -f $@; ar rcs $@ $^

$(BUILD)/libvtpm-asan.a: $(ASAN_OBJS)
	@rm -f $@; ar rcs $@ $^

$(BUILD)/vtpm-agent: $(BUILD)/rel/agent/main.o $(BUILD)/libvtpm.a
	$(CC) $(CFLAGS_RELEASE) $(HARDLD) $^ $(LDLIBS) -o $@

# The sanitizer build of the daemon: what the end-to-end suites run.
$(BUILD)/asan/vtpm-agent: $(BUILD)/asan/agent/main.o $(BUILD)/libvtpm-asan.a
	$(CC) $(CFLAGS_ASAN) $^ $(LDLIBS) -o $@

asan: $(BUILD)/asan/vtpm-agent

$(BUILD)/asan/test/unit/%: $(BUILD)/asan/test/unit/%.o $(BUILD)/libvtpm-asan.a
	$(CC) $(CFLAGS_ASAN) $^ $(LDLIBS) -o $@

# Small C helpers the test bed needs (not product code).
$(BUILD)/tools/%: test/tools/%.c $(BUILD)/libvtpm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_RELEASE) $(HARDLD) $< $(BUILD)/libvtpm.a $(LDLIBS) -o $@

$(BUILD)/tools/tpm-guest-bridge: test/tools/tpm-guest-bridge.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_RELEASE) $(HARDLD) $^ $(LDLIBS) -o $@

# The same tools with ASan+UBSan: `make asan-tools`, then run the suites with
# VTPM_TOOLS=build/asan/tools.
$(BUILD)/asan/tools/%: test/tools/%.c $(BUILD)/libvtpm-asan.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ASAN) $^ $(LDLIBS) -o $@

UNIT_BINS := $(patsubst test/unit/%.c,$(BUILD)/asan/test/unit/%,$(UNIT_SRCS))
TOOL_BINS := $(patsubst test/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRCS))
unit-bins: $(UNIT_BINS)
tools: $(TOOL_BINS)
asan-tools: $(patsubst test/tools/%.c,$(BUILD)/asan/tools/%,$(TOOL_SRCS))

# libFuzzer targets (clang). The library is compiled once with coverage
# instrumentation (fuzzer-no-link) into an archive; each target links it.
FUZZ_CFLAGS := -std=gnu17 -D_GNU_SOURCE -Ipkg -Iagent -I$(SWTPM_INC) $(PKG_CFLAGS) -g -O1 \
               -DVTPM_VERSION='"fuzz"' -pthread
FUZZ_OBJS := $(call objs,$(BUILD)/fuzzlib,$(LIB_SRCS) $(AGENT_SRCS))
FUZZ_BINS := $(patsubst test/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
$(BUILD)/fuzzlib/%.o: %.c $(wildcard pkg/*/*.h agent/*.h agent/*/*.h) Makefile
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC-FUZZ $<")
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
$(BUILD)/libvtpm-fuzz.a: $(FUZZ_OBJS)
	@rm -f $@; ar rcs $@ $^
$(BUILD)/fuzz/%: test/fuzz/%.c $(BUILD)/libvtpm-fuzz.a
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined $< $(BUILD)/libvtpm-fuzz.a $(LDLIBS) -o $@
fuzz-bins: $(FUZZ_BINS)

deps:
	@hack/install-deps.sh

control-plane: deps
	@hack/build-control-plane.sh

# The control plane and two real nodes (VTPM_NODES=0: the control plane only).
cluster-up: control-plane
	@VTPM_NODES=$${VTPM_NODES-2} hack/cluster-up.sh

cluster-down:
	@hack/cluster-down.sh

unit: deps
	@$(MAKE) --no-print-directory unit-bins
	prove -v --timer $(UNIT_BINS)

# FUZZ_SECONDS per target; `make test` replays the checked-in corpora only.
FUZZ_SECONDS ?= 60
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-bins
	@hack/run-fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BINS)

e2e: control-plane
	@$(MAKE) --no-print-directory all asan tools
	@hack/run-e2e.sh

test: deps
	@hack/run-tests.sh

# A quicker look at real KubeVirt (on every test bed with nodes, unless
# VTPM_KUBEVIRT=0): the unit suites, the guest, and the suites about the test
# bed and KubeVirt itself (03, 05, 06).
test-kubevirt: deps
	@VTPM_E2E_SUITES="test/e2e/03-real-nodes.t test/e2e/05-kubevirt-install.t test/e2e/06-kubevirt-tpm-anchor.t" hack/run-tests.sh

bench: control-plane
	@$(MAKE) --no-print-directory all tools
	@hack/run-bench.sh

# The agent's image from deploy/Containerfile, with buildah (no Docker engine).
image: deps
	@hack/build-image.sh

# Not control-plane: hack/build-all.sh (in demo.sh) builds it beside the rest,
# with a line of progress at least every 30 s.
demo: deps
	@$(MAKE) --no-print-directory all tools
	@hack/demo.sh

valgrind: all
	@hack/run-e2e.sh --valgrind

clean:
	rm -rf $(BUILD)

.SECONDARY:
