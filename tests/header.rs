//! The committed C header must be exactly what cbindgen generates from the
//! source, and its version macros must match Cargo.toml.

use std::ffi::CStr;

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/asyncfutex.h"));
const COMMITTED: &str = include_str!("../include/asyncfutex.h");

#[test]
fn header_is_current() {
    assert!(
        GENERATED == COMMITTED,
        "include/asyncfutex.h is stale: regenerate it with `AFX_UPDATE_HEADER=1 cargo build` and commit it"
    );
}

#[test]
fn version_macros_match_cargo_toml() {
    let version = format!(
        "{}.{}.{}",
        asyncfutex::ffi::AFX_VERSION_MAJOR,
        asyncfutex::ffi::AFX_VERSION_MINOR,
        asyncfutex::ffi::AFX_VERSION_PATCH
    );
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let number: u32 = [
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    ]
    .iter()
    .map(|part| part.parse::<u32>().expect("numeric version part"))
    .fold(0, |acc, part| acc * 100 + part);
    assert_eq!(asyncfutex::ffi::AFX_VERSION_NUMBER, number);
    assert!(
        COMMITTED.contains("#define AFX_VERSION_NUMBER "),
        "header lacks AFX_VERSION_NUMBER"
    );
    // SAFETY: afx_version returns a static NUL-terminated string.
    let runtime = unsafe { CStr::from_ptr(asyncfutex::ffi::afx_version()) };
    assert_eq!(runtime.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn fixed_c_names_are_in_the_header() {
    for name in [
        "typedef struct afx_t afx_t;",
        "#define AFX_PRIVATE 1",
        "afx_t *afx_new(uint32_t *addr, uint32_t flags);",
        "void afx_free(afx_t *f);",
        "int afx_wake(afx_t *f, uint32_t n);",
        "int afx_wait(afx_t *f, uint32_t expected, int64_t timeout_ns);",
        "int afx_eventfd(const afx_t *f);",
        "int afx_wait_async(afx_t *f, uint32_t expected);",
        "int afx_ack(afx_t *f);",
        "int afx_cancel(afx_t *f);",
        "const char *afx_strerror(int err);",
        "extern \"C\" {",
    ] {
        assert!(COMMITTED.contains(name), "header lacks `{name}`");
    }
}
