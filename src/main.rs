//! The `bascule` binary: all the work is in `bascule::shell::cli`.

/// Counts allocations so `status --json` can show the heartbeat path allocates nothing.
#[global_allocator]
static ALLOCATOR: bascule::shell::alloc_count::Counting = bascule::shell::alloc_count::Counting;

fn main() {
    std::process::exit(bascule::shell::cli::main());
}
