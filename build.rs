//! Generates the C header from `src/ffi/` with cbindgen into `OUT_DIR`.
//!
//! A normal build never touches tracked files: the committed
//! `include/asyncfutex.h` is compared with the fresh one by the
//! `header_is_current` test. Set `AFX_UPDATE_HEADER=1` to rewrite it.
//!
//! It also gives `libasyncfutex.so` the SONAME `libasyncfutex.so.<major>`
//! (the ABI major version; see "ABI policy" in README.md) and puts a
//! `libasyncfutex.so.<major> -> libasyncfutex.so` link beside the built
//! library, so programs linked against `target/<profile>/libasyncfutex.so`
//! (which then record `libasyncfutex.so.<major>` as needed) also run from
//! there. `packaging/install.sh` installs the real file and links.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=AFX_UPDATE_HEADER");
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    let generated = out_dir.join("asyncfutex.h");
    bindings.write_to_file(&generated);
    if std::env::var_os("AFX_UPDATE_HEADER").is_some_and(|v| v == "1") {
        bindings.write_to_file(crate_dir.join("include/asyncfutex.h"));
    }
    soname(&out_dir);
}

/// Sets the cdylib's SONAME and links `libasyncfutex.so.<major>` to the
/// library in the profile directory (and `deps/`). The link is created
/// before the library exists (build scripts run before linking), dangles
/// until then, and is relative, so it survives moving the target directory.
fn soname(out_dir: &Path) {
    // For 0.x the ABI major is 0: `libasyncfutex.so.0`.
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
    let soname = format!("libasyncfutex.so.{major}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");

    // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>-<hash>/out. With
    // another layout (e.g. a separate `build.build-dir`) the link is not made
    // or lands beside the intermediate files only; install.sh needs none.
    let Some(build) = out_dir.parent().and_then(Path::parent) else {
        return;
    };
    let Some(profile_dir) = build.parent() else {
        return;
    };
    if build.file_name() != Some(std::ffi::OsStr::new("build"))
        || !profile_dir.join("deps").is_dir()
    {
        return;
    }
    for dir in [profile_dir.to_path_buf(), profile_dir.join("deps")] {
        let link = dir.join(&soname);
        let target = Path::new("libasyncfutex.so");
        match std::fs::read_link(&link) {
            Ok(existing) if existing == target => continue,
            // A symlink of ours pointing elsewhere: replace it.
            Ok(_) => {
                let _ = std::fs::remove_file(&link);
            }
            // A real file of that name is someone else's: leave it.
            Err(_) if link.symlink_metadata().is_ok() => {
                println!(
                    "cargo:warning={} exists and is not a symlink; not replacing it",
                    link.display()
                );
                continue;
            }
            Err(_) => {}
        }
        if let Err(e) = std::os::unix::fs::symlink(target, &link) {
            println!("cargo:warning=cannot create {}: {e}", link.display());
        }
    }
}
