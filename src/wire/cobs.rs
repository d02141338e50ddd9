//! Consistent Overhead Byte Stuffing: removes every 0x00 so 0x00 can delimit frames.
//!
//! Layer: pure, no allocation.
