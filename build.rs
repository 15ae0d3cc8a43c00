//! With the `capi` feature (enabled by the `capi/` crate, which builds the
//! C library), generates the C header from `src/ffi/` with cbindgen into
//! `OUT_DIR`. Without it (a Rust user's build) it does nothing, and
//! cbindgen is not even compiled.
//!
//! A normal build never touches tracked files: the committed
//! `include/asyncfutex.h` is compared with the fresh one by the
//! `header_is_current` test. Set `AFX_UPDATE_HEADER=1` to rewrite it.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "capi")]
    header::generate();
}

#[cfg(feature = "capi")]
mod header {
    use std::path::PathBuf;

    pub fn generate() {
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
        bindings.write_to_file(out_dir.join("asyncfutex.h"));
        if std::env::var_os("AFX_UPDATE_HEADER").is_some_and(|v| v == "1") {
            bindings.write_to_file(crate_dir.join("include/asyncfutex.h"));
        }
    }
}
