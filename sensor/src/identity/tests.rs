use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

const CID: &str = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
const UID: &str = "5f6f5d4e-2b1a-4c3d-9e8f-0a1b2c3d4e5f";
const UID_SYSTEMD: &str = "5f6f5d4e_2b1a_4c3d_9e8f_0a1b2c3d4e5f";

fn ident(cid: Option<&str>, runtime: Option<&'static str>, uid: Option<&str>) -> CgroupIdentity {
    CgroupIdentity {
        container_id: cid.map(str::to_string),
        runtime,
        pod_uid: uid.map(str::to_string),
    }
}

#[test]
fn containerd_systemd_driver_cgroup_v2() {
    let text = format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope\n"
    );
    assert_eq!(
        parse_cgroup(&text),
        ident(Some(CID), Some("containerd"), Some(UID))
    );
    // Guaranteed QoS has no QoS slice.
    let text =
        format!("0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope\n");
    assert_eq!(
        parse_cgroup(&text),
        ident(Some(CID), Some("containerd"), Some(UID))
    );
}

#[test]
fn containerd_colon_form() {
    let text = format!(
        "0::/system.slice/containerd.service/kubepods-besteffort-pod{UID_SYSTEMD}.slice:cri-containerd:{CID}\n"
    );
    assert_eq!(
        parse_cgroup(&text),
        ident(Some(CID), Some("containerd"), Some(UID))
    );
}

#[test]
fn cri_o() {
    let text = format!(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{CID}.scope\n"
    );
    assert_eq!(
        parse_cgroup(&text),
        ident(Some(CID), Some("cri-o"), Some(UID))
    );
    // conmon (the runtime's monitor) is in the pod but in no container.
    let text = format!(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-conmon-{CID}.scope\n"
    );
    assert_eq!(parse_cgroup(&text), ident(None, None, Some(UID)));
}

#[test]
fn docker_cgroupfs_v1_and_systemd_v2() {
    let v1 = format!(
        "12:pids:/docker/{CID}\n11:memory:/docker/{CID}\n5:cpu,cpuacct:/docker/{CID}\n1:name=systemd:/docker/{CID}\n0::/docker/{CID}\n"
    );
    assert_eq!(parse_cgroup(&v1), ident(Some(CID), Some("docker"), None));
    let v2 = format!("0::/system.slice/docker-{CID}.scope\n");
    assert_eq!(parse_cgroup(&v2), ident(Some(CID), Some("docker"), None));
}

#[test]
fn cgroupfs_kubepods() {
    let v1 = format!(
        "11:memory:/kubepods/burstable/pod{UID}/{CID}\n4:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n0::/\n"
    );
    assert_eq!(
        parse_cgroup(&v1),
        ident(Some(CID), Some("unknown"), Some(UID))
    );
    let v2 = format!("0::/kubepods/besteffort/pod{UID}/{CID}\n");
    assert_eq!(
        parse_cgroup(&v2),
        ident(Some(CID), Some("unknown"), Some(UID))
    );
    let guaranteed = format!("0::/kubepods/pod{UID}/{CID}\n");
    assert_eq!(
        parse_cgroup(&guaranteed),
        ident(Some(CID), Some("unknown"), Some(UID))
    );
}

#[test]
fn podman() {
    let text = format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container\n");
    assert_eq!(parse_cgroup(&text), ident(Some(CID), Some("podman"), None));
}

#[test]
fn host_processes_and_junk_are_nothing() {
    for text in [
        "0::/system.slice/nginx.service\n",
        "0::/user.slice/user-0.slice/session-3.scope\n",
        "0::/init.scope\n",
        "0::/\n",
        "",
        "garbage\n\n:::\n",
        // Near misses: wrong lengths, not hex, a pod-like service name.
        "0::/docker/9a8b7c6d5e4f\n",
        "0::/system.slice/docker-zz8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b.scope\n",
        "0::/system.slice/pod5f6f5d4e-2b1a-4c3d-9e8f-0a1b2c3d4e5f.service\n",
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f6f5d4e_2b1a.slice\n",
        "0::/mypod5f6f5d4e-2b1a-4c3d-9e8f-0a1b2c3d4e5f\n",
    ] {
        assert_eq!(parse_cgroup(text), CgroupIdentity::default(), "{text:?}");
    }
}

#[test]
fn upper_case_ids_are_normalised() {
    let text = format!("0::/docker/{}\n", CID.to_uppercase());
    assert_eq!(parse_cgroup(&text).container_id.as_deref(), Some(CID));
}

#[test]
fn process_info_from_a_proc_tree() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("4242");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cgroup"),
        format!("0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/usr/local/bin/uvicorn", dir.join("exe")).unwrap();
    // The event names the calling thread; the process is named by its own comm.
    std::fs::write(dir.join("comm"), "uvicorn\n").unwrap();
    let p = process_info_at(root.path(), 4242, "asyncio_0");
    assert_eq!(p.pid, 4242);
    assert_eq!(p.comm, "uvicorn");
    assert_eq!(p.exe.as_deref(), Some("/usr/local/bin/uvicorn"));
    assert_eq!(p.container_id.as_deref(), Some(CID));
    assert_eq!(p.pod, Some(format!("uid:{UID}")));
    assert_eq!(p.namespace, None);
    // A process that vanished: just what the event said.
    let gone = process_info_at(root.path(), 999, "x");
    assert_eq!((gone.exe, gone.container_id, gone.pod), (None, None, None));
    assert_eq!(gone.comm, "x");
    // An empty comm file says nothing: the event's name stays.
    std::fs::write(dir.join("comm"), "").unwrap();
    assert_eq!(
        process_info_at(root.path(), 4242, "server.rb:289").comm,
        "server.rb:289"
    );
}

