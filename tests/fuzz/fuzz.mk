# tests/fuzz/fuzz.mk -- libFuzzer targets, run from the repo root by
# `make fuzz` as: make -f tests/fuzz/fuzz.mk FUZZ_SECONDS=60
#
# A target NAME is tests/fuzz/fuzz_NAME.c linked with only the sources in
# NAME_SRCS (and NAME_LIBS), built into build/fuzz/fuzz_NAME, and run for
# FUZZ_SECONDS with its corpus in build/fuzz/corpus/NAME, seeded from
# tests/fuzz/seeds/NAME/ and using tests/fuzz/NAME.dict when present.  A
# crash, leak or sanitizer report fails the run (libFuzzer exits non-zero)
# and leaves the input in build/fuzz/crash-NAME-*.
#
# To add a target: append its name to FUZZ_TARGETS and set NAME_SRCS.

FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_O       := build/fuzz
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror \
	-Wno-unused-parameter -pthread \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer

FUZZ_TARGETS := json config route event

json_SRCS    := common/json.c common/buf.c common/jg.c
json_LIBS    :=
config_SRCS  := common/config.c common/config_jobs.c common/json.c common/buf.c common/jg.c
config_LIBS  := -lcrypto
route_SRCS   := api/route.c common/buf.c common/jg.c
route_LIBS   :=
event_SRCS   := log/reader.c log/event.c log/log.c common/json.c common/buf.c common/jg.c
event_LIBS   := -llmdb

all: $(FUZZ_TARGETS:%=run-%)
build: $(FUZZ_TARGETS:%=$(FUZZ_O)/fuzz_%)

.SECONDEXPANSION:
$(FUZZ_O)/fuzz_%: tests/fuzz/fuzz_%.c $$($$*_SRCS) $$(wildcard common/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $($*_SRCS) $($*_LIBS)

# One run rule per target (pattern rules are not applied to .PHONY names).
define FUZZ_RUN
run-$(1): $(FUZZ_O)/fuzz_$(1)
	@mkdir -p $(FUZZ_O)/corpus/$(1)
	@echo "fuzz: $(1) for $(FUZZ_SECONDS)s"
	$(FUZZ_O)/fuzz_$(1) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_O)/crash-$(1)- \
		$(if $(wildcard tests/fuzz/$(1).dict),-dict=tests/fuzz/$(1).dict) \
		$(FUZZ_O)/corpus/$(1) $(wildcard tests/fuzz/seeds/$(1))
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_RUN,$(t))))

.PHONY: all build $(FUZZ_TARGETS:%=run-%)
