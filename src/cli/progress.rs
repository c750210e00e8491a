//! How a compile shows itself: a live display on a terminal (a line per running package with
//! its elapsed time and last log line, and an overall bar), one line per event otherwise,
//! fissile's `compilation-<pkg> > ` log lines with -v, or JSON events with --log-format json.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use fissile_oci::compile::Progress;

use super::{LogFormat, Printer};

pub struct Display {
    printer: Printer,
    mode: Mode,
    done: usize,
    total: usize,
    started: Instant,
}

enum Mode {
    Lines { follower: Option<LogFollower> },
    Live(Live),
    Json,
}

impl Display {
    pub fn new(printer: Printer) -> Display {
        let mode = if printer.log_format == LogFormat::Json {
            Mode::Json
        } else if !printer.quiet && !printer.verbose && std::io::stderr().is_terminal() {
            Mode::Live(Live::new())
        } else {
            Mode::Lines {
                follower: printer.verbose.then(LogFollower::start),
            }
        };
        Display {
            printer,
            mode,
            done: 0,
            total: 0,
            started: Instant::now(),
        }
    }

    pub fn show(&mut self, p: Progress<'_>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        if let Progress::Planned { total, .. } = p {
            self.total = total;
        }
        if matches!(p, Progress::Cached { .. } | Progress::Finished { .. }) {
            self.done += 1;
        }
        match &mut self.mode {
            Mode::Json => {
                let event = match p {
                    Progress::Planned {
                        total,
                        cached,
                        imported,
                        pulled,
                        elsewhere,
                    } => {
                        serde_json::json!({"event": "planned", "total": total, "cached": cached, "imported": imported,
                            "in_shared_cache": pulled, "other_shards": elsewhere})
                    }
                    Progress::Cached { name } => {
                        serde_json::json!({"event": "cached", "package": name})
                    }
                    Progress::Started { name, log } => {
                        serde_json::json!({"event": "started", "package": name, "log": log})
                    }
                    Progress::Pulling { name } => {
                        serde_json::json!({"event": "pulling", "package": name})
                    }
                    Progress::Waiting { name, shard } => {
                        serde_json::json!({"event": "waiting", "package": name, "shard": shard})
                    }
                    Progress::Pushing { remaining } => {
                        serde_json::json!({"event": "pushing", "remaining": remaining})
                    }
                    Progress::Finished { report } => serde_json::json!({
                        "event": "finished", "package": report.name, "status": report.status,
                        "seconds": report.seconds, "error": report.error, "log": report.log,
                    }),
                    Progress::Note { name, message } => {
                        serde_json::json!({"event": "note", "package": name, "message": message})
                    }
                    Progress::Stopping { reason } => {
                        serde_json::json!({"event": "stopping", "reason": reason})
                    }
                };
                if !self.printer.quiet {
                    eprintln!("{event}");
                }
            }
            Mode::Live(live) => live.show(&p, self.done, self.total),
            Mode::Lines { follower } => match p {
                Progress::Planned {
                    total,
                    cached,
                    imported,
                    pulled,
                    elsewhere,
                } => {
                    let imports = if imported > 0 {
                        format!(", {imported} from compiled releases")
                    } else {
                        String::new()
                    };
                    let shared = if pulled > 0 {
                        format!(", {pulled} in the shared cache")
                    } else {
                        String::new()
                    };
                    let others = if elsewhere > 0 {
                        format!(", {elsewhere} compiled by other shards")
                    } else {
                        String::new()
                    };
                    self.printer.info(format_args!(
                        "{total} packages, {cached} cached{imports}{shared}{others}, {} to compile",
                        total - cached - imported - pulled - elsewhere
                    ));
                }
                Progress::Cached { name } => self.printer.detail(format_args!("cached:   {name}")),
                Progress::Started { name, log } => {
                    self.printer
                        .info(format_args!("[{elapsed:>6.1}s] compile:  {name}"));
                    if let Some(f) = follower {
                        f.follow(name, log);
                    }
                }
                Progress::Finished { report } => {
                    if let Some(f) = follower {
                        f.finish(&report.name);
                    }
                    let detail = report
                        .error
                        .as_ref()
                        .map(|e| format!(" - {e}"))
                        .unwrap_or_default();
                    let status = format!("{}:", report.status);
                    self.printer.info(format_args!(
                        "[{elapsed:>6.1}s] {status:9} {} ({:.1}s) [{}/{}]{detail}",
                        report.name, report.seconds, self.done, self.total
                    ));
                }
                Progress::Pulling { name } => self
                    .printer
                    .detail(format_args!("[{elapsed:>6.1}s] pull:     {name}")),
                Progress::Waiting { name, shard } => self.printer.info(format_args!(
                    "[{elapsed:>6.1}s] waiting:  {name} (shard {shard} compiles it)"
                )),
                Progress::Pushing { remaining } => self.printer.info(format_args!(
                    "[{elapsed:>6.1}s] pushing:  {remaining} to the shared cache"
                )),
                Progress::Note { name, message } => self.printer.info(format_args!(
                    "[{elapsed:>6.1}s] note:     {name}: {message}"
                )),
                Progress::Stopping { reason } => self
                    .printer
                    .info(format_args!("[{elapsed:>6.1}s] stopping: {reason}")),
            },
        }
    }

    pub fn finish(&mut self) {
        match &mut self.mode {
            Mode::Lines { follower: Some(f) } => f.stop(),
            Mode::Live(live) => live.finish(),
            _ => {}
        }
    }
}

