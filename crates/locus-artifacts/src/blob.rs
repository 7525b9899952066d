//! Blobs on disk.
//!
//! Layout under the store's directory:
//! - `blobs/<cid>`: the bytes of a complete artifact (read-only; executable
//!   so a process workload can run it in place);
//! - `blobs/<cid>.obao`: its post-order bao outboard (interior hashes down
//!   to 16 KiB groups);
//! - `partial/<cid>` and `partial/<cid>.obao`: a download in progress, at
//!   full (sparse) size; kept across restarts so it resumes;
//! - `tmp/`: uploads being hashed; emptied at open.
//!
//! The data file's rename into `blobs/` is the commit point: the outboard
//! is renamed first, both are fsynced before, and the directory after. A
//! crash leaves either no blob or a whole one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::io::sync::{DecodeResponseIter, OutboardMut, encode_ranges};
use bao_tree::io::{BaoContentItem, DecodeError};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use locus_core::ArtifactId;

use crate::range::missing;

/// Chunk groups of 16 KiB: the unit a download verifies and keeps.
pub const BLOCK: BlockSize = BlockSize::from_chunk_log(4);
/// Bytes in one chunk group.
pub const GROUP_BYTES: u64 = 16 * 1024;
/// Buffer of the file writes during ingest.
const WRITE_BUFFER: usize = 1 << 20;
/// Written bytes after which their writeback to disk is started, so the
/// fsync that commits a blob finds little left to do.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Start writing a range of `file` back to disk now, without waiting
/// (Linux `sync_file_range`; elsewhere the final fsync does it all).
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: the descriptor is open for as long as `file` is borrowed;
        // sync_file_range only schedules I/O on it and touches no memory.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// What went wrong with a blob.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("artifact {0} is not stored on this node")]
    NotFound(ArtifactId),
    #[error("the upload ended after {got} of its declared {declared} bytes")]
    Truncated { declared: u64, got: u64 },
    #[error("the upload is longer than its declared {declared} bytes")]
    TooLong { declared: u64 },
    #[error("the upload failed: {0}")]
    Upload(#[source] io::Error),
    #[error("range {start}..{end} is outside the {size}-byte artifact {id}")]
    OutOfRange {
        id: ArtifactId,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("encoding {id}: {detail}")]
    Encode { id: ArtifactId, detail: String },
    #[error("the download of {0} is not complete")]
    Incomplete(ArtifactId),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An upload that has been hashed and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub id: ArtifactId,
    pub size: u64,
    /// False when the store already held these bytes.
    pub fresh: bool,
}

