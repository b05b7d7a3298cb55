#!/bin/sh
# Instructions per call of the in-process variants of benches/idempotency.rs
# (the bare handler, and `#[idempotent]` over a `MemoryStore`: a fresh key per
# call, or a completed key replayed), under callgrind.
#
#   benches/callgrind_idempotency.sh [variant...]    (bare, memory_fresh, memory_replay,
#                                                    memory_replay_unclonable; default all)
#
# Builds the bench's handler (`body`, `bare`, `over_store`, and `Key`, the
# fresh key in a stack buffer, copied from benches/idempotency.rs unchanged)
# into a scratch binary in target/callgrind-idempotency/ whose main calls one
# variant N times in a plain loop, on a current-thread runtime (`block_on`,
# as criterion's `to_async` does). Each variant runs under valgrind for two
# values of N; the difference in instructions, divided by the difference in
# N, is the cost of one call, without the runtime's start-up (a fresh call's
# share of the map's growth included, as in the bench). Deterministic.
#
# Under valgrind the CPU has no SHA extensions: sha2 hashes the record key in
# software (about 3 500 instructions a call, a few hundred cycles on a CPU with
# SHA-NI, where the bench runs). Needs valgrind; honours CARGO_TARGET_DIR.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
dir="$target/callgrind-idempotency"
mkdir -p "$dir/src"

cat > "$dir/Cargo.toml" <<EOF
[package]
name = "idempotency-callgrind"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
steadfast = { path = "$root", default-features = false }
tokio = { version = "1.40", default-features = false, features = ["rt", "time"] }
serde = { version = "1", features = ["derive"] }

[profile.release]
debug = false
EOF
cp "$root/Cargo.lock" "$dir/Cargo.lock"

{
    echo '#![allow(dead_code, unused_imports)]'
    echo 'use std::{hint::black_box, sync::atomic::{AtomicU64, Ordering}};'
    echo 'use serde::{Deserialize, Serialize};'
    echo 'use steadfast::idempotency::{IdempotencyError, IdempotencyStore, MemoryStore};'
    sed -n -e '/^\/\/ --- the handler/,/^\/\/\/ A handler over a `MemoryStore` with owned/p' \
        "$root/benches/idempotency.rs" | sed '$d'
    sed -n -e '/^\/\/\/ A fresh key per call without allocating/,/^static COUNTER/p' \
        "$root/benches/idempotency.rs" | sed '$d'
    sed -n -e '/^pub(crate) static PAYLOAD/,/^};/p' -e '/^pub(crate) fn checksum/,/^}/p' \
        -e '/^#\[derive(Debug, Clone, Serialize, Deserialize)\]/,/^}/p' -e '/^pub(crate) static BODY_RUNS/p' \
        "$root/benches/support/mod.rs"
    cat <<'EOF'
fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().expect("a variant");
    let calls: u64 = args.next().expect("a number of calls").parse().expect("a number");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let records = 2 * calls as usize + 4096;
    let store = MemoryStore::with_capacity(records).with_scope_capacity(records);
    rt.block_on(async {
        match variant.as_str() {
            "bare" => {
                for n in 0..calls {
                    let key = Key::new(n);
                    let _ = black_box(bare(black_box(key.as_str()), black_box(&PAYLOAD), 500).await);
                }
            }
            "memory_fresh" => {
                for n in 0..calls {
                    let key = Key::new(n);
                    let receipt = over_store(&store, black_box(key.as_str()), &PAYLOAD, 500).await;
                    black_box(receipt.expect("a fresh call runs"));
                }
            }
            "memory_replay" => {
                over_store(&store, "replayed", &PAYLOAD, 500).await.expect("the first call runs");
                for n in 0..calls {
                    black_box(Key::new(n));
                    let receipt = over_store(&store, black_box("replayed"), &PAYLOAD, 500).await;
                    black_box(receipt.expect("a replay"));
                }
            }
            "memory_replay_unclonable" => {
                over_store_unclonable(&store, "replayed", &PAYLOAD, 500).await.expect("the first call runs");
                for n in 0..calls {
                    black_box(Key::new(n));
                    let receipt = over_store_unclonable(&store, black_box("replayed"), &PAYLOAD, 500).await;
                    black_box(receipt.expect("a replay"));
                }
            }
            other => panic!("unknown variant {other}"),
        }
    });
}
EOF
} > "$dir/src/main.rs"

cargo build --quiet --release --manifest-path "$dir/Cargo.toml" --target-dir "$target"
bin="$target/release/idempotency-callgrind"

instructions() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        awk '/Collected/ { print $4 }'
}

if [ $# -eq 0 ]; then
    set -- bare memory_fresh memory_replay memory_replay_unclonable
fi
a=1000 b=51000
for variant in "$@"; do
    first=$(instructions "$variant" "$a")
    second=$(instructions "$variant" "$b")
    echo "$variant $(((second - first) / (b - a)))"
done
