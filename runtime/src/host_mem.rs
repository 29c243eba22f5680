//! Large host buffers on transparent huge pages.
//!
//! Where transparent huge pages are `madvise`-only (`/sys/kernel/mm/transparent_hugepage/enabled`
//! reads `[madvise]`), anonymous memory gets 4 KiB pages unless the process asks. Kernels that
//! gather rows from all over a large buffer (the paged KV cache: 4 KiB runs of a KV head's rows
//! from scattered pages) then miss the TLB on nearly every run; with 2 MiB pages a whole KV page
//! and its neighbours share one entry. Streaming kernels gain less, but the benchmark's roofline
//! kernel must get the same memory as the kernels measured against it.
//!
//! [`HugePageAlloc`] is a global allocator over the system's that advises `MADV_HUGEPAGE` on the
//! 2 MiB-aligned interior of every allocation of at least [`HUGE_PAGE_BYTES`], right after the
//! system allocator returns it and **before the first touch**: the advice decides what page
//! faults allocate, so a buffer filled before the advice stays on small pages until
//! `khugepaged` gets round to it (minutes). The `kiln` and `autotune` binaries install it, so the
//! benchmark's rotated working sets, the roofline buffers, the KV-cache pool and the model's
//! weights all get huge pages without each owner asking.
//!
//! Linux only; elsewhere the advice is a no-op. The advice is a hint: a refusal (THP `never`,
//! an old kernel) leaves ordinary pages and is not an error.

use std::alloc::{GlobalAlloc, Layout, System};

/// The x86-64 and AArch64 (4 KiB granule) transparent huge page size.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// The system allocator, advising huge pages for allocations of at least [`HUGE_PAGE_BYTES`].
pub struct HugePageAlloc;

// SAFETY: every call forwards to `System` with the same arguments; the advice only changes how
// the kernel backs the returned memory, never its contents or extent.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(large(layout)) };
        advise_huge(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let aligned = large(layout);
        if aligned.align() == layout.align() {
            // Small, or aligned already: a large `calloc` is a fresh mapping that the C library
            // knows is zero and does not touch, so advising after it is still before the first
            // touch.
            let ptr = unsafe { System.alloc_zeroed(layout) };
            advise_huge(ptr, layout.size());
            return ptr;
        }
        // The system allocator zeroes over-aligned memory itself, which would be the first
        // touch: advise first, then zero.
        let ptr = unsafe { System.alloc(aligned) };
        advise_huge(ptr, layout.size());
        if !ptr.is_null() {
            unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The layout the block was allocated with: `System` requires the same one back.
        unsafe { System.dealloc(ptr, large(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if large(layout) == layout && large(new_layout) == new_layout {
            let new = unsafe { System.realloc(ptr, layout, new_size) };
            advise_huge(new, new_size);
            return new;
        }
        // Into or out of a large buffer (whose block is over-aligned): a fresh allocation with
        // the new size's layout, advised when large, then the copy.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// The layout a buffer is allocated with: large ones start on a huge-page boundary, so the huge
/// pages cover them from their first byte and rows of a power-of-two size never straddle one
/// cache line more than they need (a C library's large allocation starts 16 bytes into a page,
/// which costs a 256-byte KV row a fifth cache line). `dealloc` and `realloc` hand `System` the
/// layout the block was allocated with, as it requires.
fn large(layout: Layout) -> Layout {
    if layout.size() >= HUGE_PAGE_BYTES && layout.align() < HUGE_PAGE_BYTES {
        Layout::from_size_align(layout.size(), HUGE_PAGE_BYTES).unwrap_or(layout)
    } else {
        layout
    }
}

/// Advises huge pages for the 2 MiB-aligned interior of `[ptr, ptr + len)`, when it has one.
/// A null pointer, a short range or a refusal does nothing.
pub fn advise_huge(ptr: *mut u8, len: usize) {
    if ptr.is_null() || len < HUGE_PAGE_BYTES {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE_BYTES);
    let end = (ptr as usize + len) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if end > start {
        madvise_huge(start, end - start);
    }
}

#[cfg(target_os = "linux")]
fn madvise_huge(start: usize, len: usize) {
    // SAFETY: the range lies inside one live allocation and is page-aligned; MADV_HUGEPAGE
    // changes no contents. The result is ignored on purpose: the advice is a hint.
    unsafe {
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn madvise_huge(_start: usize, _len: usize) {}

/// The transparent huge page mode (`always`, `madvise` or `never`): the bracketed word of
/// `/sys/kernel/mm/transparent_hugepage/enabled`; `None` where the file is missing (not Linux, or
/// a kernel without THP).
pub fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

/// The bytes of the mapping that contains `addr` backed by anonymous huge pages, from
/// `/proc/self/smaps` (`AnonHugePages`); `None` where smaps cannot be read or no mapping holds
/// `addr`.
pub fn anon_huge_bytes(addr: usize) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        // A mapping's header starts with `lo-hi` in hex; its fields follow as `Name: value kB`.
        let range = line.split_whitespace().next().and_then(|first| first.split_once('-'));
        if let Some((lo, hi)) = range.filter(|_| !line.ends_with(" kB")) {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                return kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb << 10);
            }
        }
    }
    None
}
