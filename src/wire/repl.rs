//! The replication stream between two replicas: authentication handshake, then
//! length-prefixed frames carrying the engine's opaque (kind, header, payload).
//!
//! Layer: pure. No sockets, no clock, no randomness: the challenge comes from
//! the caller (the shell reads getrandom). The shell (`shell::repl_conn`) moves
//! the bytes; this module only says what they mean.
//!
//! # Frames (after the handshake)
//!
//! ```text
//!   magic u32 | kind u8 | header_len u16 | payload_len u32 | header | payload     (little endian)
//! ```
//!
//! `header_len <= HEADER_MAX`, `payload_len <= PAYLOAD_MAX`. A bad magic or an
//! oversized length is a [`FrameError`]: a TCP stream cannot resynchronise, so
//! the connection is dropped. [`FrameDecoder`] is incremental (bytes may arrive
//! in any pieces) and copies a payload at most once: [`FrameDecoder::want`]
//! exposes the unfilled part of a `Vec` of exactly the payload's size, so the
//! shell reads large payloads straight from the socket into it. Kind
//! [`KIND_KEEPALIVE`] is the connection's own keepalive and is never handed to
//! the engine; every other kind is opaque here.
//!
//! # Handshake (before any frame), DRBD's cram-hmac with HMAC-SHA256
//!
//! Each message is `HS_MAGIC u32 | type u8 | body_len u16 | body`. Both sides:
//! 1. send Hello {version u16, resource, node name, challenge: 32 bytes} at once;
//! 2. on the peer's Hello: check version, resource and the peer's node name,
//!    then send Response = HMAC(secret, peer_challenge | own node | resource)
//!    (names length-prefixed, so "ab"+"c" and "a"+"bc" differ);
//! 3. on the peer's Response: verify it against HMAC(secret, own_challenge |
//!    peer node | resource) in constant time, send Verdict(ok) (or the reason);
//! 4. when the peer's Verdict is ok as well, the connection is authenticated.
//!
//! Including the responder's own name stops reflection: a challenge bounced back
//! at its sender needs a MAC over the sender's name, which it never produces.
//! Both sides may connect at once, so exactly one connection must survive: the
//! *arbiter* (the node whose name sorts first, decided by the shell) picks the
//! first authenticated connection, sends Select on it and closes the others. The
//! other side uses a connection only once Select arrives on it.
//!
//! Any failure is a [`Reject`] with its [`Cause`]; a local rejection also queues a
//! Verdict carrying the cause, so the peer logs why it was turned away.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};

use super::mac::constant_time_eq;

/// First four bytes of every frame ("BSCF" little endian); anything else means the
/// stream is not ours or is out of step.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"BSCF");
/// Frame prefix length: magic, kind, header_len, payload_len.
pub const PREFIX_LEN: usize = 4 + 1 + 2 + 4;
/// Largest frame header: the engine's fixed message headers are far smaller.
pub const HEADER_MAX: usize = 256;
/// Largest payload: one 1 MiB write plus room for a bitmap page or digest list.
pub const PAYLOAD_MAX: usize = (1 << 20) + 4096;
/// The connection's own keepalive kind, consumed by the shell, never delivered.
/// The engine's kinds start at 1.
pub const KIND_KEEPALIVE: u8 = 0;

/// Version of the handshake and framing; a mismatch is rejected (`Cause::Version`).
pub const PROTOCOL_VERSION: u16 = 1;
/// First four bytes of every handshake message ("BSCH").
pub const HS_MAGIC: u32 = u32::from_le_bytes(*b"BSCH");
/// Challenge length: 256 bits, as DRBD's CHALLENGE_LEN is 64 bytes of which HMAC
/// needs no more than its own output size.
pub const CHALLENGE_LEN: usize = 32;
/// HMAC-SHA256 output, sent untruncated.
pub const RESPONSE_LEN: usize = 32;
/// Longest resource or node name carried in a Hello (DRBD limits names similarly).
pub const NAME_MAX: usize = 64;
/// Handshake message prefix: magic, type, body_len.
pub const HS_PREFIX_LEN: usize = 4 + 1 + 2;
/// Longest handshake body (a Hello with both names at their maximum).
pub const HS_BODY_MAX: usize = 2 + 1 + NAME_MAX + 1 + NAME_MAX + CHALLENGE_LEN;
/// Output buffer of one handshake: every message it can ever queue fits at once.
pub const HS_OUT_MAX: usize = 4 * HS_PREFIX_LEN + HS_BODY_MAX + RESPONSE_LEN + 2;

const HS_HELLO: u8 = 1;
const HS_RESPONSE: u8 = 2;
const HS_VERDICT: u8 = 3;
const HS_SELECT: u8 = 4;

/// A stream that cannot be decoded further; the connection is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The first four bytes of a frame were not [`FRAME_MAGIC`].
    Magic(u32),
    /// `header_len` above [`HEADER_MAX`].
    HeaderLong(u16),
    /// `payload_len` above [`PAYLOAD_MAX`].
    PayloadLong(u32),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Magic(m) => write!(f, "bad_magic_{m:08x}"),
            FrameError::HeaderLong(n) => write!(f, "header_long_{n}"),
            FrameError::PayloadLong(n) => write!(f, "payload_long_{n}"),
        }
    }
}

