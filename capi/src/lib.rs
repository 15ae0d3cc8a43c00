//! The C library of asyncfutex, `libasyncfutex.so` and `libasyncfutex.a`.
//!
//! Its functions (`afx_*`) live in the core crate's `ffi` module, built
//! there with the `capi` feature (which also generates the header,
//! `include/asyncfutex.h`); re-exporting them here makes them the exported
//! symbols of this cdylib and staticlib. The SONAME is set by `build.rs`.
pub use asyncfutex_core::ffi::*;
