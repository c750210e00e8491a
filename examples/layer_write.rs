//! Throughput probe for the deterministic layer writer (`fissile_oci::oci::write_layer`), used by
//! `scripts/bench/layers.sh`: writes a directory tree as one layer into an OCI layout store and
//! prints one JSON line per run with sizes, wall time and input MB/s (MB = 10^6 bytes).
//!
//! ```text
//! cargo run --release --example layer_write -- <TREE> --store <DIR> [--compression gzip|zstd|none] [--repeat N]
//! ```
//!
//! Later runs write the same blob again; the store then keeps the existing blob and skips the
//! fsync, so only the first run of a fresh store pays for making the blob durable.

#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use fissile_oci::oci::{write_layer, Compression, LayerOptions, OciStore};

#[derive(Parser)]
#[command(about = "Write TREE as a layer into an OCI store and report throughput as JSON lines")]
struct Args {
    /// The directory to archive.
    tree: PathBuf,
    /// The OCI layout directory (created if missing).
    #[arg(long)]
    store: PathBuf,
    /// gzip (level 6), zstd (level 3) or none.
    #[arg(long, default_value = "gzip")]
    compression: Compression,
    /// Write the layer this many times, one JSON line each.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let input_bytes = regular_file_bytes(&args.tree)?;
    let store = OciStore::open_or_create(&args.store)?;
    let options = LayerOptions {
        compression: args.compression,
        ..LayerOptions::default()
    };
    for _ in 0..args.repeat {
        let start = Instant::now();
        let layer = write_layer(&store, &args.tree, &options)?;
        let seconds = start.elapsed().as_secs_f64();
        let line = serde_json::json!({
            "compression": format!("{:?}", args.compression).to_lowercase(),
            "input_bytes": input_bytes,
            "uncompressed_tar_bytes": layer.uncompressed_size,
            "blob_bytes": layer.descriptor.size(),
            "seconds": seconds,
            "mb_per_s": input_bytes as f64 / 1e6 / seconds,
            "digest": layer.descriptor.digest().to_string(),
        });
        println!("{line}");
    }
    Ok(())
}

/// Sum of the sizes of the regular files under `dir` (symlinks not followed).
fn regular_file_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in walkdir::WalkDir::new(dir) {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}
