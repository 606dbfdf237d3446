//! End to end: SIGTERM with many TLS libraries attached.  Taking a uprobe
//! off waits for the kernel (~0.1 s a link, 6 links a library, one after the
//! other under the kernel's event_mutex): the sensor used to detach before
//! writing out what it held, 0.6 s per library, and with a few dozen
//! libraries a Kubernetes pod's grace period ran out (SIGKILL: findings in
//! flight lost).  Now a finding made just before SIGTERM is written, the
//! sensor exits at once whatever the number of libraries, and nothing stays
//! attached: its BPF programs are gone and the breakpoints leave the
//! processes' libraries once the kernel is done.  Needs root and a built
//! sensor.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sensor_e2e::paths::system_python;
use sensor_e2e::sensor::metric_sum;
use sensor_e2e::wait::SENSOR_LAG;
use sensor_e2e::{assert_no_secrets, curl, require_root, serial, Secret, Sensor, Server, TestCert};

/// Private copies of the system libssl, each mapped by a process of its own.
const LIBRARIES: usize = 16;
/// SIGTERM to exit, at most (it was ~0.6 s per library: ~10 s here).
const EXIT_WITHIN: Duration = Duration::from_secs(2);

fn system_libssl() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/lib/x86_64-linux-gnu/libssl.so.3",
        "/usr/lib64/libssl.so.3",
        "/usr/lib/libssl.so.3",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("a system libssl.so.3")
}

/// Processes that each map their own copy of libssl (a file of its own: a
/// library the sensor attaches to separately); killed on drop.
struct LibraryHolders {
    children: Vec<Child>,
    copies: Vec<PathBuf>,
}

impl LibraryHolders {
    fn start(dir: &Path, n: usize) -> Self {
        let lib = system_libssl();
        let mut holders = LibraryHolders {
            children: Vec::new(),
            copies: Vec::new(),
        };
        for i in 0..n {
            let copy_dir = dir.join(format!("lib{i}"));
            std::fs::create_dir_all(&copy_dir).unwrap();
            let copy = copy_dir.join("libssl.so.3");
            std::fs::copy(&lib, &copy).unwrap();
            let child = Command::new(system_python())
                .args([
                    "-c",
                    "import ctypes, sys, time; ctypes.CDLL(sys.argv[1]); print('ok', flush=True); time.sleep(300)",
                ])
                .arg(&copy)
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 starts");
            holders.children.push(child);
            holders.copies.push(copy);
        }
        for c in &mut holders.children {
            let mut ok = [0u8; 2];
            c.stdout.as_mut().unwrap().read_exact(&mut ok).unwrap();
            assert_eq!(&ok, b"ok");
        }
        holders
    }

    /// Bytes of the copies' code, in the processes' memory, that differ from
    /// the files: the breakpoints (int3) of uprobes still registered.
    fn breakpoint_bytes(&self) -> usize {
        let mut n = 0;
        for (child, copy) in self.children.iter().zip(&self.copies) {
            let pid = child.id();
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
            for line in maps.lines().filter(|l| l.ends_with(copy.to_str().unwrap())) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f[1] != "r-xp" {
                    continue;
                }
                let (start, end) = f[0].split_once('-').unwrap();
                let start = u64::from_str_radix(start, 16).unwrap();
                let end = u64::from_str_radix(end, 16).unwrap();
                let offset = u64::from_str_radix(f[2], 16).unwrap();
                let len = (end - start) as usize;
                let mut mem = vec![0u8; len];
                let mut m = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
                m.seek(SeekFrom::Start(start)).unwrap();
                m.read_exact(&mut mem).unwrap();
                let mut file = vec![0u8; len];
                let mut c = std::fs::File::open(copy).unwrap();
                c.seek(SeekFrom::Start(offset)).unwrap();
                let got = c.read(&mut file).unwrap();
                n += mem[..got]
                    .iter()
                    .zip(&file[..got])
                    .filter(|(a, b)| a != b)
                    .count();
            }
        }
        n
    }
}

impl Drop for LibraryHolders {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The ids of the BPF programs a process holds (its fdinfo's `prog_id`).
fn bpf_programs_of(pid: u32) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether the kernel still has the BPF program `id` (BPF_PROG_GET_FD_BY_ID).
fn bpf_program_exists(id: u32) -> bool {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let mut attr = [0u32; 4];
    attr[0] = id;
    // SAFETY: attr outlives the call and is as large as the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: a fd the call just returned.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

#[test]
fn sigterm_with_many_libraries_attached_writes_the_last_finding_exits_at_once_and_leaves_nothing() {
    require_root();
    let _serial = serial();
    let cert = TestCert::new().unwrap();
    let server = Server::demo(&cert).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let holders = LibraryHolders::start(dir.path(), LIBRARIES);
    let state = dir.path().join("state");
    let mut sensor = Sensor::start(&["--state-dir", state.to_str().unwrap()]).unwrap();
    // Every copy attached (and the system's libssl, and whatever else).
    let deadline = Instant::now() + SENSOR_LAG;
    while holders.breakpoint_bytes() < LIBRARIES
        || metric_sum(&sensor.metrics().unwrap(), "sensor_tls_attachments") < LIBRARIES as f64
    {
        assert!(
            Instant::now() < deadline,
            "copies not attached:\n{}",
            sensor.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let libraries = metric_sum(&sensor.metrics().unwrap(), "sensor_tls_attachments");
    let programs = bpf_programs_of(sensor.pid().unwrap());
    assert!(!programs.is_empty());

    // A leak, then SIGTERM as soon as the client has its answer.
    let key = Secret::random("sk_live_", 32);
    let resp = curl(
        &cert,
        &server.url("/debug"),
        &["-H", &format!("x-api-key: {}", key.expose())],
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    let stopped_at = Instant::now();
    sensor.stop().unwrap();
    let took = stopped_at.elapsed();
    println!(
        "{libraries} libraries attached: SIGTERM to exit {} ms",
        took.as_millis()
    );
    assert!(took < EXIT_WITHIN, "exit took {took:?}");
    let pids = server.pids();
    let findings = sensor.findings().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.role == "server" && pids.contains(&f.process.pid)),
        "the finding made just before SIGTERM was written: {findings:?}"
    );

    // Nothing stays: the programs go with the links (the kernel frees them
    // within a few grace periods), the breakpoints as the kernel removes
    // the uprobes (one after the other, ~0.1 s each).
    let deadline = Instant::now() + Duration::from_secs(5);
    while programs.iter().any(|&id| bpf_program_exists(id)) {
        assert!(
            Instant::now() < deadline,
            "BPF programs {programs:?} still loaded 5 s after the sensor exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = holders.breakpoint_bytes();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} breakpoint bytes still in the libraries 60 s after exit"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "programs gone, breakpoints gone {} ms after SIGTERM",
        stopped_at.elapsed().as_millis()
    );
    assert_no_secrets("sensor output", &sensor.all_output(), &[&key]);
}
