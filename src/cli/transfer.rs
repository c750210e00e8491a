//! How pushes and pulls show themselves: a progress bar per blob on a terminal, one line per
//! blob otherwise, a JSON event per blob with `--log-format json`, nothing with `-q`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use fissile_oci::registry::{BlobKind, BlobOutcome, Reporter};

use super::printer::human_size;
use super::{LogFormat, Printer};

pub struct TransferDisplay {
    printer: Printer,
    /// `push` or `pull`, for the lines.
    verb: &'static str,
    bars: Option<MultiProgress>,
    blobs: Mutex<HashMap<String, Blob>>,
}

struct Blob {
    kind: BlobKind,
    size: u64,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl TransferDisplay {
    pub fn new(printer: Printer, verb: &'static str) -> TransferDisplay {
        let live = printer.log_format == LogFormat::Text
            && !printer.quiet
            && std::io::stderr().is_terminal();
        TransferDisplay {
            printer,
            verb,
            bars: live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            blobs: Mutex::new(HashMap::new()),
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn kind_name(kind: BlobKind) -> &'static str {
    match kind {
        BlobKind::Config => "config",
        BlobKind::Layer => "layer",
    }
}

impl Reporter for TransferDisplay {
    fn start(&self, digest: &str, size: u64, kind: BlobKind) {
        let bar = self.bars.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template(
                    "  {prefix:20} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{} {}", kind_name(kind), short(digest)));
            bar
        });
        self.blobs.lock().expect("blobs lock").insert(
            digest.to_string(),
            Blob {
                kind,
                size,
                started: Instant::now(),
                bar,
            },
        );
    }

    fn advance(&self, digest: &str, done: u64) {
        if let Some(Blob { bar: Some(bar), .. }) =
            self.blobs.lock().expect("blobs lock").get(digest)
        {
            bar.set_position(done);
        }
    }

    fn finish(&self, digest: &str, outcome: &BlobOutcome) {
        let Some(blob) = self.blobs.lock().expect("blobs lock").remove(digest) else {
            return;
        };
        let what = match outcome {
            BlobOutcome::Uploaded => "pushed".to_string(),
            BlobOutcome::Existed => "already there".to_string(),
            BlobOutcome::Mounted { from } => format!("mounted from {from}"),
            BlobOutcome::Downloaded => "pulled".to_string(),
            BlobOutcome::Stored => "already in the store".to_string(),
        };
        let seconds = blob.started.elapsed().as_secs_f64();
        if let Some(bar) = blob.bar {
            bar.set_position(blob.size);
            bar.finish_with_message(what);
            return;
        }
        match self.printer.log_format {
            LogFormat::Json if !self.printer.quiet => eprintln!(
                "{}",
                serde_json::json!({"event": "blob", "direction": self.verb, "kind": kind_name(blob.kind),
                    "digest": digest, "bytes": blob.size, "outcome": what, "seconds": seconds})
            ),
            LogFormat::Json => {}
            LogFormat::Text => self.printer.info(format_args!(
                "{} {:6} {} ({}): {what} in {seconds:.1}s",
                self.verb,
                kind_name(blob.kind),
                digest,
                human_size(blob.size)
            )),
        }
    }
}
