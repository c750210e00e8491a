//! A gzip writer that compresses on other threads: what is written is cut into chunks and sent
//! over a small bounded channel to a thread running the project's parallel gzip
//! (`oci::pgzip`), whose output depends only on the data and the level. The channel bounds the
//! memory: a few chunks in flight, plus pgzip's batch.

use std::io::{self, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;

const CHUNK: usize = 256 * 1024;

pub struct GzipPipe<W: Write + Send + 'static> {
    buffer: Vec<u8>,
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    compressor: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> GzipPipe<W> {
    pub fn new(out: W, level: u32) -> io::Result<GzipPipe<W>> {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        let compressor = std::thread::Builder::new()
            .name("export-gzip".into())
            .spawn(move || crate::oci::pgzip::compress(rx, out, level))?;
        Ok(GzipPipe {
            buffer: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            compressor: Some(compressor),
        })
    }

    /// Ends the stream and returns the writer the compressed bytes went to.
    pub fn finish(mut self) -> io::Result<W> {
        self.send()?;
        drop(self.tx.take());
        self.join()
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        let sent = self.tx.as_ref().map(|tx| tx.send(chunk));
        match sent {
            Some(Ok(())) => Ok(()),
            // The compressor stopped: its own error says why.
            _ => {
                drop(self.tx.take());
                Err(self
                    .join()
                    .err()
                    .unwrap_or_else(|| io::Error::other("the gzip compressor stopped")))
            }
        }
    }

    fn join(&mut self) -> io::Result<W> {
        match self.compressor.take() {
            Some(handle) => handle
                .join()
                .map_err(|_| io::Error::other("the gzip compressor panicked"))?,
            None => Err(io::Error::other("the gzip compressor already ended")),
        }
    }
}

impl<W: Write + Send + 'static> Write for GzipPipe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for GzipPipe<W> {
    fn drop(&mut self) {
        // Abandoned (an error elsewhere): let the compressor finish and discard its result.
        drop(self.tx.take());
        if let Some(handle) = self.compressor.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_and_is_deterministic() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let compress = |step: usize| {
            let mut pipe = GzipPipe::new(Vec::new(), 6).unwrap();
            for chunk in data.chunks(step) {
                pipe.write_all(chunk).unwrap();
            }
            pipe.finish().unwrap()
        };
        let gz = compress(1000);
        assert_eq!(gz, compress(70_000));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
