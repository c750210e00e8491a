//! A cheap structural check of a tar stream from its first bytes: enough to refuse an empty
//! file or garbage whose digest happens to be the one a manifest records, without reading (or
//! unpacking) the whole archive.

use std::io::Read;

use super::compression::decompressing_reader;

/// How much of an archive [`check_tar_head`] needs: one compressed block of any real tarball
/// holds its first header.
pub const TAR_HEAD_BYTES: usize = 64 * 1024;

/// Whether `head` (the first bytes of a plain, gzip or zstd tar stream, at most
/// [`TAR_HEAD_BYTES`] of them) starts with a valid tar header, or with the end-of-archive block
/// of an empty archive. Says why not.
pub fn check_tar_head(head: &[u8]) -> Result<(), String> {
    if head.is_empty() {
        return Err("it is empty".into());
    }
    let mut block = [0u8; 512];
    let mut reader = decompressing_reader(std::io::Cursor::new(head.to_vec()))
        .map_err(|e| format!("it cannot be decompressed: {e}"))?;
    let mut got = 0;
    while got < block.len() {
        match reader.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            // A stream cut at TAR_HEAD_BYTES ends early, which is fine once a block is in.
            Err(_) if got == block.len() => break,
            Err(e) => return Err(format!("it cannot be decompressed: {e}")),
        }
    }
    if got < block.len() {
        return Err(format!(
            "it holds {got} bytes of tar data, less than one header"
        ));
    }
    if block.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let stored = parse_octal(&block[148..156]).ok_or("its first header has no checksum")?;
    // The checksum counts the checksum field itself as eight spaces.
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if stored != computed {
        return Err("its first tar header's checksum does not match".into());
    }
    Ok(())
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == ' ' || c == '\0');
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_with_one_file() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "packaging", &b"echo\n"[..])
            .unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn real_tarballs_pass_and_garbage_does_not() {
        let tar = tar_with_one_file();
        assert_eq!(check_tar_head(&tar), Ok(()));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(check_tar_head(&gz), Ok(()));
        assert_eq!(check_tar_head(&gz[..gz.len().min(TAR_HEAD_BYTES)]), Ok(()));
        assert_eq!(check_tar_head(&[0u8; 1024]), Ok(()), "an empty archive");
        assert!(check_tar_head(b"").unwrap_err().contains("empty"));
        assert!(check_tar_head(b"hello, not a tarball").is_err());
        let mut broken = tar.clone();
        broken[0] ^= 1;
        assert!(check_tar_head(&broken).unwrap_err().contains("checksum"));
        assert!(
            check_tar_head(&gz[..10]).is_err(),
            "a gzip stream cut short"
        );
    }
}
