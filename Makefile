# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# ALSA headers for cpal, libopus for calls, libvpx for the avatar's video,
# pkg-config to find them, the tools that build the bundled WebRTC audio
# processing module, a font for picture labels.
DEBIAN_PACKAGES := libasound2-dev libopus-dev libvpx-dev pkg-config autoconf automake libtool libclang-dev g++ fonts-dejavu-core
# The tests encode their FLAC, Ogg/Vorbis, MP3 and AAC files with ffmpeg;
# the browser tests call with headless Chromium, in a network namespace of
# their own (unshare from util-linux, ip from iproute2); the room tests
# start a Janus SFU of their own and give the browser Janus's janus.js;
# the WHIP test publishes into the call server with Debian's whip-client
# (GStreamer; the package brings its plugins).
TEST_PACKAGES := ffmpeg chromium iproute2 util-linux janus libjs-janus-gateway \
	simple-whip-client python3-venv

.PHONY: demo test check deps test-deps whip-server lint deny-deps bench bench-rooms bench-phone fuzz fuzz-deps soak

# Installs what building and running the programs needs.
deps:
	@if ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
		else echo "note: install $(DEBIAN_PACKAGES) (as root) if the build or the picture's labels fail"; fi; \
	fi

# Installs what the tests need besides the programs' own.
test-deps: deps whip-server
	@if ! dpkg -s $(TEST_PACKAGES) >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_PACKAGES) >/dev/null; \
		else echo "error: install $(TEST_PACKAGES) to run the tests"; exit 1; fi; \
	fi
	@$(MAKE) --no-print-directory $(STREAMDOUBLE)

# streamdouble (PyPI), a Twilio Media Streams simulator, for the phone
# test against a Twilio double no one here wrote; in a venv of its own.
STREAMDOUBLE := target/streamdouble/bin/streamdouble
$(STREAMDOUBLE):
	python3 -m venv target/streamdouble
	target/streamdouble/bin/pip install -q --disable-pip-version-check streamdouble==0.3.0

# Debian's whip-client (GStreamer) aborts at start-up: it links
# libsoup2, and GStreamer's ICE pulls in libsoup3 through UPnP port
# mapping. It runs with a libgupnp-igd that maps nothing first on its
# library path (testkit/whip/no-upnp.c).
target/whip-client-env/libgupnp-igd-1.0.so.4: testkit/whip/no-upnp.c
	@mkdir -p $(@D)
	cc -shared -fPIC -O2 -Wall -Wl,-soname,libgupnp-igd-1.0.so.4 -o $@ $<

