//! Capture events as userspace sees them: parsed (and validated) from the raw
//! bytes the eBPF side put into the ring buffer, or from a recording.

use bytes::{Buf, Bytes};
use sensor_common::{
    EventHeader, DIR_READ, DIR_WRITE, EVENT_HEADER_LEN, FLAG_CALL_TRUNCATED, FLAG_LOST_BEFORE,
    FLAG_READ_FAILED, KIND_CLOSE, KIND_DATA,
};

/// Direction of the plaintext, from the probed process' point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The process read (received) these bytes: SSL_read.
    Read,
    /// The process wrote (sent) these bytes: SSL_write.
    Write,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
        }
    }
}

/// Identity of a TLS connection: the `SSL*` within one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub tgid: u32,
    pub ssl: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Plaintext of (a chunk of) one SSL call.
    Data(Bytes),
    /// SSL_free: the connection is over.
    Close,
}

/// `comm` of the thread that made the call, as the kernel gives it (16 bytes,
/// NUL-padded).  Kept inline: it is only turned into text when a process is
/// first seen, not on each of the millions of events.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Comm([u8; 16]);

impl Comm {
    pub fn from_kernel(raw: [u8; 16]) -> Comm {
        Comm(raw)
    }

    pub fn as_bytes(&self) -> &[u8] {
        let n = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        &self.0[..n]
    }

    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

/// At most 15 bytes, like the kernel's `TASK_COMM_LEN`.
impl From<&str> for Comm {
    fn from(s: &str) -> Comm {
        let mut raw = [0u8; 16];
        let n = s.len().min(15);
        raw[..n].copy_from_slice(&s.as_bytes()[..n]);
        Comm(raw)
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureEvent {
    pub conn: ConnId,
    pub tid: u32,
    pub comm: Comm,
    pub ts_ns: u64,
    pub call_seq: u32,
    pub call_len: u32,
    pub offset: u32,
    pub direction: Direction,
    pub kind: EventKind,
    /// Bytes of this connection lost just before this event (0 when none).
    pub lost_before: u32,
    /// The stream has a hole before this event (lost or truncated bytes).
    pub gap_before: bool,
    /// The call was longer than the per-call cap; bytes after this call's
    /// copied part are missing.
    pub call_truncated: bool,
    /// The kernel could not read the user buffer.
    pub read_failed: bool,
    pub site: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("event of {0} bytes is shorter than the {EVENT_HEADER_LEN}-byte header")]
    Short(usize),
    #[error("event says {declared} data bytes but carries {actual}")]
    LengthMismatch { declared: u32, actual: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("unknown direction {0}")]
    UnknownDirection(u8),
}

impl EventError {
    /// Label for `sensor_capture_bad_events_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::Short(_) => "short",
            EventError::LengthMismatch { .. } => "length_mismatch",
            EventError::UnknownKind(_) => "unknown_kind",
            EventError::UnknownDirection(_) => "unknown_direction",
        }
    }
}

/// Reads the header from the front of a raw event.
pub fn parse_header(raw: &[u8]) -> Result<EventHeader, EventError> {
    if raw.len() < EVENT_HEADER_LEN {
        return Err(EventError::Short(raw.len()));
    }
    // SAFETY: EventHeader is repr(C) plain data of EVENT_HEADER_LEN bytes, valid for
    // any bit pattern; read_unaligned copes with any alignment of `raw`.
    Ok(unsafe { core::ptr::read_unaligned(raw.as_ptr() as *const EventHeader) })
}

impl CaptureEvent {
    /// Parses one raw event (header + data) exactly as the kernel wrote it.
    /// Never trusts it: every length is checked against what is really there.
    pub fn parse(raw: &[u8]) -> Result<CaptureEvent, EventError> {
        Self::parse_with(raw, Bytes::copy_from_slice)
    }

