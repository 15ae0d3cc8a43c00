//! [`SharedMemory`]: a mapping of memory shared between processes, which
//! futex handles made from it keep alive.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use crate::futex::{AsyncFutex, Scope};
use crate::sys::shm;

/// A `MAP_SHARED` read-write mapping: anonymous (shared with `fork`
/// children), a memfd (shareable by passing its fd), or a POSIX shared
/// memory object (`shm_open`, shareable by name).
///
/// Wrap it in an `Arc` and make handles with [`futex`](Self::futex): they
/// keep the mapping alive. The memory starts zeroed.
///
/// # Example
/// Memory inherited across `fork`: the child stores and wakes, the parent
/// waits.
///
/// ```
/// use std::sync::atomic::Ordering;
/// use std::sync::Arc;
/// use asyncfutex::SharedMemory;
///
/// # fn main() -> std::io::Result<()> {
/// let mem = Arc::new(SharedMemory::memfd("example", 4096)?);
/// let futex = mem.futex(0)?;
/// // SAFETY: the child only stores, wakes and `_exit`s.
/// match unsafe { libc::fork() } {
///     -1 => return Err(std::io::Error::last_os_error()),
///     0 => {
///         futex.word().store(1, Ordering::Release);
///         let woken = futex.wake(1).is_ok();
///         // SAFETY: leaves the child without running the parent's destructors.
///         unsafe { libc::_exit(if woken { 0 } else { 1 }) };
///     }
///     child => {
///         while futex.word().load(Ordering::Acquire) == 0 {
///             futex.wait(0, None)?;
///         }
///         let mut status = 0;
///         // SAFETY: waits for our own child.
///         while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
///             let e = std::io::Error::last_os_error();
///             if e.kind() != std::io::ErrorKind::Interrupted {
///                 return Err(e);
///             }
///         }
///         assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is plain shared memory; the crate only accesses it
// through atomics, and users get `&AtomicU32` views only.
unsafe impl Send for SharedMemory {}
// SAFETY: as above.
unsafe impl Sync for SharedMemory {}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("fd", &self.fd)
            .finish()
    }
}

