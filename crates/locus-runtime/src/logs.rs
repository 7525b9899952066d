//! Bounded log files: a workload's stdout and stderr go, interleaved as they
//! come, to `<dir>/log`; when it passes half the limit it becomes
//! `<dir>/log.1` (replacing the previous one) and a new `log` starts, so a
//! workload never holds more than `limit` bytes of log on disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the current log file in a workload's directory.
pub const LOG_FILE: &str = "log";

/// A log file that rotates itself.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    written: u64,
    /// Bytes per file before rotation (half the total limit).
    per_file: u64,
}

impl LogFile {
    /// Open (append to) `<dir>/log`, keeping at most `limit` bytes in all.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<LogFile> {
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(LogFile {
            path,
            file,
            written,
            per_file: (limit / 2).max(1024),
        })
    }

    /// Append bytes, rotating first when the file is full.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.written + bytes.len() as u64 > self.per_file && self.written > 0 {
            self.rotate()?;
        }
        // A single write larger than a file keeps only its tail.
        let bytes = if bytes.len() as u64 > self.per_file {
            &bytes[bytes.len() - self.per_file as usize..]
        } else {
            bytes
        };
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let old = self.path.with_extension("1");
        std::fs::rename(&self.path, &old)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// The last `max` bytes of a workload's log (rotated part included), and
/// the offset in the current file where the returned text ends (to follow
/// from). A missing log reads as empty.
pub fn read_log(dir: &Path, max: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let current = read_tail(&dir.join(LOG_FILE), max)?;
    let end = current.1;
    let mut out = current.0;
    if (out.len() as u64) < max {
        let (older, _) = read_tail(&dir.join(format!("{LOG_FILE}.1")), max - out.len() as u64)?;
        let mut all = older;
        all.extend_from_slice(&out);
        out = all;
    }
    Ok((out, end))
}

/// Bytes of the current log from `offset` on (at most `max`), and the new
/// offset. When the file was rotated under the reader (it is shorter than
/// `offset`), reading starts again at 0.
pub fn read_from(dir: &Path, offset: u64, max: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let path = dir.join(LOG_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut out = Vec::new();
    file.take(max).read_to_end(&mut out)?;
    Ok((out.clone(), start + out.len() as u64))
}

fn read_tail(path: &Path, max: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok((out, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_never_passes_its_limit_and_keeps_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), 4096).unwrap();
        for i in 0..2000 {
            log.append(format!("line {i}\n").as_bytes()).unwrap();
        }
        let total: u64 = ["log", "log.1"]
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
            .sum();
        assert!(total <= 4096, "{total}");
        let (tail, end) = read_log(dir.path(), 100_000).unwrap();
        let text = String::from_utf8(tail).unwrap();
        assert!(text.ends_with("line 1999\n"), "{text}");
        assert!(!text.contains("line 10\n"));
        let (more, _) = read_from(dir.path(), end, 1000).unwrap();
        assert!(more.is_empty());
        log.append(b"after\n").unwrap();
        let (more, _) = read_from(dir.path(), end, 1000).unwrap();
        assert_eq!(more, b"after\n");
        // A huge single write keeps its tail only.
        log.append(&vec![b'x'; 10_000]).unwrap();
        assert!(std::fs::metadata(dir.path().join("log")).unwrap().len() <= 2048);
    }
}
