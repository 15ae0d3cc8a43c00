//! `pthread_atfork(3)`: lets the crate forget its helper threads in a child.

use std::io;

/// Registers `child` to run in the child process after every `fork()`.
pub(crate) fn on_fork_child(child: unsafe extern "C" fn()) -> io::Result<()> {
    // SAFETY: the handler is a plain function with no captured state.
    let ret = unsafe { libc::pthread_atfork(None, None, Some(child)) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}
