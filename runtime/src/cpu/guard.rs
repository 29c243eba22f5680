//! Guarded buffers: a check that generated code reads and writes only inside its buffers.
//!
//! With `KILN_GUARD_BUFFERS` set in the environment, every launch on a [`super::CpuDevice`]
//! runs on copies of its buffers, each placed against an inaccessible page: `end` (or `1`)
//! puts the copy's last byte right before the page, so a read or write one element past the
//! buffer faults; `start` puts its first byte right after the page, so one element before it
//! faults. The copies are written back after the launch. A fault stops the process with
//! `SIGSEGV`, which a test run reports as a crash of that test: loud, and pointing at the
//! kernel that overran. Plain heap buffers would let such an access read a neighbour's bytes
//! unnoticed (`bash scripts/test.sh` runs the CPU conformance suite and the renderer's tests
//! both ways).
//!
//! This is for tests: each launch maps, copies and unmaps its buffers.

use std::ffi::c_void;

/// Which side of each buffer the guard page lies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardSide {
    /// Right after the buffer's last byte: catches over-reads and over-writes.
    End,
    /// Right before the buffer's first byte: catches accesses below the start.
    Start,
}

impl GuardSide {
    /// The side `KILN_GUARD_BUFFERS` asks for: `None` when unset or empty.
    pub fn from_env() -> Result<Option<GuardSide>, String> {
        Self::parse(std::env::var("KILN_GUARD_BUFFERS").ok().as_deref())
    }

    /// The side a value of `KILN_GUARD_BUFFERS` asks for (`None`: unset).
    pub fn parse(value: Option<&str>) -> Result<Option<GuardSide>, String> {
        match value {
            None | Some("" | "0") => Ok(None),
            Some("1" | "end") => Ok(Some(GuardSide::End)),
            Some("start") => Ok(Some(GuardSide::Start)),
            Some(other) => {
                Err(format!("KILN_GUARD_BUFFERS = {other:?}: use `end` (or `1`), `start`, or leave it unset"))
            }
        }
    }
}

/// A copy of a buffer against an inaccessible page, unmapped on drop.
pub(crate) struct GuardedCopy {
    map: *mut c_void,
    map_len: usize,
    /// Where the copy starts (what the kernel gets).
    pub ptr: *mut c_void,
    /// The original buffer and its size in bytes.
    source: *mut c_void,
    bytes: usize,
}

