//! Where the lines go: a buffer per worker thread, written out in chunks by one writer thread.
//!
//! A request appends its line to its own thread's buffer under an uncontended lock: no
//! allocation, no channel, no wake-up of another thread. A buffer that reaches [`CHUNK`] is
//! handed to the writer whole (one hand-off per few hundred lines); the writer also sweeps
//! every buffer each [`FLUSH`], so a line reaches stdout within that. When nothing was logged
//! for a sweep the writer parks, and the next line wakes it.
//!
//! Memory is bounded: at most [`QUEUE`] chunks wait for a stuck stdout; a chunk that finds the
//! queue full is dropped and its lines counted, so a request never waits on the log.

use std::{
    cell::RefCell,
    io::Write,
    mem,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

/// How often the writer sweeps the workers' buffers while lines come: the longest a line
/// waits before it is written.
pub const FLUSH: Duration = Duration::from_millis(200);
/// A buffer this full is handed to the writer without waiting for the sweep.
pub const CHUNK: usize = 64 * 1024;
/// Chunks that may wait for the writer (4 MiB) before lines are dropped.
pub const QUEUE: usize = 64;

enum Message {
    Chunk(Vec<u8>),
    /// Lines came after the writer parked.
    Wake,
    /// Write out everything logged so far, then answer.
    Settle(SyncSender<()>),
}

/// The shared side of one log: the workers' buffers and the way to the writer.
pub(super) struct Lines {
    buffers: Mutex<Vec<Buffer>>,
    to_writer: SyncSender<Message>,
    parked: AtomicBool,
    dropped: prometheus::IntCounter,
}

/// One thread's lines, shared with the writer.
type Buffer = Arc<Mutex<Vec<u8>>>;

thread_local! {
    /// This thread's buffer in each log it has written to (one, outside tests).
    static MINE: RefCell<Vec<(Weak<Lines>, Buffer)>> = const { RefCell::new(Vec::new()) };
}

impl Lines {
    /// Starts the writer thread, writing to `out`.
    pub(super) fn start(
        out: Box<dyn Write + Send>,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Arc<Self>> {
        let (to_writer, rx) = sync_channel(QUEUE);
        let lines = Arc::new(Self {
            buffers: Mutex::new(Vec::new()),
            to_writer,
            parked: AtomicBool::new(false),
            dropped,
        });
        let weak = Arc::downgrade(&lines);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_out(weak, rx, out))?;
        Ok(lines)
    }

    /// Appends one line, written by `line` into this thread's buffer (which it must end with
    /// a newline).
    pub(super) fn append(self: &Arc<Self>, line: impl FnOnce(&mut Vec<u8>)) {
        // Fails only while the thread is exiting (a body dropped by a thread-local's
        // destructor): the line is counted as dropped.
        let full = MINE.try_with(|mine| {
            let mut mine = mine.borrow_mut();
            let me = Arc::as_ptr(self);
            // A Weak keeps its allocation, so the address is this log's for as long as the
            // entry exists.
            let buffer = match mine.iter().find(|(log, _)| std::ptr::eq(log.as_ptr(), me)) {
                Some((_, buffer)) => buffer,
                None => {
                    mine.retain(|(log, _)| log.strong_count() > 0);
                    let buffer = Arc::new(Mutex::new(Vec::with_capacity(CHUNK + 1024)));
                    self.buffers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(buffer.clone());
                    mine.push((Arc::downgrade(self), buffer));
                    &mine[mine.len() - 1].1
                }
            };
            let mut buf = buffer.lock().unwrap_or_else(|e| e.into_inner());
            line(&mut buf);
            (buf.len() >= CHUNK).then(|| mem::replace(&mut *buf, Vec::with_capacity(CHUNK + 1024)))
        });
        let Ok(full) = full else {
            self.dropped.inc();
            return;
        };
        if let Some(chunk) = full {
            self.send(chunk);
        } else if self.parked.load(Ordering::Acquire) && self.parked.swap(false, Ordering::AcqRel) {
            let _ = self.to_writer.try_send(Message::Wake);
        }
    }

    fn send(&self, chunk: Vec<u8>) {
        match self.to_writer.try_send(Message::Chunk(chunk)) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Chunk(chunk))) => self.drop_lines(&chunk),
            Err(_) => {}
        }
    }

    /// Writes `lines` out; what a failing output did not take is counted as dropped.
    fn write(&self, out: &mut dyn Write, lines: &[u8]) {
        let mut rest = lines;
        while !rest.is_empty() {
            match out.write(rest) {
                Ok(0) => break,
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.drop_lines(rest);
    }

    fn drop_lines(&self, chunk: &[u8]) {
        let lines = chunk.iter().filter(|&&b| b == b'\n').count();
        self.dropped.inc_by(lines as u64);
    }

    /// Waits (at most a second) until the lines logged so far are written.
    pub(super) fn settle(&self) {
        let (done, answer) = sync_channel(1);
        let mut message = Message::Settle(done);
        let until = Instant::now() + Duration::from_secs(1);
        // `SyncSender` has no timed send: a stuck stdout must not hold up the exit.
        loop {
            match self.to_writer.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < until => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = answer.recv_timeout(until.saturating_duration_since(Instant::now()));
    }

    /// Takes every buffer's lines; true when there were any.
    fn sweep(&self, out: &mut dyn Write) -> bool {
        let buffers = {
            let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
            // A thread that has exited leaves its buffer here alone: written out, then let go.
            buffers.retain(|b| Arc::strong_count(b) > 1 || !b.lock().is_ok_and(|b| b.is_empty()));
            buffers.clone()
        };
        let mut spare = Vec::with_capacity(CHUNK + 1024);
        let mut any = false;
        for buffer in buffers {
            {
                let mut buf = buffer.lock().unwrap_or_else(|e| e.into_inner());
                if buf.is_empty() {
                    continue;
                }
                mem::swap(&mut *buf, &mut spare);
            }
            any = true;
            self.write(out, &spare);
            spare.clear();
        }
        any
    }
}

fn write_out(lines: Weak<Lines>, rx: Receiver<Message>, mut out: Box<dyn Write + Send>) {
    let mut last_sweep = Instant::now();
    let mut quiet = false;
    loop {
        let message = if quiet {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(FLUSH.saturating_sub(last_sweep.elapsed()))
        };
        let settled = match message {
            Ok(Message::Chunk(chunk)) => {
                if let Some(lines) = lines.upgrade() {
                    lines.write(&mut *out, &chunk);
                }
                None
            }
            Ok(Message::Wake) => None,
            Ok(Message::Settle(done)) => Some(done),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        quiet = false;
        if settled.is_none() && last_sweep.elapsed() < FLUSH {
            continue;
        }
        let Some(lines) = lines.upgrade() else { return };
        last_sweep = Instant::now();
        if !lines.sweep(&mut *out) {
            // Nothing came for a whole sweep: park until a line does. Parked first, then one
            // more sweep, so a line appended in between is either swept now or wakes us.
            lines.parked.store(true, Ordering::SeqCst);
            quiet = !lines.sweep(&mut *out);
            if !quiet {
                lines.parked.store(false, Ordering::SeqCst);
            }
        }
        let _ = out.flush();
        if let Some(done) = settled {
            let _ = done.try_send(());
        }
    }
}