/// The prefix of a frame with this kind and these lengths. Our own frames never
/// exceed the limits, so a violation is a programmer error and panics.
pub fn emit_prefix(kind: u8, header_len: usize, payload_len: usize) -> [u8; PREFIX_LEN] {
    assert!(header_len <= HEADER_MAX, "frame header {header_len} bytes");
    assert!(
        payload_len <= PAYLOAD_MAX,
        "frame payload {payload_len} bytes"
    );
    let mut p = [0u8; PREFIX_LEN];
    p[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    p[4] = kind;
    p[5..7].copy_from_slice(&(header_len as u16).to_le_bytes());
    p[7..11].copy_from_slice(&(payload_len as u32).to_le_bytes());
    p
}

/// One decoded frame. The payload is empty when the frame had none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The engine's message kind (opaque here).
    pub kind: u8,
    /// The message's fixed header.
    pub header: heapless::Vec<u8, HEADER_MAX>,
    /// The bytes after the header, in the `Vec` they were read into.
    pub payload: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecState {
    Prefix,
    Header,
    Payload,
    Failed(FrameError),
}

/// Incremental frame decoder over a byte stream.
///
/// Two ways in: [`feed`](Self::feed) copies from a buffer the caller already
/// filled; [`want`](Self::want) + [`advance`](Self::advance) let the caller read
/// straight into the decoder (the payload's own `Vec`), so a payload is copied
/// once, by the kernel. Once an error is returned, every later call returns it.
pub struct FrameDecoder {
    state: DecState,
    prefix: [u8; PREFIX_LEN],
    header: [u8; HEADER_MAX],
    /// Bytes filled in the current part (prefix, header or payload).
    filled: usize,
    kind: u8,
    header_len: usize,
    payload: Vec<u8>,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder expecting a frame prefix.
    pub fn new() -> FrameDecoder {
        FrameDecoder {
            state: DecState::Prefix,
            prefix: [0; PREFIX_LEN],
            header: [0; HEADER_MAX],
            filled: 0,
            kind: 0,
            header_len: 0,
            payload: Vec::new(),
        }
    }

    /// Payload bytes still to come in the current frame (0 outside a payload):
    /// the shell reads directly into [`want`](Self::want) when this is large.
    pub fn payload_remaining(&self) -> usize {
        match self.state {
            DecState::Payload => self.payload.len() - self.filled,
            _ => 0,
        }
    }

    /// The buffer the next stream bytes belong in (never empty unless failed).
    pub fn want(&mut self) -> &mut [u8] {
        match self.state {
            DecState::Prefix => &mut self.prefix[self.filled..],
            DecState::Header => &mut self.header[self.filled..self.header_len],
            DecState::Payload => &mut self.payload[self.filled..],
            DecState::Failed(_) => &mut [],
        }
    }

    /// `n` bytes were written at the start of [`want`](Self::want). Returns the
    /// frame if it is now complete.
    pub fn advance(&mut self, n: usize) -> Result<Option<Frame>, FrameError> {
        if let DecState::Failed(e) = self.state {
            return Err(e);
        }
        let room = self.want().len();
        assert!(n <= room, "advance {n} beyond the {room} bytes wanted");
        self.filled += n;
        if n < room {
            return Ok(None);
        }
        match self.state {
            DecState::Prefix => self.on_prefix(),
            DecState::Header => Ok(self.on_header()),
            DecState::Payload => Ok(Some(self.finish())),
            DecState::Failed(e) => Err(e),
        }
    }

    /// Copies as much of `input` as belongs to the current frame. Returns the
    /// bytes consumed and the frame if one completed; the caller loops on the
    /// rest (`consumed` is positive whenever `input` is not empty).
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Frame>), FrameError> {
        let mut consumed = 0;
        // Bound: each pass consumes at least one byte or completes a frame.
        while consumed < input.len() {
            let want = self.want();
            let n = want.len().min(input.len() - consumed);
            want[..n].copy_from_slice(&input[consumed..consumed + n]);
            consumed += n;
            if let Some(frame) = self.advance(n)? {
                return Ok((consumed, Some(frame)));
            }
        }
        Ok((consumed, None))
    }

    fn on_prefix(&mut self) -> Result<Option<Frame>, FrameError> {
        let p = &self.prefix;
        let magic = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        let header_len = u16::from_le_bytes([p[5], p[6]]);
        let payload_len = u32::from_le_bytes([p[7], p[8], p[9], p[10]]);
        let error = if magic != FRAME_MAGIC {
            Some(FrameError::Magic(magic))
        } else if header_len as usize > HEADER_MAX {
            Some(FrameError::HeaderLong(header_len))
        } else if payload_len as usize > PAYLOAD_MAX {
            Some(FrameError::PayloadLong(payload_len))
        } else {
            None
        };
        if let Some(e) = error {
            self.state = DecState::Failed(e);
            return Err(e);
        }
        self.kind = p[4];
        self.header_len = header_len as usize;
        // The payload's final home, sized once; `want` exposes its unfilled tail.
        self.payload = vec![0; payload_len as usize];
        self.filled = 0;
        self.state = DecState::Header;
        Ok(self.on_header_maybe_empty())
    }

    /// Skips parts of length zero right after the prefix.
    fn on_header_maybe_empty(&mut self) -> Option<Frame> {
        if self.header_len == 0 {
            self.on_header()
        } else {
            None
        }
    }

    fn on_header(&mut self) -> Option<Frame> {
        self.filled = 0;
        self.state = DecState::Payload;
        if self.payload.is_empty() {
            Some(self.finish())
        } else {
            None
        }
    }

    fn finish(&mut self) -> Frame {
        let header = heapless::Vec::from_slice(&self.header[..self.header_len])
            .expect("header_len was checked against HEADER_MAX");
        let frame = Frame {
            kind: self.kind,
            header,
            payload: std::mem::take(&mut self.payload),
        };
        self.state = DecState::Prefix;
        self.filled = 0;
        self.header_len = 0;
        frame
    }
}

