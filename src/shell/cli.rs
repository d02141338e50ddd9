//! Command line: `bascule [--config-dir DIR] [--node NAME] [--run-dir DIR] [--state-dir DIR] COMMAND`.

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    todo!("shell helper")
}
