//! The replica state machine (see the brief in mod.rs); written next.
