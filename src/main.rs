//! The `bascule` binary: all the work is in `bascule::shell::cli`.

fn main() {
    std::process::exit(bascule::shell::cli::main());
}
