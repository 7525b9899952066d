//! Releasing the code pages only start-up used.
//!
//! An agent touches most of its binary once while it starts (configuration,
//! migrations, every service's set-up) and a small part of it afterwards.
//! The kernel keeps every page it mapped in the process until memory runs
//! short, and maps 64 KiB around each one it faults in, so an idle agent
//! would go on counting ~20 MB of start-up code as its own. Once the node
//! is up, [`release_startup_pages`] drops this process's mappings of clean,
//! read-only pages of its executable and shared libraries (`MADV_DONTNEED`):
//! the pages stay in the page cache, and the few that idle work needs are
//! mapped again on their next use.
//!
//! Only what can be read back from its file is dropped: a mapping that is
//! writable, shared, anonymous, or holds a page written since it was mapped
//! (relocated data, a breakpoint) is never touched. [`select`] makes that
//! choice as a plain function over the text of `/proc/self/smaps`.

use std::collections::BTreeSet;

/// A mapping that may be released: its address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: usize,
    pub end: usize,
    /// Resident bytes when it was read.
    pub resident: u64,
}

/// What one release did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Mappings released.
    pub regions: usize,
    /// Bytes that were resident in them.
    pub bytes: u64,
}

struct Mapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    inode: u64,
    path: &'a str,
    rss_kb: u64,
    anonymous_kb: u64,
}

/// The mappings of `smaps` that are safe to release: private, not writable,
/// backed by a file that is mapped executable somewhere in the process (the
/// binary and its shared libraries), with no anonymous (written) page and
/// something resident.
pub fn select(smaps: &str) -> Vec<Region> {
    let mappings = parse(smaps);
    let images: BTreeSet<&str> = mappings
        .iter()
        .filter(|m| m.inode != 0 && m.path.starts_with('/') && m.perms.contains('x'))
        .map(|m| m.path)
        .collect();
    mappings
        .iter()
        .filter(|m| {
            let b = m.perms.as_bytes();
            b.len() == 4
                && b[1] != b'w'
                && b[3] == b'p'
                && m.inode != 0
                && images.contains(m.path)
                && m.anonymous_kb == 0
                && m.rss_kb > 0
        })
        .map(|m| Region {
            start: m.start,
            end: m.end,
            resident: m.rss_kb * 1024,
        })
        .collect()
}

fn parse(smaps: &str) -> Vec<Mapping<'_>> {
    let mut out: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        if let Some(m) = header(line) {
            out.push(m);
            continue;
        }
        let Some(last) = out.last_mut() else { continue };
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(kb) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "Rss:" => last.rss_kb = kb,
            "Anonymous:" => last.anonymous_kb = kb,
            _ => {}
        }
    }
    out
}

/// `start-end perms offset dev inode [path]`, or `None` for a field line.
fn header(line: &str) -> Option<Mapping<'_>> {
    let mut words = line.split_whitespace();
    let range = words.next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = words.next()?;
    let _offset = words.next()?;
    let dev = words.next()?;
    if !dev.contains(':') {
        return None;
    }
    let inode = words.next()?.parse().ok()?;
    let path = words.next().unwrap_or("");
    Some(Mapping {
        start,
        end,
        perms,
        inode,
        path,
        rss_kb: 0,
        // Unknown until its field is read: never release on a missing field.
        anonymous_kb: u64::MAX,
    })
}

/// Drop this process's mappings of the start-up pages [`select`] names.
/// Returns what was released; an error only if `/proc/self/smaps` cannot be
/// read. A region the kernel refuses is skipped.
#[cfg(target_os = "linux")]
pub fn release_startup_pages() -> std::io::Result<Released> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = Released::default();
    for region in select(&smaps) {
        let len = region.end - region.start;
        // SAFETY: the region is a private, read-only, file-backed mapping
        // with no page written since it was mapped (`select`), so every page
        // it drops reads back from its file with the same bytes on the next
        // access; no Rust reference can observe the difference.
        let ok = unsafe {
            nix::libc::madvise(
                region.start as *mut nix::libc::c_void,
                len,
                nix::libc::MADV_DONTNEED,
            ) == 0
        };
        if ok {
            released.regions += 1;
            released.bytes += region.resident;
        }
    }
    Ok(released)
}

/// Other systems keep their pages.
#[cfg(not(target_os = "linux"))]
pub fn release_startup_pages() -> std::io::Result<Released> {
    Ok(Released::default())
}

/// Hand the allocator's free memory back to the system (glibc keeps freed
/// start-up memory in its arenas).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234 /opt/locus/bin/locus
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
55d0c0100000-55d0c0900000 r-xp 00100000 fd:01 1234 /opt/locus/bin/locus
Size:               8192 kB
Rss:                6000 kB
Anonymous:             0 kB
55d0c0900000-55d0c0a00000 r--p 00900000 fd:01 1234 /opt/locus/bin/locus
Size:               1024 kB
Rss:                1024 kB
Anonymous:           700 kB
55d0c0a00000-55d0c0a10000 rw-p 00a00000 fd:01 1234 /opt/locus/bin/locus
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
55d0c1000000-55d0c2000000 rw-p 00000000 00:00 0 [heap]
Size:              16384 kB
Rss:                3000 kB
Anonymous:          3000 kB
7f0000000000-7f0000100000 r--s 00000000 fd:01 99 /var/lib/locus/locus.db
Size:               1024 kB
Rss:                1024 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r--p 00000000 fd:01 77 /usr/share/locale/data
Size:               1024 kB
Rss:                  12 kB
Anonymous:             0 kB
7f0000400000-7f0000500000 r-xp 00000000 fd:01 55 /usr/lib/libc.so.6
Size:               1024 kB
Rss:                1000 kB
Anonymous:             0 kB
7f0000500000-7f0000600000 r--p 00100000 fd:01 55 /usr/lib/libc.so.6
Size:               1024 kB
Rss:                   0 kB
Anonymous:             0 kB
7f0000600000-7f0000601000 r-xp 00000000 fd:01 56 /usr/lib/libtraced.so
Size:                  4 kB
Rss:                   4 kB
Anonymous:             4 kB
7f0000700000-7f0000701000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f0000800000-7f0000900000 r-xp 00000000 fd:01 57 /usr/lib/libnofields.so
Size:               1024 kB
";

    #[test]
    fn only_clean_read_only_pages_of_code_images_are_released() {
        let regions = select(SMAPS);
        let starts: Vec<usize> = regions.iter().map(|r| r.start).collect();
        assert_eq!(
            starts,
            vec![0x55d0c0000000, 0x55d0c0100000, 0x7f0000400000],
            "the binary's rodata and text and libc's text; not relocated \
             data, writable data, the heap, shared files, data files, empty \
             mappings, written code, the vDSO or a mapping without fields"
        );
        assert_eq!(regions[1].resident, 6000 * 1024);
    }

    #[test]
    fn garbage_selects_nothing() {
        assert!(select("").is_empty());
        assert!(select("not smaps\n-\n1-2 r-xp\nRss: x kB\n").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn releasing_keeps_the_process_working() {
        let released = release_startup_pages().expect("smaps is readable");
        assert!(released.regions > 0, "a test binary has code to release");
        // Code and read-only data read back from the file after the release.
        let text = format!("{:?}", select(SMAPS));
        assert!(text.contains("Region"));
        trim_heap();
    }
}
