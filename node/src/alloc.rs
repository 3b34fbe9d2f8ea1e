//! The allocator every Keel process uses: the system allocator, except that very large blocks
//! reserve address space instead of memory.
//!
//! Why: the `kafka-protocol` crate (0.18) sizes a decoded array by the element count the
//! request claims (`Vec::with_capacity(count)`) before it reads a single element. A 14-byte
//! Metadata request claiming 2^31 - 1 topics asks for about 150 GiB; the system allocator
//! refuses, and Rust *aborts* the process — no panic, nothing to catch (docs/fuzzing.md,
//! finding 3). Served from an anonymous `MAP_NORESERVE` mapping, such a block costs nothing
//! until touched; the decoder fails at the first element the frame does not hold (a frame is at
//! most `socket.request.max.bytes`), and the block is unmapped. Blocks below
//! [`RESERVE_THRESHOLD`] come from the system allocator as usual.
//!
//! Install it with `#[global_allocator] static ALLOC: ReservingAllocator = ReservingAllocator;`
//! in every binary that decodes Kafka requests (the `keel` binary, the Kafka tests, the fuzz
//! target).

use std::alloc::GlobalAlloc;
use std::alloc::Layout;
use std::alloc::System;
use std::ptr::null_mut;

/// Blocks at least this large are reserved rather than allocated.
pub const RESERVE_THRESHOLD: usize = 1 << 30;
/// Mappings are page-aligned; larger alignments go to the system allocator.
const PAGE: usize = 4096;

pub struct ReservingAllocator;

fn reserved(layout: &Layout) -> bool {
    cfg!(unix) && layout.size() >= RESERVE_THRESHOLD && layout.align() <= PAGE
}

#[cfg(unix)]
unsafe fn reserve(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; failure
    // is reported as MAP_FAILED, turned into null (allocation failure) here.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED { null_mut() } else { p.cast() }
}

#[cfg(not(unix))]
unsafe fn reserve(_size: usize) -> *mut u8 {
    null_mut()
}

#[cfg(unix)]
unsafe fn release(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr`/`size` are exactly a mapping made by `reserve` (the caller's layout is the
    // one it was allocated with, as `GlobalAlloc` requires).
    unsafe {
        libc::munmap(ptr.cast(), size);
    }
}

#[cfg(not(unix))]
unsafe fn release(_ptr: *mut u8, _size: usize) {}

// SAFETY: every block is either a fresh anonymous mapping of at least `layout.size()` bytes,
// page-aligned (so aligned for any `layout.align() <= PAGE`) and zero-filled, released with the
// same size; or comes from, and returns to, `System` with the same layout. Which one is decided
// by the layout alone, which the caller passes unchanged to `dealloc`/`realloc`.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) { unsafe { reserve(layout.size()) } } else { unsafe { System.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Anonymous mappings are zero-filled.
        if reserved(&layout) { unsafe { reserve(layout.size()) } } else { unsafe { System.alloc_zeroed(layout) } }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if reserved(&layout) { unsafe { release(ptr, layout.size()) } } else { unsafe { System.dealloc(ptr, layout) } }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else { return null_mut() };
        if !reserved(&layout) && !reserved(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the new block is valid for `new_size` bytes, the old for `layout.size()`; they
        // are distinct allocations, so the copy does not overlap.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_blocks_are_reserved_and_released_small_ones_are_ordinary() {
        let a = ReservingAllocator;
        let huge = Layout::from_size_align(200 << 30, 8).expect("layout");
        // SAFETY: layouts are non-zero; every block is freed with the layout it was made with.
        unsafe {
            let p = a.alloc(huge);
            assert!(!p.is_null(), "200 GiB of address space is reserved");
            *p = 7; // touching one page commits only that page
            assert_eq!(*p, 7);
            a.dealloc(p, huge);
            let small = Layout::from_size_align(64, 8).expect("layout");
            let q = a.alloc_zeroed(small);
            assert!(!q.is_null() && *q == 0);
            let q = a.realloc(q, small, 128);
            assert!(!q.is_null());
            a.dealloc(q, Layout::from_size_align(128, 8).expect("layout"));
        }
    }
}