// ==== Handshake ====

/// Why a handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Not our protocol: bad magic, unknown type, bad lengths, or a message out of order.
    Malformed,
    /// The peer speaks another protocol version.
    Version,
    /// The peer serves another resource.
    Resource,
    /// The peer is not the node the configuration names.
    PeerName,
    /// The peer's response did not verify: a different shared secret.
    Auth,
    /// The handshake did not finish in time (decided by the shell).
    Timeout,
    /// A verdict code this version does not know.
    Unknown,
}

impl Cause {
    /// Every cause, for tests and the catalogue.
    pub const ALL: [Cause; 7] = [
        Cause::Malformed,
        Cause::Version,
        Cause::Resource,
        Cause::PeerName,
        Cause::Auth,
        Cause::Timeout,
        Cause::Unknown,
    ];

    fn code(self) -> u8 {
        match self {
            Cause::Malformed => 1,
            Cause::Version => 2,
            Cause::Resource => 3,
            Cause::PeerName => 4,
            Cause::Auth => 5,
            Cause::Timeout => 6,
            Cause::Unknown => 255,
        }
    }

    fn from_code(code: u8) -> Cause {
        Cause::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .unwrap_or(Cause::Unknown)
    }

    /// The catalogue word.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Malformed => "malformed",
            Cause::Version => "version",
            Cause::Resource => "resource",
            Cause::PeerName => "peer_name",
            Cause::Auth => "auth",
            Cause::Timeout => "timeout",
            Cause::Unknown => "unknown",
        }
    }
}

/// A failed handshake: the cause, and whether the peer (not we) found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    /// What was wrong.
    pub cause: Cause,
    /// The peer rejected us (its Verdict said so) rather than we it.
    pub by_peer: bool,
}

impl core::fmt::Display for Reject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let side = if self.by_peer { "peer_" } else { "" };
        write!(f, "{side}{}", self.cause.as_str())
    }
}

/// Who we are and whom we accept, shared by every handshake of one resource.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The shared secret (`net { shared-secret }`, or the authkeys key).
    pub secret: Vec<u8>,
    /// The resource name, which both sides must agree on.
    pub resource: String,
    /// This node's name.
    pub node: String,
    /// The only peer name accepted.
    pub peer: String,
    /// This node picks the surviving connection (see the module doc).
    pub arbiter: bool,
}

impl Identity {
    /// Checks what the handshake relies on: names that fit a Hello, and two
    /// distinct names (otherwise a reflected challenge would verify).
    pub fn check(&self) -> Result<(), &'static str> {
        if self.resource.len() > NAME_MAX || self.node.len() > NAME_MAX {
            return Err("resource or node name longer than 64 bytes");
        }
        if self.peer.len() > NAME_MAX {
            return Err("peer name longer than 64 bytes");
        }
        if self.node == self.peer {
            return Err("node and peer have the same name");
        }
        Ok(())
    }
}

/// Where a handshake stands after some input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HsStatus {
    /// More messages to come.
    Pending,
    /// Both sides verified each other. On the arbiter: call
    /// [`Handshake::select`] to use this connection, or close it. On the other
    /// side: wait for the arbiter's Select.
    Authenticated,
    /// (Not the arbiter.) The arbiter chose this connection: it carries frames
    /// from the next byte on.
    Selected,
}

/// One connection's handshake: feed it the peer's bytes, send what it queues.
pub struct Handshake {
    challenge: [u8; CHALLENGE_LEN],
    peer_challenge: Option<[u8; CHALLENGE_LEN]>,
    verified: bool,
    peer_ok: bool,
    selected: bool,
    failed: Option<Reject>,
    rx: [u8; HS_PREFIX_LEN + HS_BODY_MAX],
    rx_filled: usize,
    out: heapless::Vec<u8, HS_OUT_MAX>,
}

