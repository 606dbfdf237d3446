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
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use sensor_common::{MAX_EVENT_LEN, RECORDING_MAGIC, RECORDING_VERSION};

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

pub struct Recorder {
    out: BufWriter<File>,
}

impl Recorder {
    /// Creates (truncates) the file with mode 0600: it holds raw traffic, secrets included.
    pub fn create(path: &Path, clock_offset_ns: i64) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        let mut out = BufWriter::with_capacity(256 * 1024, f);
        out.write_all(RECORDING_MAGIC)?;
        out.write_all(&RECORDING_VERSION.to_le_bytes())?;
        out.write_all(&clock_offset_ns.to_le_bytes())?;
        Ok(Recorder { out })
    }

    pub fn event(&mut self, raw: &[u8]) -> io::Result<()> {
        self.out.write_all(&(raw.len() as u32).to_le_bytes())?;
        self.out.write_all(raw)
    }

    pub fn process_exited(&mut self, tgid: u32) -> io::Result<()> {
        self.out.write_all(&EXIT_MARKER.to_le_bytes())?;
        self.out.write_all(&tgid.to_le_bytes())
    }

    pub fn process(&mut self, info: &crate::http::types::ProcessInfo) -> io::Result<()> {
        let json = serde_json::to_vec(info).map_err(io::Error::other)?;
        self.out.write_all(&PROCESS_MARKER.to_le_bytes())?;
        self.out.write_all(&(json.len() as u32).to_le_bytes())?;
        self.out.write_all(&json)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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
