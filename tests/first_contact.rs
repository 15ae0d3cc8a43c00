//! The README's first line, `./scripts/setup-debian.sh && ./scripts/cargo
//! run --bin async_futex_example`, on machines this one is not: without
//! Rust, with a distro `cargo`/`rustc` older than the crate's
//! `rust-version` (Debian 12's 1.63), with rustup's toolchain installed in
//! `~/.cargo/bin` but not on the shell's PATH.
//!
//! Each case runs the scripts with an empty environment, a PATH holding
//! only the few tools they use plus fake `cargo`/`rustc`/`rustup` programs
//! that print a chosen version, and a scratch HOME. `setup-debian.sh
//! --check-only` installs nothing and says which toolchain it would use or
//! what it would install; `scripts/cargo` runs the chosen fake `cargo`,
//! which prints where it ran from and the `rustc` its PATH finds. The
//! install itself runs offline against fake `apt-get`, `curl` (whose
//! "rustup installer" drops a fake 1.95.0 toolchain in `~/.cargo/bin`) and
//! `rustup`: the real download is not exercised here.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `rust-version` from Cargo.toml, read independently of the scripts.
fn required() -> String {
    let toml = fs::read_to_string(root().join("Cargo.toml")).expect("read Cargo.toml");
    toml.lines()
        .find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("rust-version")?.trim_start();
            let v = rest.strip_prefix('=')?.trim().trim_matches('"');
            Some(v.to_string())
        })
        .expect("Cargo.toml has rust-version")
}

/// A scratch directory under the temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("afx-first-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_exe(path: &Path, body: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Fake `cargo` and `rustc` of `version` (and a `rustup` if asked) in `dir`.
fn fake_toolchain(dir: &Path, version: &str, rustup: bool) {
    write_exe(
        &dir.join("cargo"),
        &format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'cargo {version} (fake)'; exit 0; fi\n\
             echo \"fake cargo {version} from $0 args: $*; rustc: $(command -v rustc)\"\n"
        ),
    );
    write_exe(
        &dir.join("rustc"),
        &format!("#!/bin/sh\necho 'rustc {version} (fake 2022-08-08)'\n"),
    );
    if rustup {
        write_exe(&dir.join("rustup"), "#!/bin/sh\necho fake rustup \"$@\"\n");
    }
}

/// A bin directory with only the tools the scripts need (links to this
/// machine's), so that no real cargo/rustc can be found through PATH.
fn base_tools(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for tool in [
        "bash", "sh", "sed", "head", "dirname", "uname", "id", "mkdir", "cp",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found in /usr/bin or /bin"));
        std::os::unix::fs::symlink(found, dir.join(tool)).unwrap();
    }
}

struct Run {
    code: i32,
    out: String,
}

/// Runs `script args` with only PATH (= `path`) and HOME set.
fn run(script: &str, args: &[&str], path: &[&Path], home: &Path) -> Run {
    let path = std::env::join_paths(path).unwrap();
    let o = Command::new(root().join("scripts").join(script))
        .args(args)
        .current_dir(root())
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "--- scripts/{script} {args:?} -> {:?}\n{out}",
        o.status.code()
    );
    Run {
        code: o.status.code().unwrap_or(-1),
        out,
    }
}

/// One machine: base tools, maybe a distro toolchain on PATH, maybe
/// rustup's toolchain in HOME/.cargo/bin.
struct Machine {
    _scratch: Scratch,
    base: PathBuf,
    distro: PathBuf,
    home: PathBuf,
}

impl Machine {
    fn new(name: &str, distro: Option<&str>, rustup_home: Option<&str>) -> Machine {
        let scratch = Scratch::new(name);
        let base = scratch.0.join("bin");
        base_tools(&base);
        let distro_dir = scratch.0.join("usr-bin");
        fs::create_dir_all(&distro_dir).unwrap();
        if let Some(v) = distro {
            fake_toolchain(&distro_dir, v, false);
        }
        let home = scratch.0.join("home");
        fs::create_dir_all(&home).unwrap();
        if let Some(v) = rustup_home {
            fake_toolchain(&home.join(".cargo/bin"), v, true);
        }
        Machine {
            _scratch: scratch,
            base,
            distro: distro_dir,
            home,
        }
    }

    fn run(&self, script: &str, args: &[&str]) -> Run {
        run(script, args, &[&self.distro, &self.base], &self.home)
    }

    fn rustup_bin(&self) -> String {
        self.home.join(".cargo/bin").display().to_string()
    }
}

#[test]
fn no_rust_at_all_installs_rustup_and_cargo_wrapper_says_what_to_do() {
    let req = required();
    let m = Machine::new("none", None, None);
    let r = m.run("setup-debian.sh", &["--check-only"]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains(&format!("no Rust >= {req}")), "{}", r.out);
    assert!(
        r.out.contains("would install Rust with rustup"),
        "{}",
        r.out
    );
    let r = m.run("cargo", &["run", "--bin", "async_futex_example"]);
    assert_eq!(r.code, 127, "no toolchain: scripts/cargo must fail clearly");
    assert!(
        r.out.contains("run ./scripts/setup-debian.sh first"),
        "{}",
        r.out
    );
}

#[test]
fn too_old_distro_rust_is_not_used() {
    let m = Machine::new("old", Some("1.63.0"), None);
    let r = m.run("setup-debian.sh", &["--check-only"]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains("is 1.63.0 <"), "{}", r.out);
    assert!(
        r.out.contains("would install Rust with rustup"),
        "{}",
        r.out
    );
    let r = m.run("cargo", &["build"]);
    assert_eq!(r.code, 127, "{}", r.out);
}

