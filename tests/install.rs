//! The installed C library: runs `packaging/install.sh` (which builds the
//! crate with `cargo build --release`, reusing `target/`) into a staging
//! directory (`DESTDIR` under `CARGO_TARGET_TMPDIR`, `PREFIX` =
//! [`PREFIX`]), then
//!
//! - checks the installed files (the C and C++ headers, a manual page for
//!   every function of the header, the separate debug file), the
//!   `libasyncfutex.so.X.Y.Z` → `libasyncfutex.so.X` → `libasyncfutex.so`
//!   links, the SONAME (`readelf -d`), that the library exports exactly the
//!   `afx_*` functions of the header (`nm -D --defined-only`), that the
//!   libraries carry no debug info (`readelf -S`: no `.debug_info`) and
//!   that the `.so`'s `.gnu_debuglink` names the installed debug file with
//!   its CRC (and the build IDs match);
//! - builds `packaging/test/smoke.c`, `smoke.cpp` and `smoke_hpp.cpp`
//!   against the installed copy through pkg-config (`PKG_CONFIG_PATH`,
//!   `PKG_CONFIG_SYSROOT_DIR`; shared, and `smoke.c` fully static with
//!   `-static $(pkg-config --static ...)`) and through CMake
//!   (`find_package(asyncfutex)` with `CMAKE_PREFIX_PATH`: the shared,
//!   static and C++ imported targets, and a fully static link), runs them
//!   (`smoke.c` forks) and checks they loaded the installed library, or
//!   none;
//! - checks that CMake rejects a request for the next major version;
//! - uninstalls with `packaging/install.sh --uninstall` and checks that the
//!   staging directory is empty again.
//!
//! Needs cc, c++, pkg-config, cmake, readelf, nm, objcopy and a static libc
//! (libc6-dev). A missing tool is a failure with an install hint, never a
//! skip.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `PREFIX` the package is configured for; the files land under
/// `DESTDIR` + `PREFIX`.
const PREFIX: &str = "/opt/asyncfutex-install-test";

const INSTALL_HINT: &str = "install the C/C++ toolchain and packaging tools: \
    apt-get install -y build-essential cmake pkg-config binutils \
    (scripts/setup-debian.sh does it)";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn major() -> &'static str {
    env!("CARGO_PKG_VERSION_MAJOR")
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `AFX_VERSION_NUMBER` as the header defines it: major * 10000 + minor *
/// 100 + patch (from the package version, so this test does not need the
/// crate's C API module).
fn version_number() -> u32 {
    let part = |p: &str| p.parse::<u32>().expect("numeric version part");
    part(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + part(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + part(env!("CARGO_PKG_VERSION_PATCH"))
}

fn env_or(var: &str, default: &str) -> OsString {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| OsString::from(default))
}

fn c_compiler() -> OsString {
    env_or("CC", "cc")
}

fn cxx_compiler() -> OsString {
    env_or("CXX", "c++")
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from(env!("CARGO")))
}