impl Handshake {
    /// Starts a handshake with our fresh random `challenge`; our Hello is queued.
    /// Panics if `id` fails [`Identity::check`] (the config loader checks it).
    pub fn new(id: &Identity, challenge: [u8; CHALLENGE_LEN]) -> Handshake {
        id.check().expect("replication identity");
        let mut hs = Handshake {
            challenge,
            peer_challenge: None,
            verified: false,
            peer_ok: false,
            selected: false,
            failed: None,
            rx: [0; HS_PREFIX_LEN + HS_BODY_MAX],
            rx_filled: 0,
            out: heapless::Vec::new(),
        };
        let mut body: heapless::Vec<u8, HS_BODY_MAX> = heapless::Vec::new();
        let ok = body
            .extend_from_slice(&PROTOCOL_VERSION.to_le_bytes())
            .is_ok()
            && push_name(&mut body, &id.resource)
            && push_name(&mut body, &id.node)
            && body.extend_from_slice(&challenge).is_ok();
        assert!(ok, "hello fits HS_BODY_MAX");
        hs.queue(HS_HELLO, &body);
        hs
    }

    /// Bytes to send now (the caller sends a prefix, then calls
    /// [`sent`](Self::sent)).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// The first `n` bytes of [`output`](Self::output) were sent.
    pub fn sent(&mut self, n: usize) {
        let len = self.out.len();
        assert!(n <= len, "sent {n} of {len} queued handshake bytes");
        self.out.copy_within(n.., 0);
        self.out.truncate(len - n);
    }

    /// Arbiter only, once [`HsStatus::Authenticated`]: tell the peer this
    /// connection is the one; frames may follow right after.
    pub fn select(&mut self) {
        assert!(
            self.verified && self.peer_ok,
            "select before authentication"
        );
        self.queue(HS_SELECT, &[]);
        self.selected = true;
    }

    /// Consumes the peer's bytes up to the end of the handshake. Returns the
    /// bytes consumed (the rest belongs to the frame stream) and the status.
    pub fn feed(&mut self, id: &Identity, input: &[u8]) -> Result<(usize, HsStatus), Reject> {
        if let Some(r) = self.failed {
            return Err(r);
        }
        let mut consumed = 0;
        while consumed < input.len() && !self.complete(id) {
            consumed += self.fill(&input[consumed..]);
            if let Some(msg_type) = self.message_ready()? {
                let end = self.rx_filled;
                self.rx_filled = 0;
                let mut body = [0u8; HS_BODY_MAX];
                body[..end - HS_PREFIX_LEN].copy_from_slice(&self.rx[HS_PREFIX_LEN..end]);
                self.on_message(id, msg_type, &body[..end - HS_PREFIX_LEN])
                    .inspect_err(|r| self.fail(*r))?;
            }
        }
        Ok((consumed, self.status(id)))
    }

    /// Records a local rejection (the shell's timeout included) and queues a
    /// Verdict with its cause, so the peer knows why.
    pub fn fail(&mut self, reject: Reject) {
        if self.failed.is_none() && !reject.by_peer {
            self.queue(HS_VERDICT, &[reject.cause.code()]);
        }
        self.failed = Some(reject);
    }

    fn status(&self, id: &Identity) -> HsStatus {
        if self.complete(id) && !id.arbiter {
            HsStatus::Selected
        } else if self.verified && self.peer_ok {
            HsStatus::Authenticated
        } else {
            HsStatus::Pending
        }
    }

    /// No further handshake bytes are expected from the peer.
    fn complete(&self, id: &Identity) -> bool {
        if id.arbiter {
            self.verified && self.peer_ok
        } else {
            self.selected
        }
    }

    /// Copies input into `rx` up to the end of the current message.
    fn fill(&mut self, input: &[u8]) -> usize {
        let target = if self.rx_filled < HS_PREFIX_LEN {
            HS_PREFIX_LEN
        } else {
            HS_PREFIX_LEN + u16::from_le_bytes([self.rx[5], self.rx[6]]) as usize
        };
        let n = (target - self.rx_filled).min(input.len());
        self.rx[self.rx_filled..self.rx_filled + n].copy_from_slice(&input[..n]);
        self.rx_filled += n;
        n
    }

    /// The message type once a whole message is in `rx`.
    fn message_ready(&mut self) -> Result<Option<u8>, Reject> {
        if self.rx_filled < HS_PREFIX_LEN {
            return Ok(None);
        }
        let rx = &self.rx;
        let magic = u32::from_le_bytes([rx[0], rx[1], rx[2], rx[3]]);
        let body_len = u16::from_le_bytes([rx[5], rx[6]]) as usize;
        if magic != HS_MAGIC || body_len > HS_BODY_MAX {
            let r = local(Cause::Malformed);
            self.fail(r);
            return Err(r);
        }
        Ok((self.rx_filled == HS_PREFIX_LEN + body_len).then_some(rx[4]))
    }