/// indicatif bars: one overall, one spinner per running package showing its last log line.
struct Live {
    multi: MultiProgress,
    overall: ProgressBar,
    running: Arc<Mutex<HashMap<String, (ProgressBar, PathBuf)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Live {
    fn new() -> Live {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let running: Arc<Mutex<HashMap<String, (ProgressBar, PathBuf)>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s) = (running.clone(), stop.clone());
        // Last log lines are read from the files a few times a second, off the scheduler thread.
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                for (bar, log) in r.lock().expect("running bars").values() {
                    if let Some(line) = last_line(log) {
                        bar.set_message(line);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Live {
            multi,
            overall,
            running,
            stop,
        }
    }

    fn show(&mut self, p: &Progress<'_>, done: usize, total: usize) {
        self.overall.set_length(total as u64);
        self.overall.set_position(done as u64);
        match p {
            Progress::Started { name, log } => {
                let bar = self
                    .multi
                    .insert_before(&self.overall, ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix:20} {elapsed:>4} {wide_msg}")
                        .expect("valid template"),
                );
                bar.set_prefix(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.running
                    .lock()
                    .expect("running bars")
                    .insert(name.to_string(), (bar, log.to_path_buf()));
            }
            Progress::Finished { report } => {
                if let Some((bar, _)) = self
                    .running
                    .lock()
                    .expect("running bars")
                    .remove(&report.name)
                {
                    bar.finish_and_clear();
                }
                let detail = report
                    .error
                    .as_ref()
                    .map(|e| format!(" - {e}"))
                    .unwrap_or_default();
                self.multi
                    .println(format!(
                        "{:9} {} ({:.1}s){detail}",
                        format!("{}:", report.status),
                        report.name,
                        report.seconds
                    ))
                    .ok();
            }
            Progress::Planned {
                cached,
                imported,
                pulled,
                elsewhere,
                ..
            } => {
                let mut parts = vec![format!("{cached} cached")];
                if *imported > 0 {
                    parts.push(format!("{imported} imported"));
                }
                if *pulled > 0 {
                    parts.push(format!("{pulled} in the shared cache"));
                }
                if *elsewhere > 0 {
                    parts.push(format!("{elsewhere} for other shards"));
                }
                self.overall.set_message(parts.join(", "));
            }
            Progress::Pulling { .. } => {}
            Progress::Waiting { name, shard } => {
                self.multi
                    .println(format!("waiting: {name} (shard {shard} compiles it)"))
                    .ok();
            }
            Progress::Pushing { remaining } => {
                self.overall
                    .set_message(format!("pushing {remaining} to the shared cache"));
            }
            Progress::Note { name, message } => {
                self.multi
                    .println(format!("note:     {name}: {message}"))
                    .ok();
            }
            Progress::Stopping { reason } => {
                self.multi.println(format!("stopping: {reason}")).ok();
            }
            Progress::Cached { .. } => {}
        }
    }

    fn finish(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for (bar, _) in self.running.lock().expect("running bars").values() {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
    }
}

fn last_line(log: &Path) -> Option<String> {
    let mut file = fs_err::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(std::io::SeekFrom::Start(len.saturating_sub(4096)))
        .ok()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(120).collect())
}

/// Streams running packages' logs to stderr as `compilation-<pkg> > line`.
#[derive(Clone)]
struct LogFollower {
    inner: Arc<Mutex<FollowState>>,
}

#[derive(Default)]
struct FollowState {
    files: HashMap<String, (PathBuf, u64, String)>,
    stopped: bool,
}

impl LogFollower {
    fn start() -> LogFollower {
        let follower = LogFollower {
            inner: Arc::new(Mutex::new(FollowState::default())),
        };
        let f = follower.clone();
        std::thread::spawn(move || loop {
            {
                let mut state = f.inner.lock().expect("follower state");
                if state.stopped {
                    return;
                }
                let names: Vec<String> = state.files.keys().cloned().collect();
                for name in names {
                    pump(&mut state, &name, false);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        });
        follower
    }

    fn follow(&self, name: &str, log: &Path) {
        self.inner
            .lock()
            .expect("follower state")
            .files
            .insert(name.to_string(), (log.to_path_buf(), 0, String::new()));
    }

    fn finish(&self, name: &str) {
        let mut state = self.inner.lock().expect("follower state");
        pump(&mut state, name, true);
        state.files.remove(name);
    }

    fn stop(&self) {
        self.inner.lock().expect("follower state").stopped = true;
    }
}

fn pump(state: &mut FollowState, name: &str, flush: bool) {
    let Some((path, offset, partial)) = state.files.get_mut(name) else {
        return;
    };
    let Ok(mut file) = fs_err::File::open(&*path) else {
        return;
    };
    if file.seek(std::io::SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_err() {
        return;
    }
    *offset += buf.len() as u64;
    partial.push_str(&String::from_utf8_lossy(&buf));
    while let Some(at) = partial.find('\n') {
        let line: String = partial.drain(..=at).collect();
        eprintln!("compilation-{name} > {}", line.trim_end_matches('\n'));
    }
    if flush && !partial.is_empty() {
        eprintln!("compilation-{name} > {partial}");
        partial.clear();
    }
}
