//! Containers, as far as this machine can have them without a container
//! runtime: two processes, each in new mount, PID, IPC and UTS namespaces
//! (what `docker run` gives every container; each is PID 1 of its own PID
//! namespace, with its own `/proc`), made with `unshare(1)`. The network namespace and the root
//! filesystem stay shared; only `/dev/shm` differs, as in these cases:
//!
//! - shared `/dev/shm`: both bind-mount one host tmpfs directory on their
//!   `/dev/shm` (as `docker run --ipc=host`, `--ipc=container:<name>` or
//!   `-v /dev/shm:/dev/shm` give): one creates `SharedMemory::create(name)`,
//!   the other `open`s it by name, and wakes cross both ways (each side
//!   checks that its `wake(1)` woke the other container's kernel waiter);
//! - the same with both containers under a seccomp filter that fails the
//!   io_uring system calls with `EPERM` (what Docker's default profile does
//!   since Docker 25): the automatic choice is the thread backend, and it
//!   works across the containers;
//! - a memfd passed over a unix socket (in a directory both containers
//!   reach, like a volume) while each has a *private* `/dev/shm`;
//! - private `/dev/shm` in each (Docker's default `--ipc=private`): the
//!   name is not shared — `open` fails with `ENOENT`, and creating the name
//!   makes a separate object. This is the documented failure mode;
//! - the `sync::Mutex`, whose word holds the holder's pid: with a shared
//!   PID namespace (`--pid=host`) a live holder's lock is held for the
//!   other container; in separate PID namespaces (each with its own
//!   `/proc`, as in Docker) the other container takes it over as dead —
//!   the documented limit.
//!
//! Each "container" is this test binary, re-run by `unshare` with the same
//! test name and `AFX_CT_ROLE` set: the test then plays that role and
//! exits. Needs root, or unprivileged user namespaces (then `unshare
//! --map-root-user`); prints SKIP with the reason otherwise.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use asyncfutex::sync::Mutex;
use asyncfutex::{AsyncFutex, SharedMemory};
use common::*;

// ---------------------------------------------------------------------------
// Host side: making "containers"

/// What a container gets on `/dev/shm`.
enum Shm<'a> {
    /// A bind mount of this host directory (shared with the other one).
    Shared(&'a Path),
    /// A fresh tmpfs of its own.
    Private,
}