    /// Like [`CaptureEvent::parse`], but the data is `raw` itself with the
    /// header skipped: no copy (replay already read the event into its own
    /// buffer) and no reference-count traffic (a slice of a `Bytes` would make
    /// it shared).
    pub fn parse_owned(mut raw: Bytes) -> Result<CaptureEvent, EventError> {
        // The data is known to be valid once parsed; only its length is kept
        // here (the header is read once).
        let mut len = 0;
        let mut ev = Self::parse_with(&raw, |data| {
            len = data.len();
            Bytes::new()
        })?;
        if let EventKind::Data(data) = &mut ev.kind {
            raw.advance(EVENT_HEADER_LEN);
            if raw.len() > len {
                raw.truncate(len);
            }
            *data = raw;
        }
        Ok(ev)
    }

    /// Like [`CaptureEvent::parse`], without copying the data: the event
    /// comes back with empty data (`EventKind::Data` of no bytes) and its data
    /// as a slice of `raw`, for a caller that reads events in place in the
    /// ring buffer and copies only what it keeps.
    pub fn parse_in_place(raw: &[u8]) -> Result<(CaptureEvent, &[u8]), EventError> {
        let mut len = 0;
        let ev = Self::parse_with(raw, |d| {
            len = d.len();
            Bytes::new()
        })?;
        Ok((ev, &raw[EVENT_HEADER_LEN..EVENT_HEADER_LEN + len]))
    }

    fn parse_with(
        raw: &[u8],
        own: impl FnOnce(&[u8]) -> Bytes,
    ) -> Result<CaptureEvent, EventError> {
        let h = parse_header(raw)?;
        let data = &raw[EVENT_HEADER_LEN..];
        // The ring buffer may pad records; the header's length is authoritative
        // but must not exceed what is present.
        if (h.data_len as usize) > data.len() {
            return Err(EventError::LengthMismatch {
                declared: h.data_len,
                actual: data.len(),
            });
        }
        let direction = match h.direction {
            DIR_READ => Direction::Read,
            DIR_WRITE => Direction::Write,
            d => return Err(EventError::UnknownDirection(d)),
        };
        let kind = match h.kind {
            KIND_DATA => EventKind::Data(own(&data[..h.data_len as usize])),
            KIND_CLOSE => EventKind::Close,
            k => return Err(EventError::UnknownKind(k)),
        };
        Ok(CaptureEvent {
            conn: ConnId {
                tgid: (h.pid_tgid >> 32) as u32,
                ssl: h.ssl,
            },
            tid: h.pid_tgid as u32,
            comm: Comm::from_kernel(h.comm),
            ts_ns: h.ts_ns,
            call_seq: h.call_seq,
            call_len: h.call_len,
            offset: h.offset,
            direction,
            kind,
            lost_before: h.lost_before,
            gap_before: h.flags & FLAG_LOST_BEFORE != 0,
            call_truncated: h.flags & FLAG_CALL_TRUNCATED != 0,
            read_failed: h.flags & FLAG_READ_FAILED != 0,
            site: h.site,
        })
    }

    /// Builds the raw bytes of an event (the inverse of [`CaptureEvent::parse`]);
    /// used by tests and by synthetic recordings.
    pub fn encode(&self) -> Vec<u8> {
        let data: &[u8] = match &self.kind {
            EventKind::Data(d) => d,
            EventKind::Close => &[],
        };
        let comm = self.comm.0;
        let mut flags = 0;
        if self.gap_before {
            flags |= FLAG_LOST_BEFORE;
        }
        if self.call_truncated {
            flags |= FLAG_CALL_TRUNCATED;
        }
        if self.read_failed {
            flags |= FLAG_READ_FAILED;
        }
        let h = EventHeader {
            ssl: self.conn.ssl,
            pid_tgid: ((self.conn.tgid as u64) << 32) | self.tid as u64,
            ts_ns: self.ts_ns,
            call_seq: self.call_seq,
            call_len: self.call_len,
            offset: self.offset,
            data_len: data.len() as u32,
            lost_before: self.lost_before,
            kind: match self.kind {
                EventKind::Data(_) => KIND_DATA,
                EventKind::Close => KIND_CLOSE,
            },
            direction: match self.direction {
                Direction::Read => DIR_READ,
                Direction::Write => DIR_WRITE,
            },
            flags,
            site: self.site,
            comm,
        };
        let mut out = Vec::with_capacity(EVENT_HEADER_LEN + data.len());
        // SAFETY: EventHeader is repr(C) plain data without padding holes that
        // matter (all fields are integers); we copy its bytes verbatim.
        let hb = unsafe {
            core::slice::from_raw_parts(&h as *const EventHeader as *const u8, EVENT_HEADER_LEN)
        };
        out.extend_from_slice(hb);
        out.extend_from_slice(data);
        out
    }