# Debian's simple-whip-server (a WHIP endpoint into Janus) for the WHIP
# test. Where Debian's node modules cannot go in beside the machine's own
# nodejs (a nodejs from elsewhere conflicts with them), the package is
# unpacked into target/ and its modules come from the npm registry.
WHIP_DIR := target/simple-whip-server
whip-server: target/whip-client-env/libgupnp-igd-1.0.so.4
	@if [ -f /usr/share/simple-whip-server/src/server.js ] || [ -d $(WHIP_DIR)/node_modules/express ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "error: install simple-whip-server to run the tests"; exit 1; fi; \
	apt-get update -qq; \
	if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq simple-whip-server >/dev/null 2>&1; then exit 0; fi; \
	tmp=$$(mktemp -d) && chmod 755 $$tmp && (cd $$tmp && apt-get download simple-whip-server >/dev/null 2>&1) \
		&& dpkg -x $$tmp/simple-whip-server_*.deb $$tmp/root && mkdir -p $(WHIP_DIR) \
		&& cp -r $$tmp/root/usr/share/simple-whip-server/src $(WHIP_DIR)/ && rm -rf $$tmp; \
	command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	cd $(WHIP_DIR) && npm install --no-save --no-audit --no-fund --silent express cors colors debug async websocket body-parser >/dev/null

demo: deps
	$(CARGO) build --release -p sotto-cli --bin sotto
	@mkdir -p out
	./target/release/sotto render examples/barge-in.toml \
		--out out/barge-in.wav --events out/barge-in.jsonl --plot out/barge-in.png
	@echo "wrote out/barge-in.wav, out/barge-in.jsonl, out/barge-in.png"

# cargo-deny checks licences, bans and sources; advisories only where an
# advisory database is already on the machine (nothing is fetched).
deny-deps:
	@command -v cargo-deny >/dev/null 2>&1 || $(CARGO) install cargo-deny --locked --quiet

lint: deny-deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps
	@if $(CARGO) tree -p sotto-rt -e normal --prefix none | sed 's/ .*//' | sort -u | grep -vxE 'sotto-rt|rtrb|atomic_float|crossbeam-utils' ; then \
		echo "sotto-rt has a normal dependency beyond rtrb and atomic_float"; exit 1; fi
	@if $(CARGO) tree -p sotto -e normal --prefix none | sed 's/ .*//' | sort -u | grep -xE 'clap|plotters|tracing-subscriber|axum|jsonwebtoken' ; then \
		echo "the sotto library depends on a program's, server's or signer's crate (above)"; exit 1; fi
	@if $(CARGO) tree -p sotto-cli -e features --prefix none | grep -E 'feature "(fault-injection|test-routes|rt-audit)"' ; then \
		echo "the sotto program a user installs carries test hooks (above)"; exit 1; fi
	@if $(CARGO) tree -p sotto -e normal --prefix none | sed 's/ .*//' | sort -u | grep -xE 'env-libvpx-sys' ; then \
		echo "the sotto library links libvpx without being asked (feature video)"; exit 1; fi
	@if $(CARGO) tree -p sotto-net -e normal --prefix none | sed 's/ .*//' | sort -u | grep -xE 'audiopus|audiopus_sys|env-libvpx-sys|webrtc-audio-processing' ; then \
		echo "sotto-net links a C codec or the echo module (above); they belong in sotto-media"; exit 1; fi
	$(CARGO) deny --log-level error check licenses bans sources
	@echo "crates in more than one version (reported, not refused): $$($(CARGO) tree --workspace -d --depth 0 -e normal,build --prefix none | sort -u | awk '{print $$1}' | uniq -d | tr '\n' ' ')"
	@if [ -d "$${CARGO_HOME:-$$HOME/.cargo}/advisory-dbs" ]; then \
		$(CARGO) deny --log-level error check --disable-fetch advisories; \
	else echo "note: no advisory database here; advisories not checked"; fi

test: test-deps lint
	$(CARGO) test --workspace --release
	$(CARGO) test --benches --release -p sotto-benches
	$(MAKE) demo

# The edit loop: formatting, lints and the unit tests, no end-to-end runs.
check: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace --release --lib --bins

bench:
	$(CARGO) bench -p sotto-benches

# Rooms per core on a Janus of the test's own (BENCHMARKS.md); SOTTO_ROOMS
# picks the room counts (default 10,25,50).
bench-rooms: test-deps
	$(CARGO) test --release -p sotto-cli --test rooms -- --ignored rooms_per_core --nocapture

# Phone calls per core (SOTTO_PHONE_CALLS picks the counts, default
# 50,100), and a hundred interrupts on a phone line.
bench-phone: test-deps
	$(CARGO) test --release -p sotto-cli --test phone -- --ignored phone_calls_per_core --nocapture
	$(CARGO) test --release -p sotto-integration --test phone -- --ignored a_hundred_interrupts --nocapture

# The long runs `make test` leaves out: eighty calls under a CPU hog (the
# render keeps its deadlines, the server stops admitting), an hour of
# calls coming and going (memory must stay flat; SOTTO_CHURN_MINUTES
# shortens it), and an hour of 1000 calls on one render shard (late
# blocks per hour; SOAK_SECONDS shortens it).
SOAK_SECONDS ?= 3600
soak: test-deps
	$(CARGO) test --release -p sotto-integration --test overload -- --ignored --nocapture
	$(CARGO) test --release -p sotto-integration --test churn -- --ignored --nocapture --exact an_hour_of_calls_coming_and_going_keeps_memory_flat
	$(CARGO) run --release -p sotto-cli -- soak --calls 1000 --seconds $(SOAK_SECONDS) --background --interrupt-every 10 --render-threads 1 --report target/soak-1000-calls.json

# Fuzzing needs a nightly toolchain and cargo-fuzz; both are installed here
# when missing. Each target runs FUZZ_SECONDS from its seeds and its corpus;
# a crash stops the run and its input is left in fuzz/artifacts/TARGET/.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= ingest scenario avatar_messages token decode join

fuzz-deps: test-deps
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz: fuzz-deps
	cd fuzz && $(CARGO) +nightly fuzz build -O
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
		(cd fuzz && $(CARGO) +nightly fuzz run -O $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=4096 -print_final_stats=1) \
			|| exit 1; \
	done