fn name_of(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

impl SharedMemory {
    /// Anonymous shared memory of `len` bytes, inherited by `fork` children.
    ///
    /// # Errors
    /// `EINVAL` for `len == 0`, `ENOMEM`.
    pub fn anonymous(len: usize) -> io::Result<SharedMemory> {
        let ptr = shm::map_shared(None, len)?;
        Ok(SharedMemory { ptr, len, fd: None })
    }

    /// A new memfd of `len` bytes (`memfd_create(2)`, close-on-exec). Share
    /// it by passing [`fd`](Self::fd) to another process (inheritance
    /// without `CLOEXEC`, or `SCM_RIGHTS`); the other side uses
    /// [`from_fd`](Self::from_fd).
    ///
    /// The memfd is sealed against shrinking (`F_SEAL_SHRINK`): no process
    /// holding its fd can `ftruncate` it below `len` (`EPERM`), so a
    /// mapping never loses the pages its futex words live in. It may still
    /// grow.
    ///
    /// # Errors
    /// `EINVAL` for a name with NUL or `len == 0`; `memfd_create`,
    /// `ftruncate`, `fcntl(F_ADD_SEALS)` and `mmap` errors.
    pub fn memfd(name: &str, len: usize) -> io::Result<SharedMemory> {
        let fd = shm::memfd_create(&name_of(name)?)?;
        shm::set_len(fd.as_fd(), len)?;
        shm::seal_shrink(fd.as_fd())?;
        Self::map(fd, len)
    }

    /// Creates a POSIX shared memory object `name` (like `"/myapp"`) of
    /// `len` bytes with owner-only permissions (0600). Fails with `EEXIST`
    /// if it exists (`O_EXCL`): pick a fresh name or [`unlink`](Self::unlink)
    /// the stale one. The object outlives the process until unlinked.
    ///
    /// # Truncation by a peer
    /// A POSIX shared memory object cannot be sealed: any process that can
    /// open it read-write may `ftruncate` it. Shrinking it takes the pages
    /// past the new end away from every mapping, this one included (the
    /// mapping keeps its length). Then, for a word past the new end:
    /// - any access to it raises `SIGBUS` — in this process that includes
    ///   the library's own read of the word when a wait is armed
    ///   (`wait_async`, `EventFdFutex::arm`, `afx_wait_async`);
    /// - `futex(2)` calls on it fail with `EFAULT`: `wake`, a blocking
    ///   `wait`, and a kernel wait a backend queues afresh (which then
    ///   completes with `EFAULT`);
    /// - a wait already queued in the kernel stays queued and cannot be
    ///   woken through the word until the object grows back over it (the
    ///   page then reads as zeros).
    ///
    /// (Checked on Linux 6.18 by `shared_memory_named_truncated_by_peer` in
    /// `tests/async_semantics.rs`.) Use [`memfd`](Self::memfd), which is
    /// sealed against shrinking, when peers are not trusted with the size.
    ///
    /// # Errors
    /// `EEXIST`, `EACCES`, `EINVAL`, and `mmap` errors.
    pub fn create(name: &str, len: usize) -> io::Result<SharedMemory> {
        Self::create_with_mode(name, len, 0o600)
    }

    /// [`create`](Self::create) with explicit permission bits (e.g. `0o660`
    /// to share with a group).
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn create_with_mode(name: &str, len: usize, mode: u32) -> io::Result<SharedMemory> {
        let cname = name_of(name)?;
        let fd = shm::shm_open(
            &cname,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            mode as libc::mode_t,
        )?;
        if let Err(e) = shm::set_len(fd.as_fd(), len) {
            let _ = shm::shm_unlink(&cname);
            return Err(e);
        }
        Self::map(fd, len).inspect_err(|_| {
            let _ = shm::shm_unlink(&cname);
        })
    }

    /// Opens an existing POSIX shared memory object and maps all of it.
    /// Another process may shrink it under the mapping: see "Truncation by
    /// a peer" at [`create`](Self::create).
    ///
    /// # Errors
    /// `ENOENT` if it does not exist, `EACCES`, `mmap` errors.
    pub fn open(name: &str) -> io::Result<SharedMemory> {
        let fd = shm::shm_open(&name_of(name)?, libc::O_RDWR, 0)?;
        Self::from_fd(fd)
    }

    /// Removes the name of a POSIX shared memory object; mappings stay valid.
    ///
    /// # Errors
    /// `ENOENT` if there is no such object.
    pub fn unlink(name: &str) -> io::Result<()> {
        shm::shm_unlink(&name_of(name)?)
    }

    /// Maps all of a shared memory fd (a memfd or `shm_open` object received
    /// from another process).
    ///
    /// # Errors
    /// `EINVAL` for an empty object; `fstat`/`mmap` errors.
    pub fn from_fd(fd: OwnedFd) -> io::Result<SharedMemory> {
        let len = shm::len_of(fd.as_fd())?;
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedMemory> {
        let ptr = shm::map_shared(Some(fd.as_fd()), len)?;
        Ok(SharedMemory {
            ptr,
            len,
            fd: Some(fd),
        })
    }

    /// The size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true: empty mappings are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The 32-bit word at `index` (byte offset `4 * index`), or `None` past
    /// the end.
    pub fn word(&self, index: usize) -> Option<&AtomicU32> {
        let end = index.checked_add(1)?.checked_mul(4)?;
        if end > self.len {
            return None;
        }
        // SAFETY: in bounds; the mapping is page-aligned so every 4-byte
        // offset is aligned; it lives as long as `self`.
        Some(unsafe { &*self.ptr.as_ptr().cast::<AtomicU32>().add(index) })
    }

    /// A futex handle on word `index` with a shared key, keeping this
    /// mapping alive.
    ///
    /// # Errors
    /// `EINVAL` if `index` is out of bounds; backend start-up errors.
    pub fn futex(self: &Arc<Self>, index: usize) -> io::Result<AsyncFutex> {
        if self.word(index).is_none() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        AsyncFutex::with_owner(Arc::clone(self), Scope::Shared, move |mem| {
            mem.word(index).expect("index checked above")
        })
    }

    /// The backing fd (`None` for anonymous memory).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: our own mapping; handles keep `self` alive while in use.
        unsafe { shm::unmap(self.ptr, self.len) };
    }
}
