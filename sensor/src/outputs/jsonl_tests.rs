//! The writers never make their caller wait (a reader that does not read,
//! a full disk), count and log what they drop, and keep the lines whole.

use crate::test_tools::with_logs;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A finding-sized line (~400 bytes).
fn line(i: usize) -> serde_json::Value {
    serde_json::json!({
        "schema": "sensor.finding.v1",
        "ts": "2026-11-22T21:00:00.123456Z",
        "kind": "credential_leak",
        "severity": "high",
        "credential": {"source": "header", "name": "x-api-key", "type": "api_key",
                       "fingerprint": "3f9a0c1b2d4e5f60", "length": 40},
        "sink": {"location": "body", "name": null, "encoding": "json_escaped", "offset": i},
        "request": {"method": "GET", "path": "/v1/items", "host": "api.example"},
        "process": {"pid": 4242, "comm": "uvicorn"},
        "connection": {"id": format!("4242:55d0c8a3b2f0:{i}"), "peer": null},
    })
}

/// Everything the peer reads until nothing more comes for 300 ms (the
/// writer was given up on: it ends the write it is in, then writes no more).
fn read_available(mut peer: UnixStream) -> Vec<u8> {
    peer.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("{e}"),
        }
    }
    got
}

fn whole_lines(bytes: &[u8]) -> usize {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .inspect(|l| {
            serde_json::from_slice::<serde_json::Value>(l).expect("a whole JSON line");
        })
        .count()
}

/// `--findings -` into a pipe nobody reads: writing and flushing 10,000
/// findings returns at once (it blocked the event loop for good); shutting
/// down waits only as long as it is told, and every line is either in the
/// pipe, whole, or counted as dropped.
#[test]
fn a_reader_that_does_not_read_never_makes_the_writer_wait() {
    let (ours, peer) = UnixStream::pair().unwrap();
    let mut w = JsonLinesWriter::from_writer(Box::new(ours), "findings");
    let started = Instant::now();
    for i in 0..10_000 {
        w.write(&line(i));
        if i % 10 == 0 {
            w.flush();
        }
    }
    w.flush();
    let took = started.elapsed();
    eprintln!("10,000 findings into a pipe nobody reads: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "10,000 findings took {took:?}"
    );
    let started = Instant::now();
    assert!(
        !w.finish(Duration::from_millis(300)),
        "the pipe cannot hold it all"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "finishing took {took:?}");
    let written = whole_lines(&read_available(peer));
    assert!(w.dropped() > 0);
    assert_eq!(written as u64 + w.dropped(), 10_000, "written {written}");
}

/// With the queue full, what does not fit is dropped and counted at once
/// (not only at shutdown), and said in one log line.
#[test]
fn what_the_queue_cannot_take_is_dropped_and_counted() {
    let (ours, peer) = UnixStream::pair().unwrap();
    let dropped = unregistered_counter();
    let mut w = JsonLinesWriter::from_writer_with(
        Box::new(ours),
        "pairs",
        Delivery {
            max_queued_bytes: 256 * 1024,
            ..Delivery::dropping(dropped.clone())
        },
    )
    .unwrap();
    let ((), logs) = with_logs(|| {
        for i in 0..10_000 {
            w.write(&line(i));
            w.flush();
        }
    });
    // ~4 MB written: the socket and the queue hold a few hundred KiB.
    assert!(dropped.get() > 5_000, "dropped {}", dropped.get());
    assert_eq!(logs.matches("cannot write pairs").count(), 1, "{logs}");
    assert!(logs.contains("sensor_output_dropped_total{output=\"pairs\"}"));
    w.finish(Duration::from_millis(100));
    let written = whole_lines(&read_available(peer));
    assert_eq!(written as u64 + dropped.get(), 10_000);
}

/// Fails every write as a full disk does.
struct FullDisk;

impl Write for FullDisk {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A full disk: every line is counted as dropped, and the error is one log
/// line (it was one per finding: 300,000 lines in 3 s), not a flood.
#[test]
fn a_full_disk_is_counted_and_logged_once_not_per_line() {
    let dropped = unregistered_counter();
    let mut w = JsonLinesWriter::from_writer_with(
        Box::new(FullDisk),
        "findings",
        Delivery::dropping(dropped.clone()),
    )
    .unwrap();
    let (all, logs) = with_logs(|| {
        for i in 0..10_000 {
            w.write(&line(i));
            w.flush();
        }
        w.finish(Duration::from_secs(5))
    });
    assert!(all, "the writer thread ended");
    assert_eq!(dropped.get(), 10_000);
    assert_eq!(logs.lines().count(), 1, "{logs}");
    assert!(logs.contains("No space left on device"), "{logs}");
}

/// Takes `room` bytes, then fails once with ENOSPC (a cut line), then takes
/// everything again (space was freed).
struct FillsUpOnce {
    out: Arc<Mutex<Vec<u8>>>,
    room: usize,
    failed: bool,
}

impl Write for FillsUpOnce {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let mut out = self.out.lock().unwrap();
        if !self.failed && self.room == 0 {
            self.failed = true;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let n = if self.failed {
            b.len()
        } else {
            b.len().min(self.room)
        };
        self.room -= n.min(self.room);
        out.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A write cut mid-line by a full disk leaves that line alone: the lines
/// after it are whole.
#[test]
fn a_line_cut_by_a_full_disk_stays_alone() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let first = serde_json::to_vec(&line(0)).unwrap().len() + 1;
    let sink = FillsUpOnce {
        out: out.clone(),
        room: first + 50,
        failed: false,
    };
    let dropped = unregistered_counter();
    let mut w = JsonLinesWriter::from_writer_with(
        Box::new(sink),
        "findings",
        Delivery::dropping(dropped.clone()),
    )
    .unwrap();
    for i in 0..3 {
        w.write(&line(i));
        w.flush();
        // One chunk at a time, so the second is the one cut.
        while w.shared.queued_bytes.load(Ordering::Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(w.finish(Duration::from_secs(5)));
    assert_eq!(dropped.get(), 1);
    let out = out.lock().unwrap();
    let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 4, "{}", String::from_utf8_lossy(&out));
    assert_eq!(lines[0], serde_json::to_vec(&line(0)).unwrap());
    assert_eq!(lines[1].len(), 50, "the cut line");
    assert_eq!(lines[2], serde_json::to_vec(&line(2)).unwrap());
    assert!(lines[3].is_empty());
}

/// A file a killed sensor left ending mid-line gets a `\n` before the next
/// run's first line; whole files and empty ones are appended to as they
/// are; a new file is mode 0600.
#[test]
fn a_cut_last_line_stays_alone_and_new_lines_are_whole() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (before, after) in [
        ("{\"a\":1}\n{\"b\":", "{\"a\":1}\n{\"b\":\n{\"c\":3}\n"),
        ("{\"a\":1}\n", "{\"a\":1}\n{\"c\":3}\n"),
        ("", "{\"c\":3}\n"),
    ] {
        let path = dir.path().join("findings.jsonl");
        std::fs::write(&path, before).unwrap();
        let mut w = JsonLinesWriter::open(path.to_str().unwrap(), "findings").unwrap();
        w.write(&serde_json::json!({"c": 3}));
        drop(w);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), after);
        std::fs::remove_file(&path).unwrap();
    }
    let path = dir.path().join("sub/new.jsonl");
    let mut w = JsonLinesWriter::open(path.to_str().unwrap(), "findings").unwrap();
    w.write(&serde_json::json!({"c": 3}));
    assert!(w.finish(Duration::from_secs(5)));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"c\":3}\n");
}

