# jobgate -- one handwritten GNU Makefile.
#   make            build/jobgate
#   make test       unit tests, then integration tests (ends "N passed, N failed")
#   make SAN=1 test the same under ASan+UBSan (objects in build/san/)
#   make run        start on 127.0.0.1:8080 with ./data
#   make bench      benchmarks (docs/performance.md)
#   make fuzz       libFuzzer targets, 60 s each (FUZZ_SECONDS=)

CC      ?= cc
CFLAGS  ?= -O2
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wformat=2 \
	-Wshadow -Wstrict-prototypes -Wno-unused-parameter -g -pthread
LDLIBS  += -lwebsockets -lev -llmdb -lsqlite3 -lcrypto -pthread

O := build
ifeq ($(SAN),1)
O := build/san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
override CFLAGS += $(SANFLAGS)
override LDFLAGS += $(SANFLAGS)
endif
ifeq ($(SAN),thread)
O := build/tsan
override CFLAGS += -fsanitize=thread
override LDFLAGS += -fsanitize=thread
endif

MODULES := common log projector runner api
SRCS    := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
OBJS    := $(SRCS:%.c=$(O)/%.o)
CLI     := $(wildcard cli/*.c)
BIN     := $(O)/jobgate
UNIT    := $(patsubst tests/unit/%.c,$(O)/tests/%,$(wildcard tests/unit/test_*.c))
PYTHON  := /usr/bin/python3
PORT    ?= 8080

all: deps-build $(BIN)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

LIB := $(O)/libjobgate.a
$(LIB): $(OBJS)
	rm -f $@ && ar rcs $@ $^

$(BIN): $(CLI:%.c=$(O)/%.o) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# A unit test links with the objects of its module and the modules below
# it only (common <- log <- projector, runner): a test that needs more has
# found a dependency the architecture does not have.
mod_objs = $(patsubst %.c,$(O)/%.o,$(foreach m,$(1),$(wildcard $(m)/*.c)))
$(O)/tests/test_common:    $(call mod_objs,common)
$(O)/tests/test_config:    $(call mod_objs,common)
$(O)/tests/test_log:       $(call mod_objs,common log)
$(O)/tests/test_projector: $(call mod_objs,common log projector)
$(O)/tests/test_runner:    $(call mod_objs,common log runner)
$(O)/tests/test_%: tests/unit/test_%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The plain test run also fuzzes each parser briefly (libFuzzer has its own
# ASan/UBSan); `make fuzz` is the long run.  Every package a test run needs
# is checked before anything is built: one apt-get line, not three.
FUZZ_SMOKE := $(if $(SAN),,10)
deps-build:
	@scripts/deps build
deps-test:
	@scripts/deps build test $(if $(FUZZ_SMOKE),fuzz)

test: deps-test all $(UNIT)
	@JOBGATE_BIN=$(abspath $(BIN)) UNIT="$(UNIT)" \
		PYTHON=$(PYTHON) FUZZ_SMOKE=$(FUZZ_SMOKE) scripts/run-tests

run: all
	$(BIN) serve --listen 127.0.0.1:$(PORT) --data-dir ./data

bench: all
	@scripts/deps bench
	@JOBGATE_BIN=$(abspath $(BIN)) bench/run

FUZZ_SECONDS ?= 60
fuzz:
	@scripts/deps fuzz
	@$(MAKE) --no-print-directory -f tests/fuzz/fuzz.mk FUZZ_SECONDS=$(FUZZ_SECONDS)

clean:
	rm -rf build

.PHONY: all test run bench fuzz clean deps-build deps-test
-include $(OBJS:.o=.d) $(CLI:%.c=$(O)/%.d)
