//! The recording format of `sensor run --record` / `sensor replay`:
//! `RECORDING_MAGIC`, a little-endian u16 version, a little-endian i64 offset
//! (CLOCK_REALTIME − CLOCK_MONOTONIC in ns at recording time, so replayed
//! findings carry the same wall-clock times as live ones), then for every raw capture
//! event (exactly as the kernel delivered it) a little-endian u32 length and the
//! bytes.  Process exits are stored as a length of
//! `EXIT_MARKER` followed by the tgid, so replay forgets connections as live did.
//! Who a process is (exe, container, pod: read from /proc live, not in the
//! events) is stored once per process before its first event, as a length of
//! `PROCESS_MARKER`, a u32 length and the JSON of its `ProcessInfo`, so replay
//! names processes exactly as the live run did.  Version 1 recordings (no
//! process records) are still read.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use sensor_common::{MAX_EVENT_LEN, RECORDING_MAGIC, RECORDING_VERSION};

use crate::outputs::jsonl::{Delivery, JsonLinesWriter};

/// Length value that marks a process-exit record (followed by a u32 tgid).
const EXIT_MARKER: u32 = u32::MAX;
const PROCESS_MARKER: u32 = u32::MAX - 1;
/// A process record larger than this is corrupt.
const MAX_PROCESS_RECORD: u32 = 64 * 1024;
/// Oldest recording version this sensor still reads.
const OLDEST_READABLE_VERSION: u16 = 1;

/// One record of a recording.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    Event(Vec<u8>),
    ProcessExited(u32),
    Process(crate::http::types::ProcessInfo),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(
        "{path}: not a sensor recording (bad magic); record one with `sensor run --record FILE`"
    )]
    BadMagic { path: String },
    #[error("{path}: recording version {found} is not supported (this sensor reads version {RECORDING_VERSION})")]
    Version { path: String, found: u16 },
    #[error("{path}: record of {len} bytes at offset {offset} is larger than any capture event ({MAX_EVENT_LEN}); the file is corrupt")]
    Oversized { path: String, len: u32, offset: u64 },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Writes the recording through the outputs' writer thread and bounded
/// queue ([`JsonLinesWriter`] with [`Framing::Records`]), as findings and
/// pairs are: the event loop never waits on the file.  What the queue
/// cannot take (a slow or blocked destination) is dropped, whole records at
/// a time, and counted in `sensor_output_dropped_total{output="record"}`;
/// replay then misses those events, as it would events lost in the kernel.
/// After a failed write (disk full) the recording stops: a cut record would
/// make the rest unreadable.
pub struct Recorder {
    out: JsonLinesWriter,
}

impl Recorder {
    /// Creates (truncates) the file with mode 0600: it holds raw traffic,
    /// secrets included.  Drops what its queue cannot take (counted in
    /// [`Self::dropped`]).
    pub fn create(path: &Path, clock_offset_ns: i64) -> io::Result<Self> {
        Self::create_with(path, clock_offset_ns, Delivery::dropping_unregistered())
    }

    /// As [`Self::create`], counting and queueing as `delivery` says.
    pub fn create_with(path: &Path, clock_offset_ns: i64, delivery: Delivery) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        Self::from_writer_with(Box::new(f), clock_offset_ns, delivery)
    }

    /// A recording into any sink (tests).
    pub fn from_writer_with(
        w: Box<dyn Write + Send>,
        clock_offset_ns: i64,
        delivery: Delivery,
    ) -> io::Result<Self> {
        let mut out = JsonLinesWriter::records_with(w, "record", delivery)?;
        // The header is the first record: the queue is empty, it is taken.
        out.write_record(&[
            RECORDING_MAGIC,
            &RECORDING_VERSION.to_le_bytes(),
            &clock_offset_ns.to_le_bytes(),
        ]);
        out.flush();
        Ok(Recorder { out })
    }

    pub fn event(&mut self, raw: &[u8]) -> io::Result<()> {
        self.out
            .write_record(&[&(raw.len() as u32).to_le_bytes(), raw]);
        Ok(())
    }

    pub fn process_exited(&mut self, tgid: u32) -> io::Result<()> {
        self.out
            .write_record(&[&EXIT_MARKER.to_le_bytes(), &tgid.to_le_bytes()]);
        Ok(())
    }

    pub fn process(&mut self, info: &crate::http::types::ProcessInfo) -> io::Result<()> {
        let json = serde_json::to_vec(info).map_err(io::Error::other)?;
        self.out.write_record(&[
            &PROCESS_MARKER.to_le_bytes(),
            &(json.len() as u32).to_le_bytes(),
            &json,
        ]);
        Ok(())
    }

    /// Hands what is buffered to the writer thread; never waits.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush();
        Ok(())
    }

    /// Records dropped so far (queue full, write failed).
    pub fn dropped(&self) -> u64 {
        self.out.dropped()
    }

    /// Shutdown: waits at most `wait` for the writer thread to write what
    /// it holds; the rest is counted as dropped.  Whether all was written.
    pub fn finish(&mut self, wait: std::time::Duration) -> bool {
        self.out.finish(wait)
    }
}

