//! The shell: the only code that touches the world.
//!
//! One single-threaded mio loop (`event_loop`) owns every socket, serial port,
//! the control socket, the signal fd and the timers; it never blocks. It reads
//! `CLOCK_MONOTONIC` once per iteration and feeds the core. Writing the log to a
//! file or syslog happens on a logger thread, so a stalled disk never delays a
//! heartbeat.

pub mod cli;
