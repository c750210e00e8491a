//! Parallel gzip (the pigz way): the stream is cut into fixed 1 MiB blocks, each raw-deflated
//! with the previous 32 KiB as its dictionary and ended with a sync flush (the last one ends the
//! stream), several blocks at a time on the rayon pool; the CRC is combined from per-block
//! CRCs. The output depends only on the block size and the level, never on the number of threads
//! or on timing, so layers stay byte-identical across machines. Level-6 deflate on one core is
//! slower than reading, tarring and hashing together; this puts the second core to work (see
//! docs/DECISIONS.md, "Deterministic layers with parallel gzip").

use std::io::Write;

use rayon::prelude::*;

const BLOCK: usize = 1 << 20;
const BATCH: usize = 4;
const WINDOW: usize = 32 * 1024;

/// Compresses the concatenation of `chunks` as one gzip member into `out`.
pub fn compress<W: Write>(
    chunks: impl IntoIterator<Item = Vec<u8>>,
    mut out: W,
    level: u32,
) -> std::io::Result<W> {
    // The header flate2's GzBuilder writes with mtime 0 and OS 255, so readers see the same
    // kind of member as from the single-threaded writer.
    let xfl = match level {
        9.. => 2,
        1 => 4,
        _ => 0,
    };
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
    let mut crc = flate2::Crc::new();
    let mut dictionary: Vec<u8> = Vec::new();
    let mut pending: Vec<u8> = Vec::with_capacity(BLOCK * BATCH * 2);
    let mut chunks = chunks.into_iter();
    loop {
        let mut ended = false;
        // One byte more than a batch tells us the batch is not the end of the stream.
        while pending.len() <= BLOCK * BATCH {
            match chunks.next() {
                Some(c) => pending.extend_from_slice(&c),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let take = if ended { pending.len() } else { BLOCK * BATCH };
        let batch = &pending[..take];
        let blocks: Vec<&[u8]> = if batch.is_empty() {
            vec![&[][..]]
        } else {
            batch.chunks(BLOCK).collect()
        };
        let last = blocks.len() - 1;
        let compressed: Vec<std::io::Result<(Vec<u8>, flate2::Crc)>> = blocks
            .par_iter()
            .enumerate()
            .map(|(i, block)| {
                let dict = if i == 0 {
                    &dictionary[..]
                } else {
                    &batch[i * BLOCK - WINDOW..i * BLOCK]
                };
                let mut block_crc = flate2::Crc::new();
                block_crc.update(block);
                Ok((
                    deflate_block(dict, block, level, ended && i == last)?,
                    block_crc,
                ))
            })
            .collect();
        for result in compressed {
            let (bytes, block_crc) = result?;
            out.write_all(&bytes)?;
            crc.combine(&block_crc);
        }
        if ended {
            break;
        }
        dictionary.clear();
        dictionary.extend_from_slice(&batch[batch.len() - WINDOW..]);
        pending.drain(..take);
    }
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&crc.amount().to_le_bytes())?;
    Ok(out)
}

fn deflate_block(
    dictionary: &[u8],
    block: &[u8],
    level: u32,
    last: bool,
) -> std::io::Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary)
            .map_err(std::io::Error::other)?;
    }
    let mut out = Vec::with_capacity(block.len() + block.len() / 8 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&block[consumed..], &mut out, flush)
            .map_err(std::io::Error::other)?;
        let all_in = c.total_in() as usize == block.len();
        // A sync flush is complete when deflate stops short of filling the buffer.
        let done = all_in
            && if last {
                status == Status::StreamEnd
            } else {
                out.len() < out.capacity()
            };
        if done {
            return Ok(out);
        }
        out.reserve(64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Text-like, partly repetitive data crossing block and batch boundaries.
        let mut v = Vec::with_capacity(len);
        let mut x: u32 = 12345;
        while v.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let word =
                ["alpha ", "beta ", "gamma\n", "delta ", "0123456789 "][(x >> 16) as usize % 5];
            v.extend_from_slice(word.as_bytes());
            if x % 7 == 0 {
                v.push((x >> 8) as u8);
            }
        }
        v.truncate(len);
        v
    }

    fn roundtrip(data: &[u8], chunk: usize) -> Vec<u8> {
        let chunks: Vec<Vec<u8>> = data.chunks(chunk.max(1)).map(|c| c.to_vec()).collect();
        let gz = compress(chunks, Vec::new(), 6).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data, "round trip of {} bytes", data.len());
        gz
    }

    #[test]
    fn round_trips_at_every_boundary() {
        for len in [
            0,
            1,
            100,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            BLOCK * BATCH,
            BLOCK * BATCH + 1,
            BLOCK * BATCH * 2 + 12345,
        ] {
            roundtrip(&sample(len), 256 * 1024);
        }
        roundtrip(&sample(BLOCK * 3 + 7), 1000);
    }

    #[test]
    fn output_does_not_depend_on_threads_or_chunking() {
        let data = sample(BLOCK * 6 + 999);
        let reference = roundtrip(&data, 256 * 1024);
        assert_eq!(reference, roundtrip(&data, 4096));
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let gz = pool.install(|| {
                compress(data.chunks(65536).map(|c| c.to_vec()), Vec::new(), 6).unwrap()
            });
            assert_eq!(gz, reference, "{threads} threads");
        }
    }
}
