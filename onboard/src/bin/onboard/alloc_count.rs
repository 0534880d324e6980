//! The binary's global allocator: the system allocator, counting allocations for the
//! per-image figures of `onboard bench`, and serving over-aligned requests (alignment above
//! 16 bytes, as tract's tensors ask) from plain `malloc` with the alignment done here. glibc's
//! `posix_memalign` path fragments its heap under tract's allocation pattern until the
//! resident set grows without bound; plain `malloc` blocks are reused.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting `alloc`, `alloc_zeroed` and `realloc` calls.
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Alignment `malloc` guarantees on the targets this binary builds for (x86_64, aarch64).
const MALLOC_ALIGN: usize = 16;
/// Room kept in front of an over-aligned block for the address `malloc` returned.
const HEADER: usize = std::mem::size_of::<usize>();

/// The `malloc` layout backing an over-aligned `layout`: enough for the header, the worst-case
/// alignment padding and the block.
fn backing(layout: Layout) -> Option<Layout> {
    let size = layout
        .size()
        .checked_add(layout.align())?
        .checked_add(HEADER)?;
    Layout::from_size_align(size, MALLOC_ALIGN).ok()
}

/// Allocates `layout` (alignment above [`MALLOC_ALIGN`]) inside a larger `malloc` block and
/// records that block's address just before the returned pointer.
///
/// # Safety
/// `layout` has a non-zero size, as `GlobalAlloc::alloc` requires.
unsafe fn alloc_over_aligned(layout: Layout, zeroed: bool) -> *mut u8 {
    let Some(outer) = backing(layout) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `outer` has a non-zero size.
    let raw = unsafe {
        if zeroed {
            System.alloc_zeroed(outer)
        } else {
            System.alloc(outer)
        }
    };
    if raw.is_null() {
        return raw;
    }
    let addr = raw as usize;
    let aligned = (addr + HEADER + layout.align() - 1) & !(layout.align() - 1);
    // SAFETY: `aligned - HEADER >= addr` and `aligned + layout.size() <= addr + outer.size()`,
    // so both the header slot and the block lie inside `raw`'s allocation; the header slot is
    // `usize`-aligned because `aligned` is a multiple of an alignment above 16.
    unsafe {
        let block = raw.add(aligned - addr);
        block.sub(HEADER).cast::<usize>().write(addr);
        block
    }
}

/// Frees a block from [`alloc_over_aligned`].
///
/// # Safety
/// `ptr` came from [`alloc_over_aligned`] with this `layout`.
unsafe fn dealloc_over_aligned(ptr: *mut u8, layout: Layout) {
    if let Some(outer) = backing(layout) {
        // SAFETY: the header before `ptr` holds the `malloc` address of its block.
        unsafe {
            let raw = ptr.sub(HEADER).cast::<usize>().read() as *mut u8;
            System.dealloc(raw, outer);
        }
    }
}

// SAFETY: requests `malloc` can align are forwarded unchanged to `System`, which upholds
// `GlobalAlloc`'s contract; over-aligned ones get a block inside a larger `System` allocation
// (see `alloc_over_aligned`), freed through the address stored in front of it. The counter is
// a relaxed atomic and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if layout.align() > MALLOC_ALIGN {
            // SAFETY: same contract as this method.
            return unsafe { alloc_over_aligned(layout, false) };
        }
        // SAFETY: same contract as this method.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if layout.align() > MALLOC_ALIGN {
            // SAFETY: same contract as this method.
            return unsafe { alloc_over_aligned(layout, true) };
        }
        // SAFETY: same contract as this method.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if layout.align() > MALLOC_ALIGN {
            let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
                return std::ptr::null_mut();
            };
            // SAFETY: `new` has a non-zero size (realloc's contract); the old block is valid
            // for `layout.size()` bytes and the new one for `new_size`.
            unsafe {
                let fresh = alloc_over_aligned(new, false);
                if !fresh.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                    dealloc_over_aligned(ptr, layout);
                }
                return fresh;
            }
        }
        // SAFETY: same contract as this method.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() > MALLOC_ALIGN {
            // SAFETY: over-aligned blocks all come from `alloc_over_aligned`.
            return unsafe { dealloc_over_aligned(ptr, layout) };
        }
        // SAFETY: same contract as this method.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations so far in this process.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_aligned_blocks_are_aligned_writable_and_survive_realloc() {
        for align in [32usize, 64, 128, 4096] {
            for size in [1usize, 31, 4096, 300_000] {
                let layout = Layout::from_size_align(size, align).unwrap_or_else(|e| panic!("{e}"));
                // SAFETY: non-zero size; every block is freed with the layout it was made with.
                unsafe {
                    let p = Counting.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{align} {size}"
                    );
                    std::ptr::write_bytes(p, 0xA5, size);
                    let q = Counting.realloc(p, layout, size * 2);
                    assert!(!q.is_null() && (q as usize).is_multiple_of(align));
                    assert!(
                        (0..size).all(|i| *q.add(i) == 0xA5),
                        "realloc kept the bytes"
                    );
                    let grown = Layout::from_size_align(size * 2, align).unwrap_or(layout);
                    Counting.dealloc(q, grown);
                    let z = Counting.alloc_zeroed(layout);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    Counting.dealloc(z, layout);
                }
            }
        }
    }
}