    fn on_message(&mut self, id: &Identity, msg_type: u8, body: &[u8]) -> Result<(), Reject> {
        match msg_type {
            // The peer introduces itself: answer its challenge.
            HS_HELLO if self.peer_challenge.is_none() => self.on_hello(id, body),
            // The peer's answer to our challenge.
            HS_RESPONSE if self.peer_challenge.is_some() && !self.verified => {
                self.on_response(id, body)
            }
            // The peer's opinion of our answer; the ok comes after its Hello.
            HS_VERDICT if body.len() == 1 && !self.peer_ok => match body[0] {
                0 if self.peer_challenge.is_some() => {
                    self.peer_ok = true;
                    Ok(())
                }
                0 => Err(local(Cause::Malformed)),
                code => Err(Reject {
                    cause: Cause::from_code(code),
                    by_peer: true,
                }),
            },
            // The arbiter chose this connection, after mutual authentication.
            HS_SELECT if !id.arbiter && body.is_empty() && self.verified && self.peer_ok => {
                self.selected = true;
                Ok(())
            }
            // Anything else is out of order or unknown.
            _ => Err(local(Cause::Malformed)),
        }
    }

    fn on_hello(&mut self, id: &Identity, body: &[u8]) -> Result<(), Reject> {
        let hello = parse_hello(body).ok_or(local(Cause::Malformed))?;
        if hello.version != PROTOCOL_VERSION {
            return Err(local(Cause::Version));
        }
        if hello.resource != id.resource.as_bytes() {
            return Err(local(Cause::Resource));
        }
        if hello.node != id.peer.as_bytes() {
            return Err(local(Cause::PeerName));
        }
        self.peer_challenge = Some(hello.challenge);
        let answer = response(&id.secret, &hello.challenge, &id.node, &id.resource);
        self.queue(HS_RESPONSE, &answer);
        Ok(())
    }

    fn on_response(&mut self, id: &Identity, body: &[u8]) -> Result<(), Reject> {
        let expected = response(&id.secret, &self.challenge, &id.peer, &id.resource);
        if !constant_time_eq(&expected, body) {
            return Err(local(Cause::Auth));
        }
        self.verified = true;
        self.queue(HS_VERDICT, &[0]);
        Ok(())
    }

    fn queue(&mut self, msg_type: u8, body: &[u8]) {
        let ok = self.out.extend_from_slice(&HS_MAGIC.to_le_bytes()).is_ok()
            && self.out.push(msg_type).is_ok()
            && self
                .out
                .extend_from_slice(&(body.len() as u16).to_le_bytes())
                .is_ok()
            && self.out.extend_from_slice(body).is_ok();
        // Each message is queued at most once per handshake: HS_OUT_MAX holds all.
        assert!(ok, "handshake output fits HS_OUT_MAX");
    }
}

fn local(cause: Cause) -> Reject {
    Reject {
        cause,
        by_peer: false,
    }
}

fn push_name(body: &mut heapless::Vec<u8, HS_BODY_MAX>, name: &str) -> bool {
    name.len() <= NAME_MAX
        && body.push(name.len() as u8).is_ok()
        && body.extend_from_slice(name.as_bytes()).is_ok()
}

struct Hello<'a> {
    version: u16,
    resource: &'a [u8],
    node: &'a [u8],
    challenge: [u8; CHALLENGE_LEN],
}

/// Parses a Hello body; `None` if any length is off.
fn parse_hello(body: &[u8]) -> Option<Hello<'_>> {
    let version = u16::from_le_bytes([*body.first()?, *body.get(1)?]);
    let (resource, rest) = take_name(&body[2..])?;
    let (node, rest) = take_name(rest)?;
    let challenge: [u8; CHALLENGE_LEN] = rest.try_into().ok()?;
    Some(Hello {
        version,
        resource,
        node,
        challenge,
    })
}

fn take_name(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = *input.first()? as usize;
    if len > NAME_MAX || input.len() < 1 + len {
        return None;
    }
    Some((&input[1..1 + len], &input[1 + len..]))
}