/// The content-addressed files of one node.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Open (creating) the store under `root`; leftovers of interrupted
    /// uploads are removed, downloads in progress are kept.
    pub fn open(root: &Path) -> Result<BlobStore, ArtifactError> {
        for sub in ["blobs", "partial", "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(io_at(&d))?;
        }
        let tmp = root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_at(&tmp))? {
            let p = e.map_err(io_at(&tmp))?.path();
            let _ = fs::remove_file(&p);
        }
        Ok(BlobStore {
            root: root.to_owned(),
        })
    }

    /// Path of a complete blob's bytes (whether or not it exists).
    pub fn path(&self, id: &ArtifactId) -> PathBuf {
        self.root.join("blobs").join(id.to_string())
    }

    fn outboard_path(&self, id: &ArtifactId) -> PathBuf {
        self.root.join("blobs").join(format!("{id}.obao"))
    }

    /// Size of a complete blob, if this node holds it.
    pub fn size(&self, id: &ArtifactId) -> Option<u64> {
        fs::metadata(self.path(id)).ok().map(|m| m.len())
    }

    /// Every complete blob on disk, with its size.
    pub fn list(&self) -> Result<Vec<(ArtifactId, u64)>, ArtifactError> {
        let dir = self.root.join("blobs");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let e = e.map_err(io_at(&dir))?;
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.parse::<ArtifactId>().ok()) else {
                continue;
            };
            let len = e.metadata().map_err(io_at(&e.path()))?.len();
            out.push((id, len));
        }
        out.sort();
        Ok(out)
    }

    /// Artifacts with a download in progress.
    pub fn partials(&self) -> Result<Vec<ArtifactId>, ArtifactError> {
        let dir = self.root.join("partial");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let name = e.map_err(io_at(&dir))?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.parse::<ArtifactId>().ok()) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Bytes used by complete blobs, outboards and partial downloads.
    pub fn disk_usage(&self) -> u64 {
        let mut total = 0;
        for sub in ["blobs", "partial"] {
            if let Ok(rd) = fs::read_dir(self.root.join(sub)) {
                for e in rd.flatten() {
                    if let Ok(m) = e.metadata() {
                        // Sparse partial files count by what they occupy.
                        total += std::os::unix::fs::MetadataExt::blocks(&m) * 512;
                    }
                }
            }
        }
        total
    }

    /// Delete a complete blob (and its outboard).
    pub fn remove(&self, id: &ArtifactId) -> Result<(), ArtifactError> {
        let data = self.path(id);
        match fs::remove_file(&data) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&data)(e)),
        }
        let _ = fs::remove_file(self.outboard_path(id));
        Ok(())
    }

    /// Hash and store bytes read from `input`. With a declared size the
    /// bytes are written and hashed in one pass and must number exactly
    /// that; without, they are spooled to disk first and hashed after.
    /// `progress` is told the bytes taken so far.
    pub fn ingest(
        &self,
        input: impl Read,
        declared: Option<u64>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Ingested, ArtifactError> {
        let tmp = TempPair::new(&self.root.join("tmp"))?;
        let mut data_file = BufWriter::with_capacity(
            WRITE_BUFFER,
            File::create(&tmp.data).map_err(io_at(&tmp.data))?,
        );
        let ob_file = File::create(&tmp.outboard).map_err(io_at(&tmp.outboard))?;
        let mut ob = BufWriter::with_capacity(64 * 1024, ob_file);
        let (hash, size) = match declared {
            Some(size) => {
                let mut tee = Tee {
                    input,
                    copy: &mut data_file,
                    taken: 0,
                    flushed: 0,
                    progress,
                };
                let tree = BaoTree::new(size, BLOCK);
                let hash = bao_tree::io::sync::outboard_post_order(&mut tee, tree, &mut ob)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => ArtifactError::Truncated {
                            declared: size,
                            got: tee.taken,
                        },
                        _ => ArtifactError::Upload(e),
                    })?;
                let mut probe = [0u8; 1];
                if tee.input.read(&mut probe).map_err(ArtifactError::Upload)? > 0 {
                    return Err(ArtifactError::TooLong { declared: size });
                }
                (hash, size)
            }
            None => {
                let mut input = input;
                let mut buf = vec![0u8; 64 * 1024];
                let mut size = 0u64;
                loop {
                    let n = input.read(&mut buf).map_err(ArtifactError::Upload)?;
                    if n == 0 {
                        break;
                    }
                    data_file.write_all(&buf[..n]).map_err(io_at(&tmp.data))?;
                    size += n as u64;
                    progress(size);
                }
                data_file.flush().map_err(io_at(&tmp.data))?;
                let back = File::open(&tmp.data).map_err(io_at(&tmp.data))?;
                let tree = BaoTree::new(size, BLOCK);
                let hash = bao_tree::io::sync::outboard_post_order(
                    BufReader::with_capacity(WRITE_BUFFER, back),
                    tree,
                    &mut ob,
                )
                .map_err(io_at(&tmp.data))?;
                (hash, size)
            }
        };
        let data_file = data_file
            .into_inner()
            .map_err(|e| io_at(&tmp.data)(e.into_error()))?;
        let ob_file = ob
            .into_inner()
            .map_err(|e| io_at(&tmp.outboard)(e.into_error()))?;
        let id = ArtifactId::from_digest(*hash.as_bytes());
        if self.size(&id) == Some(size) {
            return Ok(Ingested {
                id,
                size,
                fresh: false,
            });
        }
        data_file.sync_all().map_err(io_at(&tmp.data))?;
        ob_file.sync_all().map_err(io_at(&tmp.outboard))?;
        self.commit(&id, &tmp.data, &tmp.outboard)?;
        tmp.disarm();
        Ok(Ingested {
            id,
            size,
            fresh: true,
        })
    }

    /// Move a verified data file and its outboard into `blobs/`.
    fn commit(&self, id: &ArtifactId, data: &Path, outboard: &Path) -> Result<(), ArtifactError> {
        let ob_to = self.outboard_path(id);
        let data_to = self.path(id);
        fs::set_permissions(outboard, fs::Permissions::from_mode(0o444))
            .map_err(io_at(outboard))?;
        fs::set_permissions(data, fs::Permissions::from_mode(0o555)).map_err(io_at(data))?;
        fs::rename(outboard, &ob_to).map_err(io_at(&ob_to))?;
        fs::rename(data, &data_to).map_err(io_at(&data_to))?;
        let dir = self.root.join("blobs");
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&dir))?;
        Ok(())
    }

    /// Open a complete blob for reading: its file and size.
    pub fn open_blob(&self, id: &ArtifactId) -> Result<(File, u64), ArtifactError> {
        let path = self.path(id);
        let f = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ArtifactError::NotFound(*id),
            _ => io_at(&path)(e),
        })?;
        let size = f.metadata().map_err(io_at(&path))?.len();
        Ok((f, size))
    }

    /// Write the bao encoding of `span` (bytes of a complete blob, with the
    /// hashes that prove them against the CID) to `out`. The bytes are not
    /// re-hashed here: the receiver verifies every group.
    pub fn encode(
        &self,
        id: &ArtifactId,
        span: Range<u64>,
        out: impl Write,
    ) -> Result<(), ArtifactError> {
        let (data, size) = self.open_blob(id)?;
        if span.start > span.end || span.end > size {
            return Err(ArtifactError::OutOfRange {
                id: *id,
                start: span.start,
                end: span.end,
                size,
            });
        }
        let ob_path = self.outboard_path(id);
        let ob = File::open(&ob_path).map_err(io_at(&ob_path))?;
        let outboard = PostOrderOutboard {
            root: blake3::Hash::from_bytes(*id.digest()),
            tree: BaoTree::new(size, BLOCK),
            data: ob,
        };
        encode_ranges(data, outboard, &chunk_ranges(&span, size), out).map_err(|e| {
            ArtifactError::Encode {
                id: *id,
                detail: e.to_string(),
            }
        })
    }

    /// Start or resume the download of `id`, `size` bytes long.
    pub fn partial(&self, id: ArtifactId, size: u64) -> Result<Partial, ArtifactError> {
        let data_path = self.root.join("partial").join(id.to_string());
        let ob_path = self.root.join("partial").join(format!("{id}.obao"));
        let tree = BaoTree::new(size, BLOCK);
        let open = |p: &Path, len: u64| -> Result<File, ArtifactError> {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
                .map_err(io_at(p))?;
            let now = f.metadata().map_err(io_at(p))?.len();
            if now != len {
                // A different size means a different (or new) download.
                f.set_len(0).map_err(io_at(p))?;
                f.set_len(len).map_err(io_at(p))?;
            }
            Ok(f)
        };
        let data = open(&data_path, size)?;
        let ob = open(&ob_path, tree.outboard_size())?;
        Ok(Partial {
            id,
            size,
            tree,
            data: Arc::new(SharedFile(data)),
            outboard: Arc::new(SharedFile(ob)),
            data_path,
            ob_path,
        })
    }

    /// Verify a finished download and move it into `blobs/`.
    pub fn complete(&self, partial: Partial) -> Result<(), ArtifactError> {
        if !partial.missing()?.is_empty() && partial.size > 0 {
            return Err(ArtifactError::Incomplete(partial.id));
        }
        self.finish_unchecked(partial)
    }

    /// Move a download whose every span was verified while it streamed into
    /// `blobs/` without hashing it again.
    pub fn finish_unchecked(&self, partial: Partial) -> Result<(), ArtifactError> {
        if partial.size == 0 && partial.id != ArtifactId::of(b"") {
            return Err(ArtifactError::Incomplete(partial.id));
        }
        partial
            .data
            .0
            .sync_all()
            .map_err(io_at(&partial.data_path))?;
        partial
            .outboard
            .0
            .sync_all()
            .map_err(io_at(&partial.ob_path))?;
        self.commit(&partial.id, &partial.data_path, &partial.ob_path)
    }

    /// Bytes a partial download occupies on disk (data and outboard).
    pub fn partial_bytes(&self, id: &ArtifactId) -> u64 {
        [id.to_string(), format!("{id}.obao")]
            .iter()
            .filter_map(|n| fs::metadata(self.root.join("partial").join(n)).ok())
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .sum()
    }

    /// Time since a partial download was last written.
    pub fn partial_age(&self, id: &ArtifactId) -> Option<std::time::Duration> {
        let m = fs::metadata(self.root.join("partial").join(id.to_string())).ok()?;
        m.modified().ok()?.elapsed().ok()
    }

    /// Abandon a download.
    pub fn discard(&self, id: &ArtifactId) {
        let _ = fs::remove_file(self.root.join("partial").join(id.to_string()));
        let _ = fs::remove_file(self.root.join("partial").join(format!("{id}.obao")));
    }
}