#[test]
fn rustup_toolchain_off_path_is_found_before_an_old_distro_one() {
    let m = Machine::new("offpath", Some("1.63.0"), Some("1.95.0"));
    let bin = m.rustup_bin();
    let r = m.run("setup-debian.sh", &["--check-only"]);
    assert_eq!(r.code, 0);
    assert!(
        r.out.contains(&format!("cargo 1.95.0 (fake) from {bin}")),
        "{}",
        r.out
    );
    assert!(r.out.contains("use ./scripts/cargo"), "{}", r.out);
    // The README's command, as pasted after setup: rustup's cargo runs,
    // with rustup's rustc first on its PATH (not the distro's 1.63).
    let r = m.run("cargo", &["run", "--bin", "async_futex_example"]);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains(&format!(
            "fake cargo 1.95.0 from {bin}/cargo args: run --bin async_futex_example; rustc: {bin}/rustc"
        )),
        "{}",
        r.out
    );
}

#[test]
fn new_enough_rust_on_path_is_used_as_is() {
    let req = required();
    let m = Machine::new("onpath", Some(&format!("{req}.0")), Some("1.95.0"));
    let r = m.run("setup-debian.sh", &["--check-only"]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains("from PATH"), "{}", r.out);
    assert!(!r.out.contains("use ./scripts/cargo"), "{}", r.out);
    let r = m.run("cargo", &["test"]);
    assert_eq!(r.code, 0, "{}", r.out);
    let distro = m.distro.display().to_string();
    assert!(
        r.out.contains(&format!(
            "fake cargo {req}.0 from {distro}/cargo args: test"
        )),
        "{}",
        r.out
    );
}

#[test]
fn rustup_with_a_too_old_default_is_switched_to_stable() {
    let m = Machine::new("oldrustup", None, Some("1.70.0"));
    let r = m.run("setup-debian.sh", &["--check-only"]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains("is 1.70.0 <"), "{}", r.out);
    assert!(
        r.out.contains(&format!(
            "would run '{}/rustup default stable'",
            m.rustup_bin()
        )),
        "{}",
        r.out
    );
}

#[test]
fn bad_argument_is_a_clear_error() {
    let m = Machine::new("badarg", None, None);
    let r = m.run("setup-debian.sh", &["--chek-only"]);
    assert_eq!(r.code, 2);
    assert!(
        r.out.contains("unknown argument '--chek-only'"),
        "{}",
        r.out
    );
}

/// Makes `m` a machine where installing works, offline: `apt-get` and
/// `sudo` log and succeed, `curl https://sh.rustup.rs` prints an
/// installer that puts a fake 1.95.0 toolchain (and `rustup`) in
/// `$HOME/.cargo/bin`, and `rustup default stable` does the same.
fn offline_installers(m: &Machine) {
    let new = m.base.parent().unwrap().join("stable");
    fake_toolchain(&new, "1.95.0", false);
    let install = format!(
        "mkdir -p \"$HOME/.cargo/bin\" && cp '{}'/* \"$HOME/.cargo/bin/\"",
        new.display()
    );
    write_exe(
        &new.join("rustup"),
        &format!("#!/bin/sh\necho \"fake rustup $*\" >&2\n{install}\n"),
    );
    write_exe(
        &m.base.join("apt-get"),
        "#!/bin/sh\necho \"fake apt-get $*\" >&2\n",
    );
    write_exe(&m.base.join("sudo"), "#!/bin/sh\nexec \"$@\"\n");
    write_exe(
        &m.base.join("curl"),
        &format!(
            "#!/bin/sh\necho \"fake curl $*\" >&2\n\
             printf '%s\\n' '#!/bin/sh' 'echo \"fake rustup-init $*\" >&2' '{}'\n",
            install.replace('\'', "'\\''")
        ),
    );
}

#[test]
fn setup_installs_rustup_over_a_too_old_distro_rust_then_cargo_wrapper_uses_it() {
    let m = Machine::new("install", Some("1.63.0"), None);
    offline_installers(&m);
    let bin = m.rustup_bin();
    let r = m.run("setup-debian.sh", &[]);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(r.out.contains("fake apt-get install"), "{}", r.out);
    assert!(
        r.out
            .contains("fake curl --proto =https --tlsv1.2 -sSf https://sh.rustup.rs"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("fake rustup-init -y --profile default"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains(&format!("cargo 1.95.0 (fake) from {bin}")),
        "{}",
        r.out
    );
    let r = m.run("cargo", &["run", "--bin", "async_futex_example"]);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out
            .contains(&format!("fake cargo 1.95.0 from {bin}/cargo")),
        "{}",
        r.out
    );
}

#[test]
fn setup_switches_a_too_old_rustup_default_to_stable() {
    let m = Machine::new("switch", None, Some("1.70.0"));
    offline_installers(&m);
    // The machine's rustup is the one that installs the stable fakes.
    let new = m.base.parent().unwrap().join("stable");
    fs::copy(new.join("rustup"), m.home.join(".cargo/bin/rustup")).unwrap();
    let r = m.run("setup-debian.sh", &[]);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(r.out.contains("fake rustup default stable"), "{}", r.out);
    assert!(
        !r.out.contains("fake curl"),
        "rustup is there: no download\n{}",
        r.out
    );
    assert!(r.out.contains("cargo 1.95.0 (fake) from"), "{}", r.out);
}

#[test]
fn setup_fails_clearly_when_the_install_gives_no_usable_rust() {
    let m = Machine::new("broken", None, None);
    offline_installers(&m);
    // An installer that installs nothing.
    write_exe(
        &m.base.join("curl"),
        "#!/bin/sh\necho 'echo installer did nothing'\n",
    );
    let r = m.run("setup-debian.sh", &[]);
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(r.out.contains("still no Rust >="), "{}", r.out);
}
