//! Messages between two replicas and their encoding; written next.