pub struct RecordingReader {
    input: BufReader<File>,
    clock_offset_ns: i64,
    path: String,
    offset: u64,
}

impl RecordingReader {
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let p = path.display().to_string();
        let io_err = |source| RecordingError::Io {
            path: p.clone(),
            source,
        };
        let f = File::open(path).map_err(io_err)?;
        let mut input = BufReader::with_capacity(256 * 1024, f);
        let mut magic = [0u8; 8];
        let mut ver = [0u8; 2];
        if input.read_exact(&mut magic).is_err() || &magic != RECORDING_MAGIC {
            return Err(RecordingError::BadMagic { path: p });
        }
        input.read_exact(&mut ver).map_err(io_err)?;
        let found = u16::from_le_bytes(ver);
        if !(OLDEST_READABLE_VERSION..=RECORDING_VERSION).contains(&found) {
            return Err(RecordingError::Version { path: p, found });
        }
        let mut off = [0u8; 8];
        input.read_exact(&mut off).map_err(io_err)?;
        Ok(RecordingReader {
            input,
            clock_offset_ns: i64::from_le_bytes(off),
            path: p,
            offset: 18,
        })
    }

    /// CLOCK_REALTIME − CLOCK_MONOTONIC (ns) when the recording was made.
    pub fn clock_offset_ns(&self) -> i64 {
        self.clock_offset_ns
    }

    /// The next record; `Ok(None)` at the end.  A truncated last record (a run
    /// killed mid-write) ends the recording quietly.
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordingError> {
        let mut len = [0u8; 4];
        match read_full(&mut self.input, &mut len) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(source) => {
                return Err(RecordingError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
        let len = u32::from_le_bytes(len);
        let at = self.offset;
        self.offset += 4;
        if len == EXIT_MARKER {
            let mut tgid = [0u8; 4];
            return match read_full(&mut self.input, &mut tgid) {
                Ok(true) => {
                    self.offset += 4;
                    Ok(Some(Record::ProcessExited(u32::from_le_bytes(tgid))))
                }
                _ => Ok(None),
            };
        }
        if len == PROCESS_MARKER {
            let mut n = [0u8; 4];
            if !matches!(read_full(&mut self.input, &mut n), Ok(true)) {
                return Ok(None);
            }
            let n = u32::from_le_bytes(n);
            if n > MAX_PROCESS_RECORD {
                return Err(RecordingError::Oversized {
                    path: self.path.clone(),
                    len: n,
                    offset: at,
                });
            }
            let mut buf = vec![0u8; n as usize];
            if !matches!(read_full(&mut self.input, &mut buf), Ok(true)) {
                return Ok(None);
            }
            self.offset += 4 + u64::from(n);
            return match serde_json::from_slice(&buf) {
                Ok(info) => Ok(Some(Record::Process(info))),
                Err(e) => {
                    tracing::warn!(path = %self.path, offset = at, "skipping a process record that does not parse: {e}");
                    self.next_record()
                }
            };
        }
        if len as usize > MAX_EVENT_LEN {
            return Err(RecordingError::Oversized {
                path: self.path.clone(),
                len,
                offset: at,
            });
        }
        if let Some(data) = self.input.buffer().get(..len as usize) {
            // Already buffered (nearly always): one copy, no zero-fill.
            let buf = data.to_vec();
            self.input.consume(len as usize);
            self.offset += len as u64;
            return Ok(Some(Record::Event(buf)));
        }
        let mut buf = vec![0u8; len as usize];
        match read_full(&mut self.input, &mut buf) {
            Ok(true) => {
                self.offset += len as u64;
                Ok(Some(Record::Event(buf)))
            }
            Ok(false) => {
                tracing::warn!(path = %self.path, offset = at, "recording ends in a truncated record; ignoring it");
                Ok(None)
            }
            Err(source) => Err(RecordingError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Fills `buf`; `Ok(false)` when the input ended before it was full.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec");
        let mut r = Recorder::create(&path, 1234).unwrap();
        r.event(b"one").unwrap();
        r.process_exited(77).unwrap();
        r.event(&[9u8; 100]).unwrap();
        r.flush().unwrap();
        drop(r);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Cut the last record in half: it is ignored, the rest reads back.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 50]).unwrap();
        let mut rd = RecordingReader::open(&path).unwrap();
        assert_eq!(rd.clock_offset_ns(), 1234);
        assert_eq!(
            rd.next_record().unwrap(),
            Some(Record::Event(b"one".to_vec()))
        );
        assert_eq!(rd.next_record().unwrap(), Some(Record::ProcessExited(77)));
        assert_eq!(rd.next_record().unwrap(), None);
    }

    #[test]
    fn process_records_roundtrip_and_version_1_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec");
        let mut r = Recorder::create(&path, 0).unwrap();
        let info = crate::http::types::ProcessInfo {
            pid: 42,
            comm: "uvicorn".into(),
            exe: Some("/usr/bin/python3.11".into()),
            ..Default::default()
        };
        r.process(&info).unwrap();
        r.event(b"ev").unwrap();
        r.flush().unwrap();
        drop(r);
        let mut rd = RecordingReader::open(&path).unwrap();
        assert_eq!(rd.next_record().unwrap(), Some(Record::Process(info)));
        assert_eq!(
            rd.next_record().unwrap(),
            Some(Record::Event(b"ev".to_vec()))
        );
        assert_eq!(rd.next_record().unwrap(), None);
        // A version 1 file (no process records) opens.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(RecordingReader::open(&path).is_ok());
        bytes[8..10].copy_from_slice(&(RECORDING_VERSION + 1).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(RecordingReader::open(&path).is_err());
    }

    /// `--record` into a destination that takes nothing (a pipe nobody
    /// reads): recording 10,000 events returns at once (the event loop
    /// wrote and flushed it itself, and stopped there for good); what the
    /// queue cannot take is dropped whole records at a time and counted, so
    /// what did arrive reads back record by record.
    #[test]
    fn a_blocked_destination_never_makes_the_recorder_wait() {
        use std::os::unix::net::UnixStream;
        use std::time::{Duration, Instant};
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        let mut r = Recorder::from_writer_with(
            Box::new(ours),
            7,
            Delivery {
                max_queued_bytes: 256 * 1024,
                ..Delivery::dropping(dropped.clone())
            },
        )
        .unwrap();
        let event = [0x5au8; 300];
        let started = Instant::now();
        for i in 0..10_000 {
            r.event(&event).unwrap();
            if i % 10 == 0 {
                r.flush().unwrap();
            }
        }
        r.flush().unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert!(dropped.get() > 0);
        let started = Instant::now();
        assert!(!r.finish(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(1));
        // What the peer got is a recording of whole records.
        peer.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut got = Vec::new();
        let _ = peer.read_to_end(&mut got);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec");
        std::fs::write(&path, &got).unwrap();
        let mut rd = RecordingReader::open(&path).unwrap();
        assert_eq!(rd.clock_offset_ns(), 7);
        let mut n = 0u64;
        while let Some(rec) = rd.next_record().unwrap() {
            assert_eq!(rec, Record::Event(event.to_vec()));
            n += 1;
        }
        assert_eq!(n + dropped.get(), 10_000, "read back {n}");
    }

    #[test]
    fn rejects_garbage_and_oversized() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, b"definitely not a recording").unwrap();
        let err = RecordingReader::open(&path).err().unwrap();
        assert!(err.to_string().contains("not a sensor recording"), "{err}");
        let mut bytes = RECORDING_MAGIC.to_vec();
        bytes.extend_from_slice(&RECORDING_VERSION.to_le_bytes());
        bytes.extend_from_slice(&0i64.to_le_bytes());
        bytes.extend_from_slice(&(MAX_EVENT_LEN as u32 + 1).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut rd = RecordingReader::open(&path).unwrap();
        assert!(matches!(
            rd.next_record(),
            Err(RecordingError::Oversized { .. })
        ));
    }
}
