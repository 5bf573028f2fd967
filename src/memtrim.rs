//! Giving memory back while idle: free heap pages go back to the system (`malloc_trim`), and code
//! pages of this program that were only needed at start are dropped from memory (`MADV_PAGEOUT`; they
//! are read back from the page cache if they run again). Linux and glibc only; elsewhere it does nothing.

/// Trims what can be trimmed; answers the bytes of code pages offered back (for the log).
pub fn trim() -> u64 {
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the system.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
    page_out_code()
}

#[cfg(target_os = "linux")]
fn page_out_code() -> u64 {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut offered = 0;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        // Code of this program only (file-backed, never written, so dropping a page loses nothing).
        if perms != "r-xp" || f.nth(3).map(std::path::Path::new) != Some(exe.as_path()) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: advice on a mapping of our own executable's text; the kernel re-reads evicted pages on
        // the next fault, and an unsupported advice is refused with EINVAL, changing nothing.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) }
            == 0
        {
            offered += (end - start) as u64;
        }
    }
    offered
}

#[cfg(not(target_os = "linux"))]
fn page_out_code() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn trimming_leaves_the_program_working() {
        let v: Vec<u64> = (0..100_000).collect();
        drop(v);
        let offered = super::trim();
        assert!(offered > 0, "the test binary's code was offered back");
        // Code runs again after its pages went.
        let s: u64 = (0..1000u64).sum();
        assert_eq!(s, 499_500);
    }
}
