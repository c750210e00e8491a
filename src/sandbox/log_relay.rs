//! A bounded log: the container writes its output into a pipe, the helper copies it to the log
//! file, keeping the first `head` bytes and the last `tail` bytes of a flood (a packaging script
//! once printed 600 MB, all of it stored) with a line saying how much was cut between them. A
//! failure report reads the end of the log, so the tail is what matters most; the head shows
//! how the build started.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use fs_err::os::unix::fs::OpenOptionsExt;

/// The log file a relay fills, and what it keeps.
pub struct LogRelay {
    /// The pipe's read end, non-blocking.
    pipe: OwnedFd,
    path: PathBuf,
    file: fs_err::File,
    capped: Capped,
    /// The first failure to write the log; output is still drained (a full pipe would stall
    /// the build) but no longer kept.
    failed: Option<std::io::Error>,
}

impl LogRelay {
    /// Opens (appends to) `path` and makes the pipe; returns the relay and the write end for
    /// the container's stdout and stderr.
    pub fn open(path: &Path, head: u64, tail: u64) -> std::io::Result<(LogRelay, OwnedFd)> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(path)?;
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        // Fewer wake-ups for a chatty build: a larger pipe (the default is 64 KiB). Best effort.
        let _ = nix::fcntl::fcntl(
            write.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20),
        );
        // The container's end blocks as a terminal or file would; only ours must not.
        nix::fcntl::fcntl(
            write.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )?;
        Ok((
            LogRelay {
                pipe: read,
                path: path.to_path_buf(),
                file,
                capped: Capped::new(head, tail),
                failed: None,
            },
            write,
        ))
    }

    /// The pipe to poll for output.
    pub fn pipe(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    /// Copies what the pipe holds now; returns false once every writer is gone (end of file).
    pub fn pump(&mut self) -> std::io::Result<bool> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match nix::unistd::read(self.pipe.as_raw_fd(), &mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) if self.failed.is_none() => {
                    if let Err(e) = self.capped.write(&buf[..n], &mut self.file) {
                        self.failed = Some(e);
                    }
                }
                Ok(_) => {}
                Err(nix::Error::EAGAIN) => return Ok(true),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After the container is gone (its processes can write no more): copies what is left and
    /// writes the kept tail.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.pump()?;
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.capped.finish(&mut self.file)?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The first `head` bytes go straight to the file; after that the last `tail` bytes are kept
/// in a ring and written at the end, after a line saying how many bytes were cut.
struct Capped {
    head: u64,
    tail: usize,
    written: u64,
    ring: Vec<u8>,
    /// Where the oldest byte of a full ring is.
    start: usize,
    cut: u64,
}

impl Capped {
    fn new(head: u64, tail: u64) -> Capped {
        Capped {
            head,
            tail: usize::try_from(tail).unwrap_or(usize::MAX),
            written: 0,
            ring: Vec::new(),
            start: 0,
            cut: 0,
        }
    }

    fn write(&mut self, mut data: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        if self.written < self.head {
            let direct = (self.head - self.written).min(data.len() as u64) as usize;
            out.write_all(&data[..direct])?;
            self.written += direct as u64;
            data = &data[direct..];
        }
        if self.tail == 0 {
            self.cut += data.len() as u64;
            return Ok(());
        }
        // Only the last `tail` bytes of this chunk can survive it.
        if data.len() > self.tail {
            let skip = data.len() - self.tail;
            self.cut += skip as u64 + self.ring.len() as u64;
            self.ring.clear();
            self.start = 0;
            data = &data[skip..];
        }
        for &b in data {
            if self.ring.len() < self.tail {
                self.ring.push(b);
            } else {
                self.ring[self.start] = b;
                self.start = (self.start + 1) % self.tail;
                self.cut += 1;
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.cut > 0 {
            write!(
                out,
                "\n[fissile-oci: {} bytes of output cut here; the log keeps the first {} and the last {} bytes]\n",
                self.cut,
                self.written,
                self.ring.len()
            )?;
        }
        let (newer, older) = self.ring.split_at(self.start);
        out.write_all(older)?;
        out.write_all(newer)?;
        self.ring = Vec::new();
        self.start = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(head: u64, tail: u64, chunks: &[&[u8]]) -> String {
        let mut c = Capped::new(head, tail);
        let mut out = Vec::new();
        for chunk in chunks {
            c.write(chunk, &mut out).unwrap();
        }
        c.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn short_output_is_kept_whole() {
        assert_eq!(run(4, 4, &[b"abc", b"def", b"gh"]), "abcdefgh");
    }

    #[test]
    fn a_flood_keeps_its_head_and_tail_and_says_what_was_cut() {
        let out = run(3, 4, &[b"abcdef", b"ghijklmn", b"op"]);
        assert!(
            out.starts_with("abc\n[fissile-oci: 9 bytes of output cut here"),
            "{out}"
        );
        assert!(out.ends_with("]\nmnop"), "{out}");
        // Chunks larger than the tail, and byte by byte, cut the same.
        let big = run(3, 4, &[b"abcdefghijklmnop"]);
        let bytes: Vec<&[u8]> = b"abcdefghijklmnop".chunks(1).collect();
        assert_eq!(big, out);
        assert_eq!(run(3, 4, &bytes), out);
    }

    #[test]
    fn the_relay_copies_a_pipe_into_a_bounded_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log");
        let (mut relay, write) = LogRelay::open(&path, 10, 10).unwrap();
        let mut writer = std::fs::File::from(write);
        let writer_thread = std::thread::spawn(move || {
            for i in 0..1000 {
                writeln!(writer, "line {i}").unwrap();
            }
        });
        while relay.pump().unwrap() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        writer_thread.join().unwrap();
        relay.finish().unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(log.starts_with("line 0\nlin\n[fissile-oci: "), "{log}");
        assert!(log.ends_with("\nline 999\n"), "{log}");
        assert!(log.len() < 200, "{log}");
    }
}