fn chunk_ranges(span: &Range<u64>, size: u64) -> ChunkRanges {
    let end = span.end.min(size);
    if span.start >= end {
        return ChunkRanges::empty();
    }
    ChunkRanges::from(ChunkNum(span.start / 1024)..ChunkNum::chunks(end))
}

/// A file shared by the decoders of several spans at once (positioned
/// writes need no lock).
#[derive(Debug)]
struct SharedFile(File);

#[derive(Debug, Clone)]
struct FileRef(Arc<SharedFile>);

impl positioned_io::ReadAt for FileRef {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        FileExt::read_at(&self.0.0, buf, pos)
    }
}

impl positioned_io::WriteAt for FileRef {
    fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<usize> {
        FileExt::write_at(&self.0.0, buf, pos)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a span's stream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeFailure {
    /// Bytes or hashes that do not match the CID: the peer is bad.
    Corrupt { offset: u64 },
    /// The stream broke (network, truncation, local disk).
    Interrupted(String),
}

/// A span that did not fully arrive: what was verified and kept, and why
/// the rest was not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("span verified up to byte {verified_to}: {failure:?}")]
pub struct SpanError {
    /// Bytes from the span's start up to here were verified and written.
    pub verified_to: u64,
    pub failure: DecodeFailure,
}

/// A download in progress. Spans can be decoded from several threads at
/// once; each 16 KiB group is verified against the CID before it is
/// written.
#[derive(Debug, Clone)]
pub struct Partial {
    id: ArtifactId,
    size: u64,
    tree: BaoTree,
    data: Arc<SharedFile>,
    outboard: Arc<SharedFile>,
    data_path: PathBuf,
    ob_path: PathBuf,
}

impl Partial {
    pub fn id(&self) -> ArtifactId {
        self.id
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Byte ranges still missing: everything that does not verify against
    /// the CID from what is on disk. Re-hashes what is there, so call it
    /// once, when a download resumes.
    pub fn missing(&self) -> Result<Vec<Range<u64>>, ArtifactError> {
        if self.size == 0 {
            return Ok(Vec::new());
        }
        let outboard = PostOrderOutboard {
            root: blake3::Hash::from_bytes(*self.id.digest()),
            tree: self.tree,
            data: FileRef(self.outboard.clone()),
        };
        let all = ChunkRanges::all();
        let mut have = Vec::new();
        for r in bao_tree::io::sync::valid_ranges(outboard, FileRef(self.data.clone()), &all) {
            let r = r.map_err(io_at(&self.data_path))?;
            have.push(r.start.to_bytes().min(self.size)..r.end.to_bytes().min(self.size));
        }
        // Only whole groups (or the tail) count, so every gap starts on a
        // group boundary and can be asked for as a span.
        let have: Vec<_> = have
            .into_iter()
            .map(|r| {
                let start = r.start.div_ceil(GROUP_BYTES) * GROUP_BYTES;
                let end = if r.end == self.size {
                    r.end
                } else {
                    r.end / GROUP_BYTES * GROUP_BYTES
                };
                start..end.max(start)
            })
            .collect();
        Ok(missing(self.size, &have))
    }

    /// Decode the bao encoding of `span` read from `encoded`, verifying
    /// every group and writing each verified one. `on_group` is told the
    /// bytes of each group as it is kept.
    pub fn decode(
        &self,
        span: Range<u64>,
        encoded: impl Read,
        on_group: &mut dyn FnMut(u64),
    ) -> Result<(), SpanError> {
        let mut verified_to = span.start;
        let ranges = chunk_ranges(&span, self.size);
        let root = blake3::Hash::from_bytes(*self.id.digest());
        let mut outboard = PostOrderOutboard {
            root,
            tree: self.tree,
            data: FileRef(self.outboard.clone()),
        };
        let interrupted = |verified_to, e: &dyn std::fmt::Display| SpanError {
            verified_to,
            failure: DecodeFailure::Interrupted(e.to_string()),
        };
        let data = FileRef(self.data.clone());
        for item in DecodeResponseIter::new(root, self.tree, encoded, &ranges) {
            match item {
                Ok(BaoContentItem::Parent(p)) => {
                    outboard
                        .save(p.node, &p.pair)
                        .map_err(|e| interrupted(verified_to, &e))?;
                }
                Ok(BaoContentItem::Leaf(leaf)) => {
                    let mut d = data.clone();
                    positioned_io::WriteAt::write_all_at(&mut d, leaf.offset, &leaf.data)
                        .map_err(|e| interrupted(verified_to, &e))?;
                    let end = leaf.offset + leaf.data.len() as u64;
                    if leaf.offset <= verified_to && end > verified_to {
                        on_group(end - verified_to);
                        verified_to = end;
                    }
                }
                Err(DecodeError::LeafHashMismatch(c)) => {
                    return Err(SpanError {
                        verified_to,
                        failure: DecodeFailure::Corrupt {
                            offset: c.to_bytes(),
                        },
                    });
                }
                Err(DecodeError::ParentHashMismatch(_)) => {
                    return Err(SpanError {
                        verified_to,
                        failure: DecodeFailure::Corrupt {
                            offset: verified_to,
                        },
                    });
                }
                Err(e) => return Err(interrupted(verified_to, &e)),
            }
        }
        if verified_to < span.end.min(self.size) {
            return Err(interrupted(verified_to, &"the stream ended early"));
        }
        start_writeback(&self.data.0, span.start, span.end - span.start);
        Ok(())
    }
}

/// Reads `input`, copying every byte to `copy` and counting them.
struct Tee<'a, R> {
    input: R,
    copy: &'a mut BufWriter<File>,
    taken: u64,
    /// Bytes whose writeback has been started.
    flushed: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        self.taken += n as u64;
        let written = self.taken - self.copy.buffer().len() as u64;
        if written - self.flushed >= WRITEBACK_STEP {
            start_writeback(self.copy.get_ref(), self.flushed, written - self.flushed);
            self.flushed = written;
        }
        (self.progress)(self.taken);
        Ok(n)
    }
}

/// A pair of temp files removed on drop unless disarmed.
struct TempPair {
    data: PathBuf,
    outboard: PathBuf,
    armed: bool,
}

impl TempPair {
    fn new(dir: &Path) -> Result<TempPair, ArtifactError> {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).map_err(|e| ArtifactError::Io {
            path: dir.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        let stem: String = r.iter().map(|b| format!("{b:02x}")).collect();
        Ok(TempPair {
            data: dir.join(format!("{stem}.data")),
            outboard: dir.join(format!("{stem}.obao")),
            armed: true,
        })
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempPair {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.data);
            let _ = fs::remove_file(&self.outboard);
        }
    }
}