/// A thread renamed (as Ruby names its threads after their source line):
/// the process is still named by its leader's comm.
#[test]
fn process_comm_is_the_process_not_the_thread() {
    let me = std::process::id();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("server.rb:289".into())
        .spawn(move || {
            let tid = unsafe { libc::gettid() };
            let thread_comm =
                std::fs::read_to_string(format!("/proc/{me}/task/{tid}/comm")).unwrap();
            tx.send(thread_comm.trim_end().to_string()).unwrap();
        })
        .unwrap();
    let thread_comm = rx.recv().unwrap();
    worker.join().unwrap();
    assert_eq!(thread_comm, "server.rb:289");
    let process_comm = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
    let p = process_info(me, &thread_comm);
    assert_eq!(p.comm, process_comm.trim_end());
    assert_ne!(p.comm, thread_comm);
}

#[test]
fn process_info_of_this_process() {
    let me = std::process::id();
    let p = process_info(me, "sensor-test");
    let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    assert_eq!(p.exe.as_deref(), Some(exe.to_str().unwrap()));
}

#[test]
fn proc_net_tcp_rows() {
    let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
0: 0100007F:5208 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0\n   \
1: 0100007F:5208 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 123457 1 0000000000000000 20 4 30 10 -1\n   \
2: garbage\n";
    let rows = parse_proc_net_tcp(tcp);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].local.to_string(), "127.0.0.1:21000");
    assert_eq!(rows[0].state, TCP_LISTEN);
    assert_eq!(rows[1].remote.to_string(), "127.0.0.1:50000");
    assert_eq!(rows[1].state, TCP_ESTABLISHED);
    assert_eq!(rows[1].inode, 123457);
    let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
0: 00000000000000000000000001000000:5208 00000000000000000000000001000000:C351 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1\n   \
1: 0000000000000000FFFF00000100007F:5208 0000000000000000FFFF00000200007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1\n";
    let rows = parse_proc_net_tcp(tcp6);
    assert_eq!(rows[0].local.to_string(), "[::1]:21000");
    assert_eq!(rows[0].remote.to_string(), "[::1]:50001");
    assert_eq!(
        rows[1].remote.to_string(),
        "127.0.0.2:50002",
        "v4-mapped shown as v4"
    );
}

struct Kid(Child);
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python(script: &str) -> (Kid, BufReader<std::process::ChildStdout>) {
    let mut c = Command::new("python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let out = BufReader::new(c.stdout.take().unwrap());
    (Kid(c), out)
}

fn wait_line(r: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.trim().to_string()
}

#[test]
fn peer_of_a_client_with_one_connection() {
    let listener = TcpListener::bind("127.0.0.1:21100").unwrap();
    let (kid, mut out) = python(
        "import socket,time\ns=socket.create_connection(('127.0.0.1',21100))\nprint('up',flush=True)\ntime.sleep(20)",
    );
    let (_conn, _) = listener.accept().unwrap();
    assert_eq!(wait_line(&mut out), "up");
    assert_eq!(peer_for(kid.0.id()).as_deref(), Some("127.0.0.1:21100"));
}

#[test]
fn peer_of_a_server_only_while_it_is_certain() {
    let (kid, mut out) = python(
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('127.0.0.1',21101))\ns.listen(8)\nprint('listening',flush=True)\n\
a=s.accept()\nprint('one',flush=True)\nb=s.accept()\nprint('two',flush=True)\ntime.sleep(20)",
    );
    assert_eq!(wait_line(&mut out), "listening");
    assert_eq!(peer_for(kid.0.id()), None, "listening only: no peer");
    let c1 = TcpStream::connect("127.0.0.1:21101").unwrap();
    assert_eq!(wait_line(&mut out), "one");
    assert_eq!(
        peer_for(kid.0.id()),
        Some(c1.local_addr().unwrap().to_string())
    );
    let _c2 = TcpStream::connect("127.0.0.1:21101").unwrap();
    assert_eq!(wait_line(&mut out), "two");
    assert_eq!(
        peer_for(kid.0.id()),
        None,
        "two connections: not certain which"
    );
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(peer_for(u32::MAX), None, "no such process");
}

#[test]
fn peer_gives_up_on_processes_with_many_sockets() {
    let listener = TcpListener::bind("127.0.0.1:21102").unwrap();
    // Unconnected sockets plus the one connection: at the limit, then one over.
    for (extra, expect_peer) in [
        (MAX_SOCKETS_FOR_PEER - 1, true),
        (MAX_SOCKETS_FOR_PEER, false),
    ] {
        let (kid, mut out) = python(&format!(
            "import socket,time\nkeep=[socket.socket() for _ in range({extra})]\n\
s=socket.create_connection(('127.0.0.1',21102))\nprint('up',flush=True)\ntime.sleep(20)"
        ));
        let (_c, _) = listener.accept().unwrap();
        assert_eq!(wait_line(&mut out), "up");
        let peer = peer_for(kid.0.id());
        assert_eq!(
            peer.is_some(),
            expect_peer,
            "{extra} extra sockets: {peer:?}"
        );
    }
}
