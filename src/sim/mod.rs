//! Deterministic simulation of two nodes (membership today).