/// Fails unless `program` runs (`--version`).
fn require_tool(program: &OsString) {
    let ok = Command::new(program)
        .arg("--version")
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{}` is missing or broken; tests/install.rs needs it: {INSTALL_HINT}",
        program.to_string_lossy()
    );
}

/// Runs `cmd`, panicking with its output unless it succeeds.
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- command: {cmd:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_of(cmd: &mut Command, what: &str) -> String {
    String::from_utf8_lossy(&run(cmd, what).stdout).into_owned()
}

/// `packaging/install.sh` with a clean, explicit environment for the paths.
fn install_sh(destdir: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(manifest_dir().join("packaging").join("install.sh"))
        .env("PREFIX", PREFIX)
        .env("DESTDIR", destdir)
        .env("CARGO", cargo())
        .env_remove("LIBDIR")
        .env_remove("INCLUDEDIR");
    cmd
}

/// Every file, link and directory under `dir`, as paths relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path);
                found.insert(format!("{rel}/"));
            } else {
                found.insert(rel);
            }
        }
    }
    found
}

/// The `afx_*` functions the header declares.
fn header_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(manifest_dir().join("include/asyncfutex.h"))
        .expect("include/asyncfutex.h");
    let mut names = BTreeSet::new();
    for line in header.lines() {
        let line = line.trim_start();
        if line.starts_with("//") || line.starts_with('#') || line.starts_with('*') {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("afx_") {
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if tail[len..].starts_with('(') {
                names.insert(tail[..len].to_owned());
            }
            rest = &tail[len..];
        }
    }
    names
}

/// How a smoke program was linked.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Linkage {
    /// Against `libasyncfutex.so`.
    Shared,
    /// Against `libasyncfutex.a`, libc shared.
    Static,
    /// `-static`: no dynamic section at all.
    FullyStatic,
}

/// Runs a smoke program with the loader's default search (no cargo-set
/// `LD_LIBRARY_PATH`), checks its output and that it loaded the library
/// from `libdir` (or, linked statically, no libasyncfutex; fully
/// statically, nothing).
fn run_smoke(program: &Path, libdir: &Path, expect_prefix: &str, linkage: Linkage) {
    let name = program.file_name().unwrap().to_string_lossy().into_owned();
    let out = stdout_of(
        Command::new(program).env_remove("LD_LIBRARY_PATH"),
        &format!("running {name}"),
    );
    let want = format!(
        "{expect_prefix}: asyncfutex {} (AFX_VERSION_NUMBER {}), backend ",
        version(),
        version_number()
    );
    assert!(
        out.starts_with(&want) && (out.contains("io_uring") || out.contains("thread")),
        "{name} printed {out:?}, expected {want:?} + a backend name"
    );
    eprintln!("install: {name} ({linkage:?}): {}", out.trim_end());

    if linkage == Linkage::FullyStatic {
        let dynamic = stdout_of(Command::new("readelf").arg("-d").arg(program), "readelf -d");
        assert!(
            dynamic.contains("There is no dynamic section"),
            "{name} was linked with -static but has a dynamic section:\n{dynamic}"
        );
        return;
    }
    let soname = format!("libasyncfutex.so.{}", major());
    let loaded = stdout_of(
        Command::new(program)
            .env_remove("LD_LIBRARY_PATH")
            .env("LD_TRACE_LOADED_OBJECTS", "1"),
        &format!("listing the libraries {name} loads"),
    );
    let installed = format!("{soname} => {}", libdir.join(&soname).display());
    if linkage == Linkage::Shared {
        assert!(
            loaded.contains(&installed),
            "{name} does not load the installed library ({installed}):\n{loaded}"
        );
    } else {
        assert!(
            !loaded.contains("libasyncfutex"),
            "{name} was linked statically but loads libasyncfutex:\n{loaded}"
        );
    }
}

/// The section names `readelf -S` lists for `file` (every member of an
/// archive).
fn section_names(file: &Path) -> BTreeSet<String> {
    let out = stdout_of(
        Command::new("readelf").args(["-S", "-W"]).arg(file),
        "readelf -S",
    );
    out.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            l.starts_with('[')
                .then(|| l.split(']').nth(1)?.split_whitespace().next())
                .flatten()
        })
        .map(str::to_owned)
        .collect()
}

/// The GNU build ID `readelf -n` prints for `file`.
fn build_id(file: &Path) -> Option<String> {
    let out = stdout_of(Command::new("readelf").arg("-n").arg(file), "readelf -n");
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
}

/// The CRC-32 `.gnu_debuglink` records (IEEE 802.3, as zlib's `crc32`).
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, entry) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Every file under `dir` with the given extension, as paths relative to
/// it.
fn files_with_extension(dir: &Path, ext: &str) -> BTreeSet<String> {
    tree(dir)
        .into_iter()
        .filter(|p| !p.ends_with('/') && Path::new(p).extension().is_some_and(|e| e == ext))
        .collect()
}

#[test]
fn install_build_against_it_and_uninstall() {
    let cc = c_compiler();
    let cxx = cxx_compiler();
    for tool in [&cc, &cxx, &"pkg-config".into(), &"cmake".into()] {
        require_tool(tool);
    }
    for tool in ["readelf", "nm", "objcopy"] {
        require_tool(&tool.into());
    }

    // A directory per process (a failed run leaves its own for inspection;
    // those of processes that are gone are removed here).
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix("install-test-"));
            if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let work = base.join(format!("install-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let stage = work.join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    let root = stage.join(PREFIX.trim_start_matches('/'));
    let libdir = root.join("lib");
    let includedir = root.join("include");
    let mandir = root.join("share/man");

    // ---- install ---------------------------------------------------------
    run(&mut install_sh(&stage), "packaging/install.sh");
    let v = version();
    let m = major();
    // The C++ headers (every *.hpp under bindings/cpp/include) and the
    // manual pages (man/manN/*.N) as the source tree has them.
    let cpp_include = manifest_dir().join("bindings/cpp/include");
    let hpp = files_with_extension(&cpp_include, "hpp");
    assert!(
        hpp.contains("asyncfutex.hpp"),
        "no asyncfutex.hpp in {}",
        cpp_include.display()
    );
    let man_source = manifest_dir().join("man");
    let pages: BTreeSet<String> = ["man3", "man7"]
        .into_iter()
        .flat_map(|section| {
            files_with_extension(&man_source.join(section), &section[3..])
                .into_iter()
                .map(move |page| format!("{section}/{page}"))
        })
        .collect();
    let mut expected: BTreeSet<String> = [
        "opt/".to_owned(),
        format!("{}/", PREFIX.trim_start_matches('/')),
        "lib/".to_owned(),
        format!("lib/libasyncfutex.so.{v}"),
        format!("lib/libasyncfutex.so.{m}"),
        "lib/libasyncfutex.so".to_owned(),
        "lib/libasyncfutex.a".to_owned(),
        "lib/pkgconfig/".to_owned(),
        "lib/pkgconfig/asyncfutex.pc".to_owned(),
        "lib/cmake/".to_owned(),
        "lib/cmake/asyncfutex/".to_owned(),
        "lib/cmake/asyncfutex/asyncfutexConfig.cmake".to_owned(),
        "lib/cmake/asyncfutex/asyncfutexConfigVersion.cmake".to_owned(),
        "lib/asyncfutex/".to_owned(),
        "lib/asyncfutex/install-manifest.txt".to_owned(),
        "lib/.debug/".to_owned(),
        format!("lib/.debug/libasyncfutex.so.{v}.debug"),
        "include/".to_owned(),
        "include/asyncfutex.h".to_owned(),
        "share/".to_owned(),
        "share/man/".to_owned(),
        "share/man/man3/".to_owned(),
        "share/man/man7/".to_owned(),
    ]
    .into_iter()
    .chain(hpp.iter().map(|h| format!("include/{h}")))
    .chain(pages.iter().map(|page| format!("share/man/{page}")))
    .collect();
    // Directories of C++ headers in subdirectories, if any.
    for h in &hpp {
        let mut dir = Path::new(h).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            expected.insert(format!("include/{}/", d.display()));
            dir = d.parent();
        }
    }
    let expected: BTreeSet<String> = expected
        .into_iter()
        .map(|p| {
            if p.starts_with("lib") || p.starts_with("include") || p.starts_with("share") {
                format!("{}/{p}", PREFIX.trim_start_matches('/'))
            } else {
                p
            }
        })
        .collect();
    assert_eq!(tree(&stage), expected, "installed files");

    // A page for every function of the header, as the source tree has it.
    for function in header_functions() {
        let page = mandir.join(format!("man3/{function}.3"));
        assert!(
            page.is_file(),
            "no manual page {} installed",
            page.display()
        );
    }
    for page in &pages {
        assert_eq!(
            std::fs::read(mandir.join(page)).unwrap(),
            std::fs::read(man_source.join(page)).unwrap(),
            "installed page {page} differs from man/{page}"
        );
    }
    for h in &hpp {
        assert_eq!(
            std::fs::read(includedir.join(h)).unwrap(),
            std::fs::read(cpp_include.join(h)).unwrap(),
            "installed {h} differs from bindings/cpp/include/{h}"
        );
    }
    eprintln!(
        "install: {} manual pages, {} C++ header(s) installed",
        pages.len(),
        hpp.len()
    );

    let real = libdir.join(format!("libasyncfutex.so.{v}"));
    assert!(real.symlink_metadata().unwrap().file_type().is_file());
    for (link, target) in [
        (
            format!("libasyncfutex.so.{m}"),
            format!("libasyncfutex.so.{v}"),
        ),
        (
            "libasyncfutex.so".to_owned(),
            format!("libasyncfutex.so.{m}"),
        ),
    ] {
        assert_eq!(
            std::fs::read_link(libdir.join(&link)).unwrap(),
            PathBuf::from(&target),
            "{link} must be a symlink to {target}"
        );
    }
    assert_eq!(
        std::fs::read(includedir.join("asyncfutex.h")).unwrap(),
        std::fs::read(manifest_dir().join("include/asyncfutex.h")).unwrap(),
        "installed header differs from include/asyncfutex.h"
    );
    let pc = std::fs::read_to_string(libdir.join("pkgconfig/asyncfutex.pc")).unwrap();
    assert!(
        pc.lines().any(|l| l == format!("prefix={PREFIX}")),
        "asyncfutex.pc has no prefix={PREFIX}:\n{pc}"
    );

    // ---- SONAME and exports ------------------------------------------------
    let dynamic = stdout_of(Command::new("readelf").arg("-d").arg(&real), "readelf -d");
    let soname_line = dynamic
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .unwrap_or_else(|| panic!("no SONAME in {}:\n{dynamic}", real.display()));
    eprintln!("install: readelf -d: {}", soname_line.trim());
    assert!(
        soname_line.contains(&format!("[libasyncfutex.so.{m}]")),
        "SONAME must be libasyncfutex.so.{m}: {soname_line}"
    );
    let symbols = stdout_of(
        Command::new("nm").args(["-D", "--defined-only"]).arg(&real),
        "nm -D --defined-only",
    );
    let exported: BTreeSet<String> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        // Versioned names print as name@@VERSION with newer binutils.
        .map(|s| s.split('@').next().unwrap().to_owned())
        .collect();
    let strays: Vec<&String> = exported.iter().filter(|s| !s.starts_with("afx_")).collect();
    assert!(
        strays.is_empty(),
        "libasyncfutex.so exports non-afx_ symbols: {strays:?}"
    );
    assert_eq!(
        exported,
        header_functions(),
        "exported symbols (left) vs functions of include/asyncfutex.h (right)"
    );
    eprintln!(
        "install: nm -D --defined-only: {} symbols, all afx_*",
        exported.len()
    );

    // ---- stripped, with a separate debug file --------------------------------
    let sections = section_names(&real);
    assert!(
        !sections.contains(".debug_info") && sections.contains(".dynsym"),
        "the installed {} must have a .dynsym and no .debug_info; sections: {sections:?}",
        real.display()
    );
    let debug_file = libdir.join(format!(".debug/libasyncfutex.so.{v}.debug"));
    assert!(
        section_names(&debug_file).contains(".debug_info"),
        "{} has no .debug_info",
        debug_file.display()
    );
    let link = work.join("gnu_debuglink");
    run(
        Command::new("objcopy")
            .arg(format!("--dump-section=.gnu_debuglink={}", link.display()))
            .arg(&real)
            .arg(work.join("objcopy-scratch")),
        "objcopy --dump-section .gnu_debuglink",
    );
    // The section: the file name, NUL, padding to 4 bytes, the CRC (LE).
    let link = std::fs::read(&link).unwrap();
    let name_len = link
        .iter()
        .position(|&b| b == 0)
        .expect("NUL in .gnu_debuglink");
    let linked_name = String::from_utf8_lossy(&link[..name_len]).into_owned();
    assert_eq!(
        linked_name,
        format!("libasyncfutex.so.{v}.debug"),
        ".gnu_debuglink names another file"
    );
    let crc_at = (name_len + 1).next_multiple_of(4);
    let linked_crc = u32::from_le_bytes(link[crc_at..crc_at + 4].try_into().unwrap());
    assert_eq!(
        linked_crc,
        crc32(&std::fs::read(&debug_file).unwrap()),
        ".gnu_debuglink's CRC does not match {}",
        debug_file.display()
    );
    let id = build_id(&real);
    assert!(
        id.is_some() && id == build_id(&debug_file),
        "build IDs differ: {id:?} vs {:?}",
        build_id(&debug_file)
    );
    // gdb (optional here) finds the debug file by itself, in .debug/ next
    // to the library: it then knows the source lines.
    match Command::new("gdb")
        .args(["-nx", "-batch", "-ex", "info line afx_wake"])
        .arg(&real)
        .output()
    {
        Ok(out) if out.status.success() => {
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                said.contains("Line ") && said.contains(".rs\""),
                "gdb finds no line information for afx_wake in the installed library \
                 (it should load {}):\n{said}{}",
                debug_file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("install: gdb: {}", said.lines().last().unwrap_or("").trim());
        }
        _ => eprintln!(
            "install: gdb not installed: skipping the check that gdb loads the debug file \
             (the debuglink's name and CRC were checked above)"
        ),
    }
    let archive_sections = section_names(&libdir.join("libasyncfutex.a"));
    assert!(
        !archive_sections.contains(".debug_info") && archive_sections.contains(".symtab"),
        "libasyncfutex.a must keep its symbols and carry no .debug_info: {archive_sections:?}"
    );
    eprintln!(
        "install: libasyncfutex.so.{v} is {} bytes, no .debug_info; {} ({} bytes) linked by CRC",
        real.metadata().unwrap().len(),
        debug_file.file_name().unwrap().to_string_lossy(),
        debug_file.metadata().unwrap().len()
    );

    // ---- pkg-config ------------------------------------------------------------
    let pkg_config = |args: &[&str]| {
        let mut cmd = Command::new("pkg-config");
        cmd.args(args)
            .env("PKG_CONFIG_PATH", libdir.join("pkgconfig"))
            .env("PKG_CONFIG_SYSROOT_DIR", &stage);
        stdout_of(&mut cmd, &format!("pkg-config {}", args.join(" ")))
    };
    assert_eq!(pkg_config(&["--modversion", "asyncfutex"]).trim(), v);
    let flags = pkg_config(&["--cflags", "--libs", "asyncfutex"]);
    eprintln!(
        "install: pkg-config --cflags --libs asyncfutex: {}",
        flags.trim()
    );
    assert!(
        flags.contains(&format!("-I{}", includedir.display()))
            && flags.contains(&format!("-L{}", libdir.display()))
            && flags.contains("-lasyncfutex"),
        "unexpected pkg-config flags: {flags}"
    );
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let rpath = format!("-Wl,-rpath,{}", libdir.display());
    let test_dir = manifest_dir().join("packaging").join("test");
    for (compiler, source, std, tag) in [
        (&cc, "smoke.c", "-std=c11", "c"),
        (&cxx, "smoke.cpp", "-std=c++17", "c++"),
        (&cxx, "smoke_hpp.cpp", "-std=c++17", "hpp"),
    ] {
        let output = work.join(format!("pkgconfig-{source}.out"));
        run(
            Command::new(compiler)
                .args([std, "-Wall", "-Wextra", "-Werror"])
                .arg(test_dir.join(source))
                .arg("-o")
                .arg(&output)
                .args(&flags)
                .arg(&rpath),
            &format!("compiling {source} with pkg-config flags"),
        );
        let needed = stdout_of(Command::new("readelf").arg("-d").arg(&output), "readelf -d");
        assert!(
            needed.contains(&format!("Shared library: [libasyncfutex.so.{m}]")),
            "{source} must need libasyncfutex.so.{m}:\n{needed}"
        );
        run_smoke(&output, &libdir, tag, Linkage::Shared);
    }

    // Fully static, as a C user would: cc app.c -static $(pkg-config --static ...).
    let static_flags = pkg_config(&["--static", "--cflags", "--libs", "asyncfutex"]);
    eprintln!(
        "install: pkg-config --static --cflags --libs asyncfutex: {}",
        static_flags.trim()
    );
    assert!(
        !static_flags.contains("-lgcc_s"),
        "Libs.private names -lgcc_s, which has no static archive: {static_flags}"
    );
    let output = work.join("pkgconfig-static-smoke.c.out");
    run(
        Command::new(&cc)
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
            .arg(test_dir.join("smoke.c"))
            .arg("-o")
            .arg(&output)
            .arg("-static")
            .args(static_flags.split_whitespace()),
        "compiling smoke.c with -static and pkg-config --static flags (needs libc6-dev's libc.a)",
    );
    run_smoke(&output, &libdir, "c", Linkage::FullyStatic);

    // ---- CMake -------------------------------------------------------------------
    let build = work.join("cmake-build");
    run(
        Command::new("cmake")
            .arg("-S")
            .arg(&test_dir)
            .arg("-B")
            .arg(&build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", root.display()))
            .arg(format!("-DAFX_REQUIRE_VERSION={v}"))
            .env("CC", &cc)
            .env("CXX", &cxx),
        "cmake configure",
    );
    let cache = std::fs::read_to_string(build.join("CMakeCache.txt")).unwrap();
    let found_at = format!(
        "asyncfutex_DIR:PATH={}",
        libdir.join("cmake/asyncfutex").display()
    );
    assert!(
        cache.lines().any(|l| l == found_at),
        "CMake did not find the staged package ({found_at}); cache says: {:?}",
        cache.lines().find(|l| l.starts_with("asyncfutex_DIR"))
    );
    run(
        Command::new("cmake").arg("--build").arg(&build),
        "cmake --build",
    );
    for (program, tag, linkage) in [
        ("smoke_c", "c", Linkage::Shared),
        ("smoke_cpp", "c++", Linkage::Shared),
        ("smoke_c_static", "c", Linkage::Static),
        ("smoke_c_fully_static", "c", Linkage::FullyStatic),
        ("smoke_hpp", "hpp", Linkage::Shared),
        ("smoke_hpp_static", "hpp", Linkage::Static),
    ] {
        run_smoke(&build.join(program), &libdir, tag, linkage);
    }

    // The next major version is a different ABI: CMake must refuse it.
    let next_major: u32 = m.parse::<u32>().unwrap() + 1;
    let refused = Command::new("cmake")
        .arg("-S")
        .arg(&test_dir)
        .arg("-B")
        .arg(work.join("cmake-next-major"))
        .arg(format!("-DCMAKE_PREFIX_PATH={}", root.display()))
        .arg(format!("-DAFX_REQUIRE_VERSION={next_major}.0"))
        .output()
        .expect("cmake runs");
    assert!(
        !refused.status.success(),
        "find_package(asyncfutex {next_major}.0) accepted version {v}"
    );

    // ---- uninstall ---------------------------------------------------------------
    let mut uninstall = install_sh(&stage);
    uninstall.arg("--uninstall");
    run(&mut uninstall, "packaging/install.sh --uninstall");
    let left = tree(&stage);
    assert!(left.is_empty(), "uninstall left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&work);
}