impl GuardedCopy {
    /// Copies `bytes` bytes from `source` into a fresh mapping laid out per `side`.
    ///
    /// # Safety
    /// `source` must be valid for reads and writes of `bytes` bytes until this copy is written
    /// back and dropped.
    pub unsafe fn new(source: *mut c_void, bytes: usize, side: GuardSide) -> Result<GuardedCopy, String> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
        let data_pages = bytes.div_ceil(page);
        let map_len = (data_pages + 1) * page;
        // SAFETY: an anonymous private mapping; the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(format!(
                "cannot map {map_len} bytes for a guarded buffer: {}",
                std::io::Error::last_os_error()
            ));
        }
        let base = map.cast::<u8>();
        let (guard, ptr) = match side {
            // SAFETY (both): offsets within the mapping of `map_len` bytes.
            GuardSide::End => unsafe { (base.add(data_pages * page), base.add(data_pages * page - bytes)) },
            GuardSide::Start => unsafe { (base, base.add(page)) },
        };
        let copy = GuardedCopy { map, map_len, ptr: ptr.cast(), source, bytes };
        // SAFETY: `guard` is a page-aligned page of the mapping.
        if unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) } != 0 {
            return Err(format!("cannot protect a guard page: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `source` is valid for `bytes` (caller), `ptr` has `bytes` mapped bytes after it,
        // and the two do not overlap (a fresh mapping).
        unsafe { std::ptr::copy_nonoverlapping(source.cast::<u8>(), ptr, bytes) };
        Ok(copy)
    }

    /// Copies the (possibly written) bytes back into the original buffer.
    pub fn write_back(&self) {
        // SAFETY: as in `new`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.cast::<u8>(), self.source.cast::<u8>(), self.bytes) };
    }
}

impl Drop for GuardedCopy {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The permissions `/proc/self/maps` gives the page holding `addr` (`rw-p`, `---p`, ...).
    fn permissions(addr: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
            let Some((lo, hi)) = range.split_once('-') else { continue };
            let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
            if (lo..hi).contains(&addr) {
                return perms.to_string();
            }
        }
        panic!("{addr:#x} is not mapped")
    }

    /// The copy holds the buffer's bytes, ends (or starts) at an inaccessible page, and writes
    /// back what the kernel changed; an empty buffer sits right at the guard.
    #[test]
    fn a_guarded_copy_lies_against_an_inaccessible_page_and_writes_back() {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        for side in [GuardSide::End, GuardSide::Start] {
            for len in [0usize, 1, 7, 1024, page / 4 + 3] {
                let mut data: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
                let bytes = len * 4;
                // SAFETY: `data` outlives the copy.
                let copy = unsafe { GuardedCopy::new(data.as_mut_ptr().cast(), bytes, side) }.unwrap();
                let at = copy.ptr as usize;
                let guard = match side {
                    GuardSide::End => at + bytes,
                    GuardSide::Start => at - 1,
                };
                if side == GuardSide::End {
                    assert_eq!(guard % page, 0, "{side:?} len {len}: the copy ends at a page boundary");
                } else {
                    assert_eq!(at % page, 0, "{side:?} len {len}: the copy starts at a page boundary");
                }
                assert!(permissions(guard).starts_with("---"), "{side:?} len {len}: the guard page is inaccessible");
                if bytes > 0 {
                    assert!(permissions(at).starts_with("rw"), "{side:?} len {len}: the copy is readable and writable");
                }
                // SAFETY: the copy holds `len` f32 values.
                let view = unsafe { std::slice::from_raw_parts_mut(copy.ptr.cast::<f32>(), len) };
                assert_eq!(view, &data[..], "{side:?} len {len}: the copy holds the buffer");
                for v in view.iter_mut() {
                    *v = -*v - 1.0;
                }
                let want: Vec<f32> = data.iter().map(|v| -v - 1.0).collect();
                copy.write_back();
                drop(copy);
                assert_eq!(data, want, "{side:?} len {len}: written back");
            }
        }
    }

    /// One element past an `end` copy, or one before a `start` copy, stops the process with
    /// `SIGSEGV`: the test runs itself again as a child that makes that access.
    #[test]
    fn an_access_just_outside_a_guarded_copy_faults() {
        use std::os::unix::process::ExitStatusExt;
        const CHILD: &str = "KILN_GUARD_TEST_CHILD";
        if let Ok(side) = std::env::var(CHILD) {
            let side = GuardSide::parse(Some(&side)).unwrap().unwrap();
            let mut data = vec![1.5f32; 5];
            // SAFETY: `data` outlives the copy.
            let copy = unsafe { GuardedCopy::new(data.as_mut_ptr().cast(), 20, side) }.unwrap();
            let outside = match side {
                GuardSide::End => copy.ptr.cast::<u8>().wrapping_add(20),
                GuardSide::Start => copy.ptr.cast::<u8>().wrapping_sub(1),
            };
            // SAFETY: none: this read must fault, which is what the parent checks.
            let byte = unsafe { std::ptr::read_volatile(outside) };
            println!("read {byte} outside the guarded copy");
            return;
        }
        let exe = std::env::current_exe().expect("the test binary");
        for side in ["end", "start"] {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "cpu::guard::tests::an_access_just_outside_a_guarded_copy_faults",
                    "--test-threads=1",
                ])
                .env(CHILD, side)
                .output()
                .expect("run the child");
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGSEGV),
                "{side}: the child should fault; it exited with {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    #[test]
    fn the_variable_names_a_side_or_nothing() {
        for (value, want) in [
            (None, None),
            (Some(""), None),
            (Some("0"), None),
            (Some("end"), Some(GuardSide::End)),
            (Some("1"), Some(GuardSide::End)),
            (Some("start"), Some(GuardSide::Start)),
        ] {
            assert_eq!(GuardSide::parse(value), Ok(want), "{value:?}");
        }
        let err = GuardSide::parse(Some("both")).unwrap_err();
        assert!(err.contains("\"both\"") && err.contains("`start`"), "{err}");
    }
}