/// `sensor replay`'s writers wait for a slow reader: every line arrives.
#[test]
fn a_waiting_writer_loses_nothing_to_a_slow_reader() {
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    });
    let mut w =
        JsonLinesWriter::from_writer_with(Box::new(ours), "pairs", Delivery::waiting()).unwrap();
    for i in 0..10_000 {
        w.write(&line(i));
    }
    drop(w);
    assert_eq!(whole_lines(&reader.join().unwrap()), 10_000);
}

#[test]
fn drops_are_logged_at_once_then_at_most_every_10_s_with_the_count_since() {
    let mut r = DropReport::default();
    let t0 = Instant::now();
    assert_eq!(r.due("findings", t0), None, "nothing dropped");
    r.note(3, "No space left on device (os error 28)".to_string());
    let first = r.due("findings", t0).unwrap();
    assert!(first.contains("3 lines dropped so far"), "{first}");
    r.note(5, "No space left on device (os error 28)".to_string());
    assert_eq!(r.due("findings", t0 + Duration::from_secs(9)), None);
    r.note(1, "No space left on device (os error 28)".to_string());
    let next = r.due("findings", t0 + Duration::from_secs(10)).unwrap();
    assert!(next.contains("6 lines dropped in the last 10 s"), "{next}");
    assert_eq!(r.due("findings", t0 + Duration::from_secs(30)), None);
}

/// SIGHUP after logrotate renamed the file: the lines after the reopen go
/// to a new file at the path, those before stay in the renamed one, none
/// lost; the caller never waits on it.
#[test]
fn a_reopen_after_a_rename_writes_to_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    let rotated = dir.path().join("findings.jsonl.1");
    let mut w = JsonLinesWriter::open(path.to_str().unwrap(), "findings").unwrap();
    let reopen = w.reopen_handle();
    for i in 0..3 {
        w.write(&line(i));
    }
    w.flush();
    while w.shared.queued_bytes.load(Ordering::Relaxed) > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::fs::rename(&path, &rotated).unwrap();
    let started = Instant::now();
    reopen.reopen();
    assert!(started.elapsed() < Duration::from_millis(50));
    for i in 3..5 {
        w.write(&line(i));
    }
    assert!(w.finish(Duration::from_secs(5)));
    let old = std::fs::read(&rotated).unwrap();
    let new = std::fs::read(&path).expect("a new file at the path");
    assert_eq!(whole_lines(&old), 3);
    assert_eq!(whole_lines(&new), 2);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A reopen that fails is one log line and a count; the lines keep going
/// to the file the writer had.
#[test]
fn a_failed_reopen_is_counted_and_the_old_file_kept() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = FillsUpOnce {
        out: out.clone(),
        room: usize::MAX,
        failed: true,
    };
    let failed = unregistered_counter();
    let mut w = JsonLinesWriter::reopenable(
        Box::new(sink),
        "pairs",
        Delivery {
            reopen_failed: failed.clone(),
            ..Delivery::dropping(unregistered_counter())
        },
        "/var/log/sensor/pairs.jsonl",
        || Err(io::Error::from_raw_os_error(libc::EACCES)),
    )
    .unwrap();
    let reopen = w.reopen_handle();
    let ((), logs) = with_logs(|| {
        w.write(&line(0));
        w.flush();
        reopen.reopen();
        // The thread takes the request at its next chunk.
        w.write(&line(1));
        w.flush();
        assert!(w.finish(Duration::from_secs(5)));
    });
    assert_eq!(failed.get(), 1);
    assert_eq!(logs.matches("cannot reopen").count(), 1, "{logs}");
    assert!(logs.contains("/var/log/sensor/pairs.jsonl"), "{logs}");
    assert!(logs.contains("still writing to the file it had"), "{logs}");
    assert_eq!(whole_lines(&out.lock().unwrap()), 2);
    assert_eq!(w.dropped(), 0);
}
