//! `host_mem`: large allocations through `HugePageAlloc` are backed by transparent huge pages
//! (`AnonHugePages` in `/proc/self/smaps`), and the same allocation through the plain system
//! allocator is not where THP is `madvise`-only, so the check can tell the two apart.

use kiln_runtime::host_mem::{advise_huge, anon_huge_bytes, thp_mode, HugePageAlloc, HUGE_PAGE_BYTES};

#[global_allocator]
static ALLOC: HugePageAlloc = HugePageAlloc;

const BYTES: usize = 64 << 20;

/// The THP mode, or `None` (with a loud note) where huge pages cannot be checked here.
fn checkable() -> Option<String> {
    match thp_mode() {
        Some(mode) if mode != "never" => Some(mode),
        other => {
            eprintln!("SKIPPED: transparent huge pages are {other:?} on this machine; nothing to check");
            None
        }
    }
}

/// Fills `len` bytes at `ptr` with a non-zero pattern (the first touch) and returns the huge-page
/// bytes of the mapping that holds the buffer's middle.
fn touch_and_measure(ptr: *mut u8, len: usize) -> u64 {
    // SAFETY: `ptr` is a live allocation of `len` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    let sum: u64 = buf.iter().step_by(4096).map(|&b| b as u64).sum();
    assert!(sum > 0, "the buffer was written");
    anon_huge_bytes(ptr as usize + len / 2).expect("/proc/self/smaps lists the buffer's mapping")
}

/// A private anonymous mapping of `len` bytes, untouched.
fn map(len: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping; no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED, "mmap of {len} bytes");
    ptr as *mut u8
}

fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: `ptr` came from `map(len)` and is no longer used.
    unsafe { libc::munmap(ptr as *mut libc::c_void, len) };
}

#[test]
fn large_vectors_get_huge_pages() {
    let Some(mode) = checkable() else { return };
    let v: Vec<u8> = vec![7; BYTES];
    let huge = anon_huge_bytes(v.as_ptr() as usize + BYTES / 2).expect("smaps lists the vector's mapping");
    // Faults are served with huge pages only when the kernel finds free 2 MiB frames; on a
    // fragmented machine a few may fall back, never all of them.
    assert!(huge >= HUGE_PAGE_BYTES as u64, "THP {mode}: a {BYTES}-byte vector has only {huge} bytes of huge pages");
    assert_eq!(v[BYTES - 1], 7);
}

#[test]
fn large_zeroed_vectors_get_huge_pages_and_are_zero() {
    let Some(mode) = checkable() else { return };
    let v: Vec<u32> = vec![0; BYTES / 4];
    assert_eq!(v.as_ptr() as usize % HUGE_PAGE_BYTES, 0, "large buffers start on a huge page");
    let huge = anon_huge_bytes(v.as_ptr() as usize + BYTES / 2).expect("smaps lists the vector's mapping");
    assert!(
        huge >= HUGE_PAGE_BYTES as u64,
        "THP {mode}: a zeroed {BYTES}-byte vector has only {huge} bytes of huge pages"
    );
    assert!(v.iter().step_by(1021).all(|&x| x == 0));
}

#[test]
fn the_advice_must_come_before_the_first_touch() {
    let Some(mode) = checkable() else { return };
    if mode != "madvise" {
        eprintln!("SKIPPED: THP is `{mode}`, so unadvised memory may get huge pages too");
        return;
    }
    // Fresh mappings of their own, so that smaps reports each buffer alone (the C library may
    // serve large allocations from one heap mapping after earlier frees).
    let plain = map(BYTES);
    let plain_huge = touch_and_measure(plain, BYTES);
    let advised = map(BYTES);
    advise_huge(advised, BYTES);
    let advised_huge = touch_and_measure(advised, BYTES);
    unmap(plain, BYTES);
    unmap(advised, BYTES);
    assert!(
        advised_huge >= HUGE_PAGE_BYTES as u64,
        "advised before the first touch, {advised_huge} bytes of huge pages"
    );
    assert!(advised_huge > plain_huge, "unadvised {plain_huge} bytes vs advised {advised_huge} bytes of huge pages");
}

#[test]
fn small_allocations_are_left_alone() {
    // Below one huge page there is no aligned interior to advise; the call must be harmless.
    let mut v = vec![1u8; HUGE_PAGE_BYTES - 1];
    advise_huge(v.as_mut_ptr(), v.len());
    advise_huge(std::ptr::null_mut(), BYTES);
    assert!(v.iter().all(|&b| b == 1));
}

#[test]
fn growing_into_and_shrinking_out_of_a_large_buffer_keeps_the_contents() {
    // Small → large → small again: each step crosses the size where the allocator over-aligns,
    // so the block changes layout and must be copied and freed with the layout it came with.
    let small = 4096;
    let mut v: Vec<u32> = (0..small as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let large = 3 << 20;
    v.reserve_exact(large - v.len());
    assert!(v.capacity() >= large);
    assert_eq!(v.as_ptr() as usize % HUGE_PAGE_BYTES, 0, "a large block starts on a huge-page boundary");
    v.extend((small as u32..large as u32).map(|i| i ^ 0x5a5a_5a5a));
    v.truncate(small);
    v.shrink_to_fit();
    assert!(v.capacity() < large);
    for (i, x) in v.iter().enumerate() {
        assert_eq!(*x, (i as u32).wrapping_mul(2_654_435_761), "element {i} after the round trip");
    }
}