/// The `unshare` command line, or why containers cannot be made here.
fn unshare_base() -> Result<Vec<String>, String> {
    let mut cmd: Vec<String> = [
        "unshare",
        "--mount",
        "--pid",
        "--ipc",
        "--uts",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cmd.insert(1, "--user".into());
        cmd.insert(2, "--map-root-user".into());
    }
    // Probe: the namespaces and a tmpfs on /dev/shm inside them.
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .args([
            "--mount-proc",
            "--",
            "/bin/sh",
            "-c",
            "mount -t tmpfs afx-probe /dev/shm",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unshare(1) (util-linux): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{} -- mount -t tmpfs ... /dev/shm` failed ({}): {} (needs root or unprivileged user namespaces)",
            cmd.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(cmd)
}

/// Returns the `unshare` prefix, or prints a SKIP with the reason.
fn containers_possible(test: &str) -> Option<Vec<String>> {
    match unshare_base() {
        Ok(cmd) => Some(cmd),
        Err(why) => {
            eprintln!("SKIP: [{test}] no namespaces for containers here: {why}");
            None
        }
    }
}

/// A scratch directory on the host, removed on drop.
struct HostDir(PathBuf);

impl HostDir {
    fn new(parent: &str, tag: &str) -> HostDir {
        let dir = Path::new(parent).join(format!("afx-ct-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        HostDir(dir)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This process's namespaces, as `pid:[…] mnt:[…] ipc:[…]`.
fn namespaces() -> String {
    ["pid", "mnt", "ipc"]
        .iter()
        .map(|ns| {
            std::fs::read_link(format!("/proc/self/ns/{ns}"))
                .map(|l| l.display().to_string())
                .unwrap_or_else(|e| format!("{ns}:?{e}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running container: its stdout lines arrive on `lines` (and are kept
/// in `log` with stderr for the failure message).
struct Container {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: mpsc::Receiver<String>,
}

impl Container {
    fn start(
        base: &[String],
        test: &str,
        name: &'static str,
        shm: Shm<'_>,
        env: &[(&str, String)],
        seccomp: bool,
        own_pid_ns: bool,
    ) -> Container {
        let setup = match shm {
            Shm::Shared(dir) => format!("mount --bind '{}' /dev/shm", dir.display()),
            Shm::Private => "mount -t tmpfs -o size=4m,mode=1777 afx-ct /dev/shm".to_string(),
        };
        let mut cmd = Command::new(&base[0]);
        // Without its own PID namespace (as `--pid=host`), the container
        // shares the host's, and so the other container's; with one, it
        // gets its own /proc, as in Docker.
        cmd.args(base[1..].iter().filter(|a| own_pid_ns || *a != "--pid"));
        if own_pid_ns {
            cmd.arg("--mount-proc");
        }
        // The program is PID 1 (exec), or a child of the shell.
        let exec = if env.iter().any(|(k, _)| *k == "AFX_CT_NOT_PID1") {
            ""
        } else {
            "exec"
        };
        cmd.arg("--")
            .arg("/bin/sh")
            .arg("-c")
            .arg(format!("set -e; {setup}; {exec} \"$@\""))
            .arg("sh")
            .arg(std::env::current_exe().expect("test binary path"))
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env("AFX_CT_ROLE", name)
            .env("AFX_CT_HOST_NS", namespaces())
            .env("AFX_CT_OWN_PID_NS", if own_pid_ns { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if seccomp {
            // Docker's default profile: the automatic choice decides.
            cmd.env("AFX_CT_SECCOMP", "1").env_remove("AFX_BACKEND");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn container {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        Container {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for a stdout line containing `prefix`; returns it.
    fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WATCHDOG;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(prefix) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("stdout closed before a line {prefix:?}"))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        self.fail(&format!("no line {prefix:?} within {WATCHDOG:?}"))
    }

    /// Waits for the container to exit successfully; returns its output.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + CHILD_WATCHDOG;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => self.fail("did not exit within the watchdog"),
                Err(e) => self.fail(&format!("waitpid: {e}")),
            }
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        if !status.success() {
            self.fail(&format!("exited with {status}"));
        }
        std::mem::take(&mut self.seen)
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        panic!(
            "container {}: {why}\n--- stdout:\n{}\n--- stderr:\n{stderr}",
            self.name,
            self.seen.join("\n")
        );
    }
}

/// The value of `KEY value` in a container's output.
fn field<'a>(out: &'a [String], key: &str) -> &'a str {
    out.iter()
        // The harness's "test <name> ... " may precede the first line.
        .find_map(|l| l.split_once(key).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("no {key} line in {out:#?}"))
}

/// Checks what both containers report: their own namespaces (PID 1, not
/// the host's, not each other's), the backend, and a wake that crossed.
fn check_pair(a: &[String], b: &[String], backend: &str) {
    eprintln!("container a: {a:?}\ncontainer b: {b:?}");
    let (na, nb) = (field(a, "AFX-NS"), field(b, "AFX-NS"));
    let host = namespaces();
    for (ns, other) in na.split(' ').zip(nb.split(' ')) {
        assert_ne!(
            ns, other,
            "the two containers share a namespace: {na} / {nb}"
        );
        assert!(!host.contains(ns), "container in the host's {ns} ({host})");
    }
    assert_eq!(field(a, "AFX-BACKEND"), backend, "container a: {a:#?}");
    assert_eq!(field(b, "AFX-BACKEND"), backend, "container b: {b:#?}");
    assert_eq!(field(a, "AFX-WOKE-PEER"), "1", "{a:#?}");
    assert_eq!(field(b, "AFX-WOKE-PEER"), "1", "{b:#?}");
}

/// A fresh POSIX shared memory name.
fn shm_name(tag: &str) -> String {
    format!("/afx-ct-{tag}-{}", std::process::id())
}

// ---------------------------------------------------------------------------
// Container side: the roles

/// If this process is a container started by a test, plays its role and
/// exits (0 on success, 1 with the reason on stderr).
fn play_role_if_container() {
    let Ok(role) = std::env::var("AFX_CT_ROLE") else {
        return;
    };
    let result = play(&role);
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("container role {role}: {e}");
            std::process::exit(1)
        }
    }
}

fn env(key: &str) -> Result<String, String> {
    std::env::var(key).map_err(|_| format!("{key} not set"))
}

fn io<T>(what: &str, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn play(role: &str) -> ChildResult {
    // Like a container: other namespaces than the host's; PID 1 of its
    // own PID namespace unless started as with `--pid=host`.
    let own_pid_ns = env("AFX_CT_OWN_PID_NS")? == "1";
    let host = env("AFX_CT_HOST_NS")?;
    let mine = namespaces();
    for ns in mine.split(' ') {
        if ns.starts_with("pid:") && !own_pid_ns {
            ensure!(host.contains(ns), "not in the host's PID namespace ({ns})");
            continue;
        }
        ensure!(!host.contains(ns), "still in the host's {ns}");
    }
    if own_pid_ns {
        let pid1 = std::env::var_os("AFX_CT_NOT_PID1").is_none();
        let pid = std::process::id();
        ensure!((pid == 1) == pid1, "pid {pid} (want 1: {pid1})");
    }
    println!("AFX-NS {mine}");
    if std::env::var_os("AFX_CT_SECCOMP").is_some() {
        #[cfg(target_arch = "x86_64")]
        deny_io_uring()?;
        #[cfg(not(target_arch = "x86_64"))]
        return fail("the seccomp filter is x86_64 only (the host checks supported())");
    }
    let backend = io("backend", asyncfutex::backend())?;
    println!("AFX-BACKEND {backend}");
    match role {
        "shm-a" => {
            let mem = Arc::new(io(
                "create",
                SharedMemory::create(&env("AFX_CT_NAME")?, 4096),
            )?);
            println!("AFX-READY");
            let r = first_waits(&mem);
            let _ = SharedMemory::unlink(&env("AFX_CT_NAME")?);
            r
        }
        "shm-b" => {
            let mem = Arc::new(io(
                "open by name",
                SharedMemory::open(&env("AFX_CT_NAME")?),
            )?);
            first_wakes(&mem)
        }
        "memfd-a" => {
            let mem = Arc::new(io("memfd", SharedMemory::memfd("afx-ct", 4096))?);
            let sock = env("AFX_CT_SOCK")?;
            let listener = io("bind", UnixListener::bind(&sock))?;
            println!("AFX-READY");
            let (stream, _) = io("accept", listener.accept())?;
            let fd = mem.fd().ok_or("a memfd SharedMemory has an fd")?;
            send_fd(&stream, fd.as_raw_fd())?;
            first_waits(&mem)
        }
        "memfd-b" => {
            let stream = io("connect", UnixStream::connect(env("AFX_CT_SOCK")?))?;
            let fd = recv_fd(&stream)?;
            let mem = Arc::new(io("from_fd", SharedMemory::from_fd(fd))?);
            first_wakes(&mem)
        }
        "private-a" => {
            let name = env("AFX_CT_NAME")?;
            let _mem = io("create", SharedMemory::create(&name, 4096))?;
            println!("AFX-READY");
            // Keep the object (and this namespace) until the host is done.
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
            io("unlink", SharedMemory::unlink(&name))
        }
        "private-b" => {
            let name = env("AFX_CT_NAME")?;
            match SharedMemory::open(&name) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("AFX-OPEN-ENOENT {e}")
                }
                Err(e) => return fail(format!("open {name}: {e} (want ENOENT)")),
                Ok(_) => return fail(format!("open {name} found the other container's object")),
            }
            // The same name is free here: a separate object.
            let _mine = io("create the same name", SharedMemory::create(&name, 4096))?;
            println!("AFX-CREATE-OK");
            io("unlink", SharedMemory::unlink(&name))
        }
        "mutex-a" => {
            let name = env("AFX_CT_NAME")?;
            let mem = Arc::new(io("create", SharedMemory::create(&name, 4096))?);
            let lock = io("Mutex::create", Mutex::create(&mem, 64))?;
            let guard = io("try_lock", lock.try_lock())?;
            ensure!(guard.is_some(), "a fresh mutex is held");
            println!("AFX-READY");
            // Hold the lock, alive, until the host is done with b.
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
            drop(guard);
            io("unlink", SharedMemory::unlink(&name))
        }
        "mutex-b" => {
            let mem = Arc::new(io("open", SharedMemory::open(&env("AFX_CT_NAME")?))?);
            let lock = io("Mutex::open", Mutex::open(&mem, 64))?;
            match io("try_lock", lock.try_lock())? {
                None => println!("AFX-TRYLOCK held"),
                Some(g) => println!("AFX-TRYLOCK taken owner_died={}", g.owner_died()),
            }
            Ok(())
        }
        other => fail(format!("unknown role {other}")),
    }
}

fn wait_changed(futex: &AsyncFutex, from: u32) -> Result<u32, String> {
    rt_current().block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            loop {
                let v = futex.word().load(Ordering::Acquire);
                if v != from {
                    return Ok(v);
                }
                // A completion means "re-check the word".
                io("wait_async", futex.wait_async(from).await)?;
            }
        })
        .await
        .map_err(|_| format!("watchdog: the word stayed {from}"))?
    })
}

/// Waits (`wait_async`) for the other container's store + wake of word 0,
/// then wakes it, asleep on word 1.
fn first_waits(mem: &Arc<SharedMemory>) -> ChildResult {
    let (w0, w1) = (io("futex", mem.futex(0))?, io("futex", mem.futex(1))?);
    let v = wait_changed(&w0, 0)?;
    ensure!(v == 42, "word 0 is {v}, want 42");
    println!("AFX-RESUMED {v}");
    try_wait_for_waiters(w1.word(), 1, "the other container asleep on word 1")?;
    w1.word().store(7, Ordering::Release);
    let woken = io("wake", w1.wake(1))?;
    println!("AFX-WOKE-PEER {woken}");
    ensure!(woken == 1, "wake(1) woke {woken} in the other container");
    Ok(())
}

/// Wakes the other container, asleep (`wait_async`) on word 0, then waits
/// for its store + wake of word 1.
fn first_wakes(mem: &Arc<SharedMemory>) -> ChildResult {
    let (w0, w1) = (io("futex", mem.futex(0))?, io("futex", mem.futex(1))?);
    try_wait_for_waiters(w0.word(), 1, "the other container asleep on word 0")?;
    w0.word().store(42, Ordering::Release);
    let woken = io("wake", w0.wake(1))?;
    println!("AFX-WOKE-PEER {woken}");
    ensure!(woken == 1, "wake(1) woke {woken} in the other container");
    let v = wait_changed(&w1, 0)?;
    ensure!(v == 7, "word 1 is {v}, want 7");
    println!("AFX-RESUMED {v}");
    Ok(())
}

/// Sends `fd` over `stream` (`SCM_RIGHTS`, one byte of data).
fn send_fd(stream: &UnixStream, fd: i32) -> ChildResult {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 storage: cmsg buffers must be aligned for cmsghdr.
    let mut buf = [0u64; 8];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    // SAFETY: zeroed msghdr is a valid empty header; the pointers set below
    // point to live locals that outlive sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `buf` holds at least one cmsghdr of `space` bytes.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
    }
    loop {
        // SAFETY: a valid socket and a message built above.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n == 1 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if n < 0 && err.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return fail(format!("sendmsg(SCM_RIGHTS): {n}, {err}"));
    }
}

/// Receives one fd sent by [`send_fd`].
fn recv_fd(stream: &UnixStream) -> Result<OwnedFd, String> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = [0u64; 8];
    // SAFETY: zeroed msghdr is a valid empty header; the pointers set below
    // point to live locals that outlive recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&buf);
    let n = loop {
        // SAFETY: a valid socket and a message built above.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        let err = std::io::Error::last_os_error();
        if n < 0 && err.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n != 1 {
            return fail(format!("recvmsg: {n}, {err}"));
        }
        break n;
    };
    let _ = n;
    // SAFETY: the kernel filled `msg`'s control buffer (within its length).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return fail("recvmsg: no SCM_RIGHTS fd");
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

// ---------------------------------------------------------------------------
// The tests

/// Two containers, one shared `/dev/shm` (`--ipc=host`,
/// `--ipc=container:<name>`, `-v /dev/shm:/dev/shm`): a name created in
/// one opens in the other, and wakes cross both ways on the backend the
/// test runs (`AFX_BACKEND`).
#[test]
fn shared_dev_shm_wakes_cross_containers() {
    play_role_if_container();
    let test = "shared_dev_shm_wakes_cross_containers";
    let Some(backend) = start(test) else { return };
    let Some(base) = containers_possible(test) else {
        return;
    };
    let shm = HostDir::new("/dev/shm", "shared");
    let env = [("AFX_CT_NAME", shm_name("shared"))];
    let mut a = Container::start(&base, test, "shm-a", Shm::Shared(&shm.0), &env, false, true);
    a.expect_line("AFX-READY");
    let b = Container::start(&base, test, "shm-b", Shm::Shared(&shm.0), &env, false, true);
    let (b, a) = (b.finish(), a.finish());
    check_pair(&a, &b, backend.name());
    eprintln!(
        "[{test}] ok: {}; {}",
        field(&a, "AFX-NS"),
        field(&b, "AFX-NS")
    );
}

/// The same under Docker's default seccomp profile (io_uring system calls
/// fail with `EPERM`): the automatic choice falls back to the thread
/// backend in both containers, and wakes cross.
#[test]
fn shared_dev_shm_under_docker_seccomp_uses_threads() {
    play_role_if_container();
    let test = "shared_dev_shm_under_docker_seccomp_uses_threads";
    if !supported(test) {
        return;
    }
    let Some(base) = containers_possible(test) else {
        return;
    };
    let shm = HostDir::new("/dev/shm", "seccomp");
    let env = [("AFX_CT_NAME", shm_name("seccomp"))];
    let mut a = Container::start(&base, test, "shm-a", Shm::Shared(&shm.0), &env, true, true);
    a.expect_line("AFX-READY");
    let b = Container::start(&base, test, "shm-b", Shm::Shared(&shm.0), &env, true, true);
    let (b, a) = (b.finish(), a.finish());
    check_pair(&a, &b, "thread");
}

/// Private `/dev/shm` in each container, a memfd passed over a unix socket
/// in a directory both reach: the same pages, and wakes cross.
#[test]
fn memfd_over_unix_socket_crosses_private_dev_shm() {
    play_role_if_container();
    let test = "memfd_over_unix_socket_crosses_private_dev_shm";
    let Some(backend) = start(test) else { return };
    let Some(base) = containers_possible(test) else {
        return;
    };
    let dir = HostDir::new(&std::env::temp_dir().display().to_string(), "sock");
    let env = [(
        "AFX_CT_SOCK",
        dir.0.join("memfd.sock").display().to_string(),
    )];
    let mut a = Container::start(&base, test, "memfd-a", Shm::Private, &env, false, true);
    a.expect_line("AFX-READY");
    let b = Container::start(&base, test, "memfd-b", Shm::Private, &env, false, true);
    let (b, a) = (b.finish(), a.finish());
    check_pair(&a, &b, backend.name());
}

/// Private `/dev/shm` in each container (Docker's default): a name created
/// in one does not exist in the other (`ENOENT`), and creating it there
/// makes a separate object — no futex word is shared.
#[test]
fn private_dev_shm_does_not_share_names() {
    play_role_if_container();
    let test = "private_dev_shm_does_not_share_names";
    if start(test).is_none() {
        return;
    }
    let Some(base) = containers_possible(test) else {
        return;
    };
    let env = [("AFX_CT_NAME", shm_name("private"))];
    let mut a = Container::start(&base, test, "private-a", Shm::Private, &env, false, true);
    a.expect_line("AFX-READY");
    let b = Container::start(&base, test, "private-b", Shm::Private, &env, false, true).finish();
    let a = a.finish();
    assert!(
        field(&b, "AFX-OPEN-ENOENT").contains("No such file"),
        "{b:#?}"
    );
    assert!(b.iter().any(|l| l == "AFX-CREATE-OK"), "{b:#?}");
    let (na, nb) = (field(&a, "AFX-NS"), field(&b, "AFX-NS"));
    assert_ne!(na, nb);
}

/// Runs the Mutex pair (a holds the lock and stays alive, b `try_lock`s)
/// with a shared `/dev/shm`; returns b's verdict.
fn mutex_pair(test: &str, tag: &str, own_pid_ns: bool) -> Option<String> {
    let base = containers_possible(test)?;
    let shm = HostDir::new("/dev/shm", tag);
    let name = ("AFX_CT_NAME", shm_name(tag));
    // The holder is not PID 1, so b (PID 1) finds no process of its pid
    // in its own namespace; were both PID 1, b would find itself, with
    // another start time unless both started in the same clock tick.
    let a_env = [name.clone(), ("AFX_CT_NOT_PID1", "1".to_string())];
    let env = [name];
    let sh = Shm::Shared(&shm.0);
    let mut a = Container::start(&base, test, "mutex-a", sh, &a_env, false, own_pid_ns);
    a.expect_line("AFX-READY");
    let sh = Shm::Shared(&shm.0);
    let b = Container::start(&base, test, "mutex-b", sh, &env, false, own_pid_ns).finish();
    a.finish();
    let verdict = field(&b, "AFX-TRYLOCK").to_string();
    eprintln!("[{test}] b's try_lock while a holds the lock: {verdict}");
    Some(verdict)
}

/// The `Mutex` across containers that share `/dev/shm` and the PID
/// namespace (`--pid=host`, `--pid=container:<name>`): a live holder's
/// lock is held for the other container.
#[test]
fn mutex_across_containers_sharing_pids_excludes() {
    play_role_if_container();
    let test = "mutex_across_containers_sharing_pids_excludes";
    if start(test).is_none() {
        return;
    }
    if let Some(verdict) = mutex_pair(test, "mutex-pids", false) {
        assert_eq!(verdict, "held");
    }
}

/// The documented limit: in separate PID namespaces (Docker's default),
/// the holder's pid means nothing to the other container, which takes a
/// *live* holder's lock over as dead. This is why the README asks for a
/// shared PID namespace; if this test fails, the limit moved (update the
/// README's "Where it stops").
#[test]
fn mutex_across_pid_namespaces_mistakes_a_live_holder_for_dead() {
    play_role_if_container();
    let test = "mutex_across_pid_namespaces_mistakes_a_live_holder_for_dead";
    if start(test).is_none() {
        return;
    }
    if let Some(verdict) = mutex_pair(test, "mutex-ns", true) {
        assert_eq!(verdict, "taken owner_died=true");
    }
}
