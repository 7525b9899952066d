//! Bounded bridges between async byte streams and the synchronous encoder
//! and decoder, which run on blocking threads.
//!
//! A [`StreamReader`] is the `Read` end of a channel an async task feeds
//! with network chunks; a [`StreamWriter`] is the `Write` end whose chunks
//! an async task sends out. Both channels hold a fixed number of chunks, so
//! a fast producer waits for a slow consumer instead of filling memory.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// Chunks in flight on one pipe.
pub const PIPE_CHUNKS: usize = 4;
/// Bytes a [`StreamWriter`] gathers before it sends a chunk.
pub const WRITE_CHUNK: usize = 64 * 1024;

/// The async side of a [`StreamReader`]: send chunks (or the error that
/// ended the stream); drop it to signal the end.
pub type ChunkSender = mpsc::Sender<io::Result<Bytes>>;

/// `Read` over chunks sent from async code. Must be read on a blocking
/// thread (it blocks while the channel is empty).
#[derive(Debug)]
pub struct StreamReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    read: u64,
}

/// A bounded pipe: the sender for async code and the reader for a
/// blocking thread.
pub fn stream_reader() -> (ChunkSender, StreamReader) {
    let (tx, rx) = mpsc::channel(PIPE_CHUNKS);
    (
        tx,
        StreamReader {
            rx,
            current: Bytes::new(),
            read: 0,
        },
    )
}

impl StreamReader {
    /// Bytes handed out so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        self.read += n as u64;
        Ok(n)
    }
}

/// `Write` whose bytes come out of a channel in chunks of
/// [`WRITE_CHUNK`]. Must be written on a blocking thread. Call
/// [`StreamWriter::finish`] to send the tail; dropping it without finish
/// ends the stream with an error, so a half-written body is never taken
/// for a whole one.
#[derive(Debug)]
pub struct StreamWriter {
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    buf: BytesMut,
}

/// A bounded pipe: the writer for a blocking thread and the receiver for
/// async code.
pub fn stream_writer() -> (StreamWriter, mpsc::Receiver<io::Result<Bytes>>) {
    let (tx, rx) = mpsc::channel(PIPE_CHUNKS);
    (
        StreamWriter {
            tx: Some(tx),
            buf: BytesMut::with_capacity(WRITE_CHUNK),
        },
        rx,
    )
}

impl StreamWriter {
    fn send(&mut self, item: io::Result<Bytes>) -> io::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stream finished"))?;
        tx.blocking_send(item)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "receiver went away"))
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(WRITE_CHUNK);
        self.send(Ok(chunk))
    }

    /// Send what is buffered and end the stream cleanly.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_buffered()?;
        self.tx = None;
        Ok(())
    }

    /// End the stream with an error the receiver will see.
    pub fn fail(mut self, error: io::Error) {
        self.buf.clear();
        let _ = self.send(Err(error));
        self.tx = None;
    }
}

impl Write for StreamWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = WRITE_CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= WRITE_CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if self.tx.is_some() {
            let _ = self.send(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended before it was finished",
            )));
        }
    }
}

/// Bytes read per chunk by [`file_chunks`].
pub const FILE_CHUNK: usize = 256 * 1024;

/// A file's bytes as a stream of chunks, for an HTTP body; `read` is told
/// the bytes of each chunk as it goes (a progress bar, say).
pub fn file_chunks(
    file: tokio::fs::File,
    mut read: impl FnMut(u64) + Send + 'static,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(file, |mut f| async move {
        let mut buf = BytesMut::zeroed(FILE_CHUNK);
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf.freeze()), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
    .inspect(move |c| {
        if let Ok(b) = c {
            read(b.len() as u64);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_cross_both_pipes_in_order() {
        let (mut w, mut rx) = stream_writer();
        let (tx, mut r) = stream_reader();
        let producer = tokio::task::spawn_blocking(move || {
            for i in 0..1000u32 {
                w.write_all(&i.to_be_bytes().repeat(100)).unwrap();
            }
            w.finish().unwrap();
        });
        let forward = tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                tx.send(c).await.unwrap();
            }
        });
        let consumer = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            r.read_to_end(&mut all).unwrap();
            all
        });
        producer.await.unwrap();
        forward.await.unwrap();
        let all = consumer.await.unwrap();
        assert_eq!(all.len(), 1000 * 400);
        assert_eq!(&all[396..404], &[0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unfinished_writer_ends_the_stream_with_an_error() {
        let (mut w, mut rx) = stream_writer();
        tokio::task::spawn_blocking(move || {
            w.write_all(b"partial").unwrap();
            w.flush().unwrap();
            drop(w);
        })
        .await
        .unwrap();
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"partial");
        assert!(rx.recv().await.unwrap().is_err());
        assert!(rx.recv().await.is_none());
    }
}