/// HMAC-SHA256(secret, challenge | len | name | len | resource).
fn response(secret: &[u8], challenge: &[u8], name: &str, resource: &str) -> [u8; RESPONSE_LEN] {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC accepts keys of any length");
    mac.update(challenge);
    mac.update(&[name.len() as u8]);
    mac.update(name.as_bytes());
    mac.update(&[resource.len() as u8]);
    mac.update(resource.as_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; RESPONSE_LEN];
    out.copy_from_slice(&full[..RESPONSE_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(kind: u8, header: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut v = emit_prefix(kind, header.len(), payload.len()).to_vec();
        v.extend_from_slice(header);
        v.extend_from_slice(payload);
        v
    }

    /// Three frames: header and payload, header only, neither.
    fn sample_stream() -> (Vec<u8>, Vec<Frame>) {
        let specs: [(u8, &[u8], &[u8]); 3] = [
            (7, b"hdr", b"payload bytes"),
            (9, b"only a header", b""),
            (1, b"", b""),
        ];
        let mut bytes = Vec::new();
        let mut frames = Vec::new();
        for (kind, header, payload) in specs {
            bytes.extend(frame_bytes(kind, header, payload));
            frames.push(Frame {
                kind,
                header: heapless::Vec::from_slice(header).unwrap(),
                payload: payload.to_vec(),
            });
        }
        (bytes, frames)
    }

    #[track_caller]
    fn feed_all(dec: &mut FrameDecoder, mut input: &[u8], out: &mut Vec<Frame>) {
        while !input.is_empty() {
            let (n, frame) = dec.feed(input).expect("valid stream");
            assert!(n > 0, "feed made no progress");
            input = &input[n..];
            out.extend(frame);
        }
    }

    // ==== Tests for the frame decoder ====

    #[test]
    fn decoder_split_at_every_boundary_yields_same_frames() {
        let (bytes, want) = sample_stream();
        for cut in 0..=bytes.len() {
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            feed_all(&mut dec, &bytes[..cut], &mut got);
            feed_all(&mut dec, &bytes[cut..], &mut got);
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn decoder_byte_by_byte_and_two_cuts_yield_same_frames() {
        let (bytes, want) = sample_stream();
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            feed_all(&mut dec, std::slice::from_ref(b), &mut got);
        }
        assert_eq!(got, want);
        for a in 0..bytes.len() {
            for b in a..=bytes.len() {
                let mut dec = FrameDecoder::new();
                let mut got = Vec::new();
                for part in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    feed_all(&mut dec, part, &mut got);
                }
                assert_eq!(got, want, "cuts at {a} and {b}");
            }
        }
    }

    #[test]
    fn decoder_want_advance_reads_payload_into_its_own_vec() {
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let bytes = frame_bytes(3, b"h", &payload);
        let mut dec = FrameDecoder::new();
        let (n, frame) = dec.feed(&bytes[..PREFIX_LEN + 1]).unwrap();
        assert_eq!((n, frame), (PREFIX_LEN + 1, None));
        assert_eq!(dec.payload_remaining(), 5000);
        // The caller "reads" straight into the payload, in odd pieces.
        let mut pos = PREFIX_LEN + 1;
        let mut frame = None;
        while frame.is_none() {
            let want = dec.want();
            let n = want.len().min(777);
            want[..n].copy_from_slice(&bytes[pos..pos + n]);
            pos += n;
            frame = dec.advance(n).unwrap();
        }
        let frame = frame.unwrap();
        assert_eq!(frame.payload, payload);
        assert_eq!(&frame.header[..], b"h");
        assert_eq!(dec.payload_remaining(), 0);
    }

    #[test]
    fn decoder_accepts_largest_lengths() {
        let payload = vec![0xa5; PAYLOAD_MAX];
        let header = [0x5a; HEADER_MAX];
        let bytes = frame_bytes(200, &header, &payload);
        let mut got = Vec::new();
        feed_all(&mut FrameDecoder::new(), &bytes, &mut got);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload.len(), PAYLOAD_MAX);
        assert_eq!(&got[0].header[..], &header[..]);
    }

    #[test]
    fn decoder_bad_magic_is_error_and_stays_failed() {
        let mut bytes = frame_bytes(1, b"x", b"y");
        bytes[0] ^= 0x01;
        let mut dec = FrameDecoder::new();
        let e = dec.feed(&bytes).unwrap_err();
        assert!(matches!(e, FrameError::Magic(_)), "{e:?}");
        assert_eq!(dec.feed(&frame_bytes(1, b"", b"")).unwrap_err(), e);
        assert!(dec.want().is_empty());
    }

    #[test]
    fn decoder_oversized_lengths_are_errors_before_any_allocation() {
        let mut long_header = emit_prefix(1, 0, 0);
        long_header[5..7].copy_from_slice(&(HEADER_MAX as u16 + 1).to_le_bytes());
        assert_eq!(
            FrameDecoder::new().feed(&long_header),
            Err(FrameError::HeaderLong(HEADER_MAX as u16 + 1))
        );
        let mut long_payload = emit_prefix(1, 0, 0);
        long_payload[7..11].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            FrameDecoder::new().feed(&long_payload),
            Err(FrameError::PayloadLong(u32::MAX))
        );
    }

    #[test]
    fn decoder_corrupted_stream_never_panics() {
        // Single bit flips anywhere in a valid stream: an error or frames, never a panic.
        let (bytes, _) = sample_stream();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            let mut dec = FrameDecoder::new();
            let mut input = &b[..];
            while let Ok((n, _)) = dec.feed(input) {
                if n == 0 {
                    break;
                }
                input = &input[n..];
            }
        }
    }

    // ==== Tests for the handshake ====

    fn ident(node: &str, peer: &str, secret: &[u8], arbiter: bool) -> Identity {
        Identity {
            secret: secret.to_vec(),
            resource: "r0".into(),
            node: node.into(),
            peer: peer.into(),
            arbiter,
        }
    }

    /// Runs two handshakes against each other, moving bytes `chunk` at a time,
    /// bounded; the arbiter selects as soon as it is authenticated. Returns each
    /// side's final result and the frame bytes each side saw after the handshake.
    fn run_pair(
        a: &Identity,
        b: &Identity,
        chunk: usize,
    ) -> (Result<HsStatus, Reject>, Result<HsStatus, Reject>) {
        let mut ha = Handshake::new(a, [0xaa; CHALLENGE_LEN]);
        let mut hb = Handshake::new(b, [0xbb; CHALLENGE_LEN]);
        let (mut ra, mut rb) = (Ok(HsStatus::Pending), Ok(HsStatus::Pending));
        for _step in 0..1000 {
            let moved_ab = pump(&mut ha, &mut hb, b, &mut rb, chunk);
            let moved_ba = pump(&mut hb, &mut ha, a, &mut ra, chunk);
            if !moved_ab && !moved_ba {
                return (ra, rb);
            }
        }
        panic!("handshake did not settle in 1000 steps");
    }

    /// Moves up to `chunk` bytes of `from`'s output into `to`; false if none moved.
    fn pump(
        from: &mut Handshake,
        to: &mut Handshake,
        id_to: &Identity,
        res: &mut Result<HsStatus, Reject>,
        chunk: usize,
    ) -> bool {
        let n = from.output().len().min(chunk);
        if n == 0 || res.is_err() {
            return false;
        }
        let bytes = from.output()[..n].to_vec();
        from.sent(n);
        let mut input = &bytes[..];
        while !input.is_empty() && res.is_ok() {
            match to.feed(id_to, input) {
                Ok((used, status)) => {
                    *res = Ok(status);
                    if status == HsStatus::Authenticated && id_to.arbiter {
                        to.select();
                    }
                    assert!(used > 0, "handshake stopped consuming at {status:?}");
                    input = &input[used..];
                }
                Err(r) => *res = Err(r),
            }
        }
        true
    }

    #[test]
    fn handshake_same_secret_authenticates_at_every_chunk_size() {
        let a = ident("alpha", "beta", b"s3cret", true);
        let b = ident("beta", "alpha", b"s3cret", false);
        for chunk in [1, 2, 3, 7, 50, 1000] {
            let (ra, rb) = run_pair(&a, &b, chunk);
            assert_eq!(ra, Ok(HsStatus::Authenticated), "chunk {chunk}");
            assert_eq!(rb, Ok(HsStatus::Selected), "chunk {chunk}");
        }
    }

    #[test]
    fn handshake_wrong_secret_is_auth_on_both_sides() {
        let a = ident("alpha", "beta", b"s3cret", true);
        let b = ident("beta", "alpha", b"other", false);
        let (ra, rb) = run_pair(&a, &b, 1000);
        assert_eq!(ra.unwrap_err().cause, Cause::Auth);
        assert_eq!(rb.unwrap_err().cause, Cause::Auth);
    }

    #[test]
    fn handshake_wrong_resource_is_rejected_with_reason() {
        let a = ident("alpha", "beta", b"s", true);
        let mut b = ident("beta", "alpha", b"s", false);
        b.resource = "r1".into();
        let (ra, rb) = run_pair(&a, &b, 1000);
        assert_eq!(ra, Err(local(Cause::Resource)));
        assert_eq!(rb, Err(local(Cause::Resource)));
    }

    #[test]
    fn handshake_wrong_peer_name_is_rejected_and_peer_told() {
        // alpha expects "beta" but "gamma" connects; gamma expects alpha.
        let a = ident("alpha", "beta", b"s", true);
        let g = ident("gamma", "alpha", b"s", false);
        let (ra, rg) = run_pair(&a, &g, 1000);
        assert_eq!(ra, Err(local(Cause::PeerName)));
        let rg = rg.unwrap_err();
        assert_eq!(
            rg,
            Reject {
                cause: Cause::PeerName,
                by_peer: true
            }
        );
        assert_eq!(rg.to_string(), "peer_peer_name");
    }

    #[test]
    fn handshake_reflected_challenge_does_not_verify() {
        // An attacker without the secret replays our own Hello and Response to us.
        let a = ident("alpha", "beta", b"s", true);
        let mut ha = Handshake::new(&a, [1; CHALLENGE_LEN]);
        // A Hello claiming to be beta with our own challenge, then our own answer.
        let b = ident("beta", "alpha", b"s", false);
        let mut fake = Handshake::new(&b, [1; CHALLENGE_LEN]);
        let hello = fake.output().to_vec();
        fake.sent(hello.len());
        let (_, st) = ha.feed(&a, &hello).unwrap();
        assert_eq!(st, HsStatus::Pending);
        // ha answered with HMAC over "alpha"; bouncing it back must fail.
        let out = ha.output().to_vec();
        let resp_at = out.len() - (HS_PREFIX_LEN + RESPONSE_LEN);
        let reflected = &out[resp_at..];
        assert_eq!(ha.feed(&a, reflected).unwrap_err().cause, Cause::Auth);
    }

    #[test]
    fn handshake_garbage_and_out_of_order_are_malformed() {
        let a = ident("alpha", "beta", b"s", true);
        let mut ha = Handshake::new(&a, [1; CHALLENGE_LEN]);
        assert_eq!(
            ha.feed(&a, b"GET / HTTP/1.0\r\n").unwrap_err().cause,
            Cause::Malformed
        );
        // The failure queued a Verdict naming the cause after our Hello.
        let out = ha.output();
        assert_eq!(out[out.len() - 1], Cause::Malformed.code());
        // A Response before any Hello.
        let mut hb = Handshake::new(&a, [1; CHALLENGE_LEN]);
        let mut msg = HS_MAGIC.to_le_bytes().to_vec();
        msg.extend([HS_RESPONSE, RESPONSE_LEN as u8, 0]);
        msg.extend([0; RESPONSE_LEN]);
        assert_eq!(hb.feed(&a, &msg).unwrap_err().cause, Cause::Malformed);
        // Oversized body length.
        let mut hc = Handshake::new(&a, [1; CHALLENGE_LEN]);
        let mut msg = HS_MAGIC.to_le_bytes().to_vec();
        msg.extend([HS_HELLO, 0xff, 0xff]);
        assert_eq!(hc.feed(&a, &msg).unwrap_err().cause, Cause::Malformed);
    }

    #[test]
    fn handshake_frames_after_select_are_left_to_the_caller() {
        let a = ident("alpha", "beta", b"s", true);
        let b = ident("beta", "alpha", b"s", false);
        let mut ha = Handshake::new(&a, [2; CHALLENGE_LEN]);
        let mut hb = Handshake::new(&b, [3; CHALLENGE_LEN]);
        // Ping-pong whole outputs until a is authenticated.
        for _ in 0..4 {
            let o = ha.output().to_vec();
            ha.sent(o.len());
            hb.feed(&b, &o).unwrap();
            let o = hb.output().to_vec();
            hb.sent(o.len());
            if ha.feed(&a, &o).unwrap().1 == HsStatus::Authenticated {
                break;
            }
        }
        ha.select();
        let mut stream = ha.output().to_vec();
        let frame = frame_bytes(5, b"h", b"p");
        stream.extend(&frame);
        let (used, st) = hb.feed(&b, &stream).unwrap();
        assert_eq!(st, HsStatus::Selected);
        assert_eq!(&stream[used..], &frame[..]);
    }

    #[test]
    fn handshake_corrupted_stream_never_panics_nor_authenticates_wrongly() {
        // Every single bit flip in beta's whole handshake output, fed to alpha.
        let a = ident("alpha", "beta", b"s", true);
        let b = ident("beta", "alpha", b"s", false);
        let mut ha = Handshake::new(&a, [4; CHALLENGE_LEN]);
        let mut hb = Handshake::new(&b, [5; CHALLENGE_LEN]);
        let hello_a = ha.output().to_vec();
        hb.feed(&b, &hello_a).unwrap();
        let mut stream = hb.output().to_vec();
        // beta's Verdict(ok) needs alpha's Response first.
        let (_, st) = ha.feed(&a, &stream).unwrap();
        assert_eq!(st, HsStatus::Pending);
        let resp_a = ha.output()[hello_a.len()..].to_vec();
        let before = hb.output().len();
        hb.feed(&b, &resp_a).unwrap();
        stream.extend_from_slice(&hb.output()[before..]);
        // Hello: prefix, version, "r0", "beta", then the challenge.
        let challenge_at = HS_PREFIX_LEN + 2 + 1 + 2 + 1 + 4;
        assert_eq!(
            &stream[challenge_at..challenge_at + CHALLENGE_LEN],
            &[5; CHALLENGE_LEN]
        );
        for i in 0..stream.len() * 8 {
            let mut bad = stream.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let mut h = Handshake::new(&a, [4; CHALLENGE_LEN]);
            let status = h.feed(&a, &bad);
            // A flipped bit may land in a length and leave alpha waiting, or be
            // rejected; it never authenticates, except in beta's challenge, which
            // only changes alpha's answer (beta would then refuse alpha).
            let in_challenge = (challenge_at..challenge_at + CHALLENGE_LEN).contains(&(i / 8));
            let authenticated = matches!(
                status,
                Ok((_, HsStatus::Authenticated | HsStatus::Selected))
            );
            assert!(!authenticated || in_challenge, "bit {i} authenticated");
        }
        // Unflipped, the same stream authenticates.
        let mut h = Handshake::new(&a, [4; CHALLENGE_LEN]);
        assert_eq!(h.feed(&a, &stream).unwrap().1, HsStatus::Authenticated);
    }

    #[test]
    fn cause_codes_round_trip() {
        for c in Cause::ALL {
            assert_eq!(Cause::from_code(c.code()), c);
        }
        assert_eq!(Cause::from_code(77), Cause::Unknown);
    }

    #[test]
    fn identity_check_refuses_same_names_and_long_names() {
        assert!(ident("a", "a", b"", true).check().is_err());
        assert!(ident(&"n".repeat(65), "b", b"", true).check().is_err());
        assert!(ident("a", "b", b"", true).check().is_ok());
    }
}
