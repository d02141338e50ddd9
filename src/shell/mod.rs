//! The shell: the only code that touches the world.
//!
//! One single-threaded mio loop (`event_loop`) owns every socket, serial port,
//! the control socket, the signal fd and the timers; it never blocks. It reads
//! `CLOCK_MONOTONIC` once per iteration and feeds the core. Writing the log to a
//! file or syslog happens on a logger thread, so a stalled disk never delays a
//! heartbeat.
//!
//! Modules: `cli` (arguments, exit codes), `config_load` (files, authkeys mode),
//! `event_loop` (the `Daemon`), `link`/`udp`/`serial` (media), `control` (status
//! socket), `log` (catalogue lines and the backend), `state` (boot epoch),
//! `realtime` (mlockall, SCHED_RR), `replication_io` (the replicated disks
//! and the `disk` commands).

pub mod agents;
pub mod alloc_count;
pub mod blockdev;
pub mod cli;
pub mod config_load;
pub mod control;
pub mod disk_worker;
pub mod event_loop;
pub mod link;
pub mod log;
pub mod nbd;
pub mod ping;
pub mod realtime;
pub mod repl_conn;
pub mod replication_io;
pub mod serial;
pub mod state;
pub mod takeover_io;
pub mod udp;
