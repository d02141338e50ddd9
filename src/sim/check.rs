//! Checkers: an independent record of what one simulated node was told and did,
//! compared with what its `Membership` reports.
//!
//! Layer: simulation only. A [`Mirror`] is rebuilt from the outside, from the
//! results of `handle_frame` and the events the node emits, never from its
//! internals; every disagreement is a failure message (the simulation adds the
//! seed and the schedule).

use crate::core::event::Event;
use crate::core::membership::{LinkState, Membership, PeerState, REPLAY_WINDOW};
use crate::core::LinkId;
use crate::time::Instant;
use crate::wire::{FrameError, Repr};

use super::fault::LINKS;

const REASONS: usize = FrameError::ALL.len();

/// What one node (one incarnation) has seen, from the outside.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// The peer state, following `peer_state` events from `Waiting`.
    pub peer: PeerState,
    /// Link states, following `link_state` events from `Down`.
    pub links: [LinkState; LINKS],
    /// Last `(epoch, seq)` accepted per link.
    pub accepted_last: [Option<(u32, u64)>; LINKS],
    /// Newest epoch accepted, and the newest seq accepted in it.
    pub newest: Option<(u32, u64)>,
    /// `Ok` results per link.
    pub rx_ok: [u64; LINKS],
    /// Refusals per link and reason (`Err` results and wire errors fed in).
    pub rejected: [[u64; REASONS]; LINKS],
    /// Sum of `frame_rejected` counts per link and reason.
    pub summarised: [[u64; REASONS]; LINKS],
    /// Every refusal, for the end-of-run summary check.
    pub rejections: Vec<(Instant, usize, FrameError)>,
    /// Last accepted frame on any link.
    pub last_accept: Option<Instant>,
    /// Last arrival of an original (not duplicated, not replayed, not corrupted)
    /// frame from the peer's current incarnation, whatever the node made of it.
    pub last_genuine_arrival: Option<Instant>,
}

impl Default for Mirror {
    fn default() -> Mirror {
        Mirror {
            peer: PeerState::Waiting,
            links: [LinkState::Down; LINKS],
            accepted_last: [None; LINKS],
            newest: None,
            rx_ok: [0; LINKS],
            rejected: [[0; REASONS]; LINKS],
            summarised: [[0; REASONS]; LINKS],
            rejections: Vec::new(),
            last_accept: None,
            last_genuine_arrival: None,
        }
    }
}

impl Mirror {
    /// Records a refusal.
    pub fn reject(&mut self, now: Instant, link: usize, reason: FrameError) {
        self.rejected[link][reason.index()] += 1;
        self.rejections.push((now, link, reason));
    }

    /// Checker (d): an accepted frame is strictly newer on its link, never from
    /// an epoch older than one accepted before, and within the replay window.
    pub fn accept(&mut self, now: Instant, link: usize, repr: &Repr) -> Result<(), String> {
        let id = (repr.header.boot_epoch, repr.header.seq);
        if let Some(last) = self.accepted_last[link] {
            if id <= last {
                return Err(format!(
                    "replay accepted on link {link}: {id:?} after {last:?}"
                ));
            }
        }
        match self.newest {
            Some((epoch, _)) if id.0 < epoch => {
                return Err(format!("older epoch accepted: {id:?} after epoch {epoch}"));
            }
            Some((epoch, seq)) if id.0 == epoch && id.1 + REPLAY_WINDOW < seq => {
                return Err(format!(
                    "frame beyond the replay window accepted: {id:?}, newest seq {seq}"
                ));
            }
            Some((epoch, seq)) if id.0 == epoch => self.newest = Some((epoch, seq.max(id.1))),
            _ => self.newest = Some(id),
        }
        self.accepted_last[link] = Some(id);
        self.rx_ok[link] += 1;
        self.last_accept = Some(now);
        Ok(())
    }

    /// Checker (e): follows one event; the `from` of each transition must be the
    /// state the previous event left, and the edge must be in the table.
    pub fn on_event(&mut self, event: &Event) -> Result<(), String> {
        match *event {
            Event::PeerState { from, to, .. } => {
                if from != self.peer || !from.may_become(to) {
                    return Err(format!(
                        "peer transition {from:?} -> {to:?} while mirror says {:?}",
                        self.peer
                    ));
                }
                self.peer = to;
            }
            Event::LinkState { link, from, to, .. } => {
                let l = link.0 as usize;
                if from != self.links[l] || from == to {
                    return Err(format!(
                        "link {l} transition {from:?} -> {to:?} while mirror says {:?}",
                        self.links[l]
                    ));
                }
                self.links[l] = to;
            }
            Event::FrameRejected {
                link,
                reason,
                count,
                ..
            } => {
                let (l, r) = (link.0 as usize, reason.index());
                self.summarised[l][r] += u64::from(count);
                if self.summarised[l][r] > self.rejected[l][r] {
                    return Err(format!(
                        "frame_rejected sums {} > {} refused",
                        self.summarised[l][r], self.rejected[l][r]
                    ));
                }
            }
            Event::ConfigMismatch { .. } | Event::ConfigMatch => {
                return Err("config digests are equal in the simulation".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// Checkers (d) and (e) against the machine: same states, same counters,
    /// no dropped event, no link Up under a Dead peer.
    pub fn compare(&self, m: &Membership) -> Result<(), String> {
        if m.peer_state() != self.peer {
            return Err(format!(
                "peer_state() {:?} but events say {:?}",
                m.peer_state(),
                self.peer
            ));
        }
        for l in 0..LINKS {
            let id = LinkId(l as u8);
            if m.link_state(id) != self.links[l] {
                return Err(format!(
                    "link {l} state {:?} but events say {:?}",
                    m.link_state(id),
                    self.links[l]
                ));
            }
            let stats = m.link_stats(id);
            if stats.rx_ok != self.rx_ok[l] || stats.rx_rejected != self.rejected[l] {
                return Err(format!(
                    "link {l} counters {stats:?} but results say ok={} rejected={:?}",
                    self.rx_ok[l], self.rejected[l]
                ));
            }
            if self.peer == PeerState::Dead && self.links[l] == LinkState::Up {
                return Err(format!("peer Dead while link {l} is Up"));
            }
        }
        if m.events_dropped() != 0 {
            return Err(format!("{} events dropped", m.events_dropped()));
        }
        Ok(())
    }

    /// At the end of a run: every refusal older than one summary window has been
    /// reported in a `frame_rejected` event (repeats excepted: they are expected).
    pub fn check_summaries(&self, end: Instant, window_ms: u64) -> Result<(), String> {
        let mut recent = [[0u64; REASONS]; LINKS];
        for (t, l, r) in &self.rejections {
            if t.millis() + window_ms >= end.millis() {
                recent[*l][r.index()] += 1;
            }
        }
        for (l, recent) in recent.iter().enumerate() {
            for (r, reason) in FrameError::ALL.iter().enumerate() {
                if *reason == FrameError::Repeat {
                    continue; // counted, never summarised: see FrameError::Repeat
                }
                let missing = self.rejected[l][r] - self.summarised[l][r];
                if missing > recent[r] {
                    return Err(format!(
                        "link {l} reason {reason}: {missing} refusals never summarised (only {} in the last window)",
                        recent[r]
                    ));
                }
            }
        }
        Ok(())
    }
}