    /// A data event, convenient for tests and synthetic captures.
    pub fn data(
        conn: ConnId,
        direction: Direction,
        call_seq: u32,
        ts_ns: u64,
        data: &[u8],
    ) -> Self {
        CaptureEvent {
            conn,
            tid: conn.tgid,
            comm: "test".into(),
            ts_ns,
            call_seq,
            call_len: data.len() as u32,
            offset: 0,
            direction,
            kind: EventKind::Data(Bytes::copy_from_slice(data)),
            lost_before: 0,
            gap_before: false,
            call_truncated: false,
            read_failed: false,
            site: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_roundtrip() {
        let conn = ConnId {
            tgid: 42,
            ssl: 0xdead_beef,
        };
        let mut ev = CaptureEvent::data(conn, Direction::Write, 3, 99, b"GET / HTTP/1.1\r\n\r\n");
        ev.gap_before = true;
        ev.lost_before = 17;
        let raw = ev.encode();
        assert_eq!(CaptureEvent::parse(&raw).unwrap(), ev);
    }

    #[test]
    fn rejects_bad_events() {
        assert_eq!(CaptureEvent::parse(&[0u8; 10]), Err(EventError::Short(10)));
        let ev = CaptureEvent::data(ConnId { tgid: 1, ssl: 1 }, Direction::Read, 1, 1, b"abc");
        let raw = ev.encode();
        assert!(matches!(
            CaptureEvent::parse(&raw[..raw.len() - 1]),
            Err(EventError::LengthMismatch { .. })
        ));
        let mut bad = raw.clone();
        bad[EVENT_HEADER_LEN - 16 - 3] = 9; // direction byte
        assert_eq!(
            CaptureEvent::parse(&bad),
            Err(EventError::UnknownDirection(9))
        );
    }

    #[test]
    fn comm_is_the_kernel_bytes_up_to_the_first_nul() {
        let mut raw = [0u8; 16];
        raw[..7].copy_from_slice(b"python3");
        let c = Comm::from_kernel(raw);
        assert_eq!(c, "python3");
        assert_eq!(c.to_string_lossy(), "python3");
        assert_eq!(Comm::from("a-name-longer-than-fifteen"), "a-name-longer-t");
        assert_eq!(Comm::from_kernel([b'x'; 16]).as_bytes().len(), 16);
        assert_eq!(format!("{:?}", Comm::from("curl")), "\"curl\"");
    }

    #[test]
    fn owned_parse_keeps_the_event_bytes_without_copying() {
        let ev = CaptureEvent::data(ConnId { tgid: 1, ssl: 1 }, Direction::Read, 1, 1, b"abc");
        let raw = Bytes::from(ev.encode());
        let data_at = raw[EVENT_HEADER_LEN..].as_ptr();
        let parsed = CaptureEvent::parse_owned(raw).unwrap();
        assert_eq!(parsed, ev);
        let EventKind::Data(d) = parsed.kind else {
            panic!("data event")
        };
        assert_eq!(d.as_ptr(), data_at);
        // Padding after the declared data (ring buffer records) is cut off.
        let mut padded = ev.encode();
        padded.extend_from_slice(&[0; 5]);
        let parsed = CaptureEvent::parse_owned(Bytes::from(padded)).unwrap();
        assert_eq!(parsed, ev);
        let mut short = ev.encode();
        short.pop();
        assert!(CaptureEvent::parse_owned(Bytes::from(short)).is_err());
    }
}
