pub use retry_runtime::*;
