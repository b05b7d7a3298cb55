#!/bin/sh
# Instructions per call of every variant in benches/retry.rs, under callgrind.
#
#   benches/callgrind.sh [variant...]    (default: all of them)
#
# Builds the fns of benches/retry.rs (everything above its "the groups" line,
# unchanged) into a scratch binary in target/callgrind/ whose main calls one
# variant N times in a plain loop, on the current-thread runtime the bench
# uses (`block_on`, as criterion's `to_async` does). Each variant runs under
# valgrind for two values of N; the difference in instructions, divided by the
# difference in N, is the cost of one call (construction, polls and drop of
# its future), without the runtime's start-up. Deterministic, except for the
# peers in the failure group, which sleep on tokio's timer (about 1 % between
# runs). Needs valgrind; the scratch crate reuses Cargo.lock and the
# workspace's target/ directory, with the bench profile's settings.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/target/callgrind"
mkdir -p "$dir/src"

cat > "$dir/Cargo.toml" <<'EOF'
[package]
name = "retry-callgrind"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
steadfast = { path = "../..", default-features = false }
tokio = { version = "1.40", default-features = false, features = ["rt", "time"] }
backon = { version = "1.6", default-features = false, features = ["std", "tokio-sleep"] }
backon-macros = "1"
tokio-retry2 = "0.9"

[profile.release]
debug = false
EOF
cp "$root/Cargo.lock" "$dir/Cargo.lock"

{
    echo '#![allow(dead_code, unused_imports)]'
    sed -e '/^use criterion::/d' -e '/^mod support;/d' -e '/^use support::/d' \
        -e '/^\/\/ --- the groups/,$d' "$root/benches/retry.rs"
    # The payload and its checksum from benches/support/ (the rest of it
    # needs criterion).
    sed -n -e '/^pub(crate) static PAYLOAD/,/^};/p' -e '/^pub(crate) fn checksum/,/^}/p' \
        "$root/benches/support/mod.rs"
    cat <<'EOF'
fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().expect("a variant");
    let calls: u32 = args.next().expect("a number of calls").parse().expect("a number");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let failures = Cell::new(0);
    let failures = &failures;
    // As the bench's `success` group: the same call, over and over.
    macro_rules! success {
        ($f:ident) => {
            rt.block_on(async {
                for _ in 0..calls {
                    let _ = black_box($f(black_box(&PAYLOAD), black_box(failures)).await);
                }
            })
        };
    }
    // As the bench's `three_failures_zero_delay` group: re-arm, then call.
    macro_rules! failing {
        ($f:ident) => {
            rt.block_on(async {
                for _ in 0..calls {
                    failures.set(3);
                    let result = $f(black_box(&PAYLOAD), black_box(failures)).await;
                    assert!(result.is_ok() && failures.get() == 0);
                    let _ = black_box(result);
                }
            })
        };
    }
    match variant.as_str() {
        "success/direct" => success!(work),
        "success/plain_fn" => success!(plain_fn),
        "success/layer_block" => success!(layer_block),
        "success/layer_loop" => success!(layer_loop),
        "success/layer_state" => success!(layer_state),
        "success/steadfast" => success!(steadfast_default),
        "success/backon_attribute" => success!(backon_attribute_default),
        "success/backon_builder" => success!(backon_builder_default),
        "success/tokio_retry2" => success!(tokio_retry2_default),
        "three_failures_zero_delay/direct_4_calls" => rt.block_on(async {
            for _ in 0..calls {
                failures.set(3);
                black_box(loop {
                    if let Ok(value) = work(black_box(&PAYLOAD), black_box(failures)).await {
                        break value;
                    }
                });
            }
        }),
        "three_failures_zero_delay/steadfast" => failing!(steadfast_zero_delay),
        "three_failures_zero_delay/backon_attribute" => failing!(backon_attribute_zero_delay),
        "three_failures_zero_delay/backon_builder" => failing!(backon_builder_zero_delay),
        "three_failures_zero_delay/tokio_retry2" => failing!(tokio_retry2_zero_delay),
        other => panic!("unknown variant {other}"),
    }
}
EOF
} > "$dir/src/main.rs"

cargo build --quiet --release --manifest-path "$dir/Cargo.toml" --target-dir "$root/target"
bin="$root/target/release/retry-callgrind"

instructions() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        awk '/Collected/ { print $4 }'
}

if [ $# -eq 0 ]; then
    set -- success/direct success/plain_fn success/layer_block success/layer_loop \
        success/layer_state success/steadfast success/backon_attribute \
        success/backon_builder success/tokio_retry2 \
        three_failures_zero_delay/direct_4_calls three_failures_zero_delay/steadfast \
        three_failures_zero_delay/backon_attribute three_failures_zero_delay/backon_builder \
        three_failures_zero_delay/tokio_retry2
fi
for variant in "$@"; do
    case $variant in
        # The peers sleep on tokio's timer (about 1 ms a retry): few calls.
        three_failures_zero_delay/backon* | three_failures_zero_delay/tokio*) a=10 b=60 ;;
        three_failures_zero_delay/*) a=100 b=10100 ;;
        *) a=1000 b=101000 ;;
    esac
    first=$(instructions "$variant" "$a")
    second=$(instructions "$variant" "$b")
    echo "$variant $(((second - first) / (b - a)))"
done
