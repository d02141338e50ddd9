//! Resource agents: placeholder, filled below.
pub mod runner;
