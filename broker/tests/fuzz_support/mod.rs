//! Shared by the fuzz targets: a measuring allocator and the case count.
//!
//! The allocator is why this needs `unsafe`: to assert that a decoder never sizes a buffer
//! from a number it was told rather than bytes it was given, the test must see every
//! allocation request. It forwards to the system allocator and remembers, per thread, the
//! largest single request since the last [`largest_allocation`] call. Per thread, because
//! the test harness runs tests in parallel. A request the system cannot serve still aborts
//! the test binary, which is a failure too, just a less readable one.
#![allow(unsafe_code)]
#![allow(dead_code)] // each fuzz target uses a different part

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Measuring;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown, after the slot is gone, are not ours.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded to `System` with the caller's arguments; the only extra
// work is a thread-local write that does not allocate.
unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the largest single allocation it asked for.
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|largest| largest.set(0));
    let result = f();
    (result, LARGEST.with(Cell::get))
}

/// Cases per fuzz target: small by default so `cargo test` stays quick on two cores;
/// `STRATA_FUZZ_CASES=1000000` for a long run.
pub fn cases(default: u32) -> u32 {
    match std::env::var("STRATA_FUZZ_CASES") {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("STRATA_FUZZ_CASES={value:?} is not a number")),
        Err(_) => default,
    }
}
