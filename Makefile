# Makefile: the one build of llorch. Objects and binaries land in $(BUILD) (default build/);
# `make check` rebuilds the tests under ASan+UBSan in build/asan and runs them, then a short run of
# every libFuzzer target. Sources are found by directory, so a new .c file needs no edit here:
#   common/*.c          -> libcommon.a   (linked into everything)
#   workerd/engine/*.c  -> libengine.a   (the inference engine; tests link it directly)
#   proto/*.c           -> libproto.a    (wire format + client library)
#   orchd/*.c           -> liborchd.a    (all but main.c and orchctl.c; tests link it)
#   workerd/*.c         -> workerd       orchd/main.c -> orchd            orchd/orchctl.c -> orchctl
#   tests/test_*.c      -> tests/test_*  (one binary per module; tests/*.c others are shared helpers)
#   tests/tools/*.c     -> tools (gguf-synth...)   tests/fuzz_*.c -> fuzz/fuzz_* (clang, libFuzzer)

BUILD   ?= build
CC      ?= cc
OPT     ?= -O2
SAN     ?=
PREFIX  ?= /usr/local
FUZZ_SECONDS ?= 30

CPPFLAGS += -I. -D_GNU_SOURCE
CFLAGS   += -std=c11 -Wall -Wextra -Werror -g $(OPT) -pthread -MMD -MP
LDLIBS   += -ljansson -lsodium -lnng -lmsgpackc -lopenblas -lpcre2-8 -lm -pthread
# jemalloc serves the daemons; sanitizer builds keep the sanitizer's allocator.
ifeq ($(SAN),)
DAEMON_LIBS = -ljemalloc
else
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=address,undefined
DAEMON_LIBS =
endif

COMMON_SRC  := $(wildcard common/*.c)
ENGINE_SRC  := $(wildcard workerd/engine/*.c)
PROTO_SRC   := $(wildcard proto/*.c)
WORKERD_SRC := $(wildcard workerd/*.c)
ORCHD_SRC   := $(filter-out orchd/orchctl.c orchd/main.c,$(wildcard orchd/*.c))
ORCHD_MAIN  := $(wildcard orchd/main.c)
ORCHCTL_SRC := $(wildcard orchd/orchctl.c)
TEST_SRC    := $(wildcard tests/test_*.c)
TESTLIB_SRC := $(filter-out tests/test_% tests/fuzz_%,$(wildcard tests/*.c))
TOOL_SRC    := $(wildcard tests/tools/*.c)
FUZZ_SRC    := $(wildcard tests/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBCOMMON := $(BUILD)/libcommon.a
LIBENGINE := $(BUILD)/libengine.a
LIBPROTO  := $(BUILD)/libproto.a
LIBORCHD  := $(BUILD)/liborchd.a
LIBTEST   := $(BUILD)/libtest.a
LIBS      := $(LIBORCHD) $(LIBPROTO) $(LIBENGINE) $(LIBCOMMON)

BINS  := $(if $(WORKERD_SRC),$(BUILD)/workerd) $(if $(ORCHD_MAIN),$(BUILD)/orchd) \
         $(if $(ORCHCTL_SRC),$(BUILD)/orchctl)
TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/%,$(TOOL_SRC))
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
FUZZERS := $(patsubst tests/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
DEPS_OK := $(BUILD)/.deps-ok

.PHONY: all test check fuzz bench install clean run deps
.DELETE_ON_ERROR:
.SECONDARY:

all: $(BINS) $(TOOLS) $(TESTS)

# Says which Debian package is missing, rather than failing inside the compiler.
$(DEPS_OK): scripts/deps.sh
	@scripts/deps.sh --check
	@mkdir -p $(@D) && touch $@

$(BUILD)/obj/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIBCOMMON): $(call obj,$(COMMON_SRC))
$(LIBENGINE): $(call obj,$(ENGINE_SRC))
$(LIBPROTO):  $(call obj,$(PROTO_SRC))
$(LIBORCHD):  $(call obj,$(ORCHD_SRC))
$(LIBTEST):   $(call obj,$(TESTLIB_SRC))
$(BUILD)/%.a:
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/workerd: $(call obj,$(WORKERD_SRC)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(DAEMON_LIBS)
$(BUILD)/orchd: $(call obj,$(ORCHD_MAIN)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(DAEMON_LIBS)
$(BUILD)/orchctl: $(call obj,$(ORCHCTL_SRC)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIBTEST) $(LIBS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/%: $(BUILD)/obj/tests/tools/%.o $(LIBTEST) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Runs every unit test binary and integration script; fails if any fails.
test: all
	@BUILD=$(BUILD) tests/run.sh

# The tests again under ASan+UBSan (any report fails), then a short run of each fuzz target.
check:
	$(MAKE) BUILD=$(BUILD)/asan SAN=1 OPT=-O1 test
	$(MAKE) fuzz
	@for f in $(FUZZERS); do \
		n=$$(basename $$f); mkdir -p $(BUILD)/fuzz-corpus/$$n; \
		echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(BUILD)/fuzz-corpus/$$n \
			tests/fuzz-seeds/$$n 2>$(BUILD)/fuzz-$$n.log || { tail -40 $(BUILD)/fuzz-$$n.log; exit 1; }; \
		grep -E 'stat::number_of_executed_units' $(BUILD)/fuzz-$$n.log; \
	done

# libFuzzer targets: clang with the fuzzer, ASan and UBSan; each links the sources it names.
FUZZ_CFLAGS = -std=c11 -g -O1 -I. -D_GNU_SOURCE -Wall -Wextra -Werror \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
fuzz: $(FUZZERS)
$(BUILD)/fuzz/%: tests/%.c $(COMMON_SRC) $(ENGINE_SRC) $(PROTO_SRC) | $(DEPS_OK)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ $< $(COMMON_SRC) $(ENGINE_SRC) $(PROTO_SRC) $(LDLIBS)

bench: all
	scripts/bench

run:
	scripts/run.sh

deps:
	scripts/deps.sh

install: $(BINS) $(TOOLS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BINS) $(TOOLS) $(DESTDIR)$(PREFIX)/bin

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
