//! The process allocator: the system allocator, except that very large allocations are
//! reserved lazily so that a lying length prefix in a request cannot abort the broker.
//!
//! Why this exists: the kafka-protocol decoder sizes a `Vec` from an array's length prefix
//! before reading the elements (`Vec::with_capacity(n)`). A 40-byte Metadata request that
//! claims 2^31 topics asks for ~150 GB; the system allocator refuses, and Rust aborts the
//! process on allocation failure — a remote crash. Decoding itself would fail a few bytes
//! later (the elements are not there), so the memory is never touched.
//!
//! Allocations of at least [`LAZY_THRESHOLD`] bytes are therefore served by an anonymous
//! `mmap` with `MAP_NORESERVE`: the kernel hands out address space without committing
//! memory, pages are backed only when written, and `munmap` returns them. Smaller
//! allocations, which are nearly all of them, go to the system allocator unchanged.
//! Legitimately large buffers (a big request frame, a large fetch read) work as before:
//! they are written, so they are backed. The cost of overcommitting is that real memory
//! exhaustion shows up as the OOM killer rather than an allocation error, which is what
//! the system allocator's own large mmaps do under Linux's default overcommit policy too.
//!
//! This is the only module with `unsafe` code (see `[workspace.lints]`).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size are reserved lazily.
pub const LAZY_THRESHOLD: usize = 256 * 1024 * 1024;
const PAGE: usize = 4096;

pub struct LenientAlloc;

fn lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_THRESHOLD && layout.align() <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        ptr.cast()
    }
}

// SAFETY: every pointer handed out is either from `System` (returned to `System`) or from
// `mmap` of `layout.size()` bytes (returned with `munmap` of the same size); which one is
// decided by the layout alone, which the caller must pass back unchanged.
unsafe impl GlobalAlloc for LenientAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if lazy(&layout) {
            // SAFETY: see `map`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if lazy(&layout) {
            // Anonymous mappings are zero-filled.
            // SAFETY: see `map`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy(&layout) {
            // SAFETY: `ptr` came from `map(layout.size())`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !lazy(&layout) && !lazy(&new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: allocation with a valid layout.
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are valid for the copied length and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn absurd_capacity_does_not_abort() {
        // 64 GiB of address space, never touched.
        let v: Vec<u64> = Vec::with_capacity(8 << 30);
        assert!(v.capacity() >= 8 << 30);
    }

    #[test]
    fn large_buffers_grow_and_keep_their_content() {
        let mut v = vec![7u8; super::LAZY_THRESHOLD - 8];
        v.extend_from_slice(&[9u8; 64]);
        assert_eq!(v[0], 7);
        assert_eq!(v[v.len() - 1], 9);
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, vec![7u8; 10]);
    }
}
