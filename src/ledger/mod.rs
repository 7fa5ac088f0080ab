//! Owns the usage ledger: an embedded store (redb) on a thread of its own; increments that arrive together share one sync.

mod store;

pub use store::{
    Answer, Increment, Pending, Prior, Rules, Sample, Sent, Snapshot, FILE, MAX_QUANTITY,
};

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

/// At most this many increments share one transaction (and its sync).
const MAX_BATCH: usize = 1024;

/// Why the ledger cannot be used; the caller says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LedgerError(pub String);

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Job {
    Add(Increment, Reply<u64>),
    Lock(u64, String, Sent, Reply<()>),
    Plan(Rules, Reply<Vec<Pending>>),
    Settle(Pending, Answer, Reply<Option<Sent>>),
    Snapshot(u64, Reply<Snapshot>),
    Close(u64, Reply<Snapshot>),
    Sample(Vec<Sample>, Reply<()>),
}

/// A handle on the ledger's thread; cheap to clone, usable from any task.
#[derive(Clone)]
pub struct Ledger {
    jobs: mpsc::Sender<Job>,
    /// Where it lives; `None`: in memory, lost with the process.
    pub dir: Option<PathBuf>,
}

impl Ledger {
    /// Opens the ledger in `dir` (created if missing, mode 0710: its group reaches the socket
    /// in it, nobody else does), or in memory, and starts
    /// its thread.
    pub fn open(dir: Option<&Path>) -> Result<Ledger, LedgerError> {
        if let Some(dir) = dir {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o710)
                .create(dir)
                .map_err(|e| LedgerError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let (db, repaired) = store::open(dir).map_err(|e| {
            LedgerError(match dir {
                Some(dir) => format!("cannot open {}: {e}", dir.join(FILE).display()),
                None => format!("cannot open an in-memory ledger: {e}"),
            })
        })?;
        if repaired {
            // A SIGKILL, an OOM kill or a power loss: what was committed is there, and the
            // records that were planned are resent identical (store::open marks them uncertain).
            tracing::info!(
                ledger = %dir.map(|d| d.join(FILE).display().to_string()).unwrap_or_default(),
                "the ledger was not closed cleanly (mpgate was killed or crashed): repaired to its last commit"
            );
        }
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("mpgate-ledger".into())
            .spawn(move || serve(db, queue))
            .map_err(|e| LedgerError(format!("cannot start the ledger's thread: {e}")))?;
        Ok(Ledger {
            jobs,
            dir: dir.map(Path::to_path_buf),
        })
    }

    async fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .map_err(|_| "the ledger's thread has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the ledger's thread has stopped".to_string())?
    }

    /// Adds an increment, durably (synced) before it returns; the hour's total after it.
    pub async fn add(&self, increment: Increment) -> Result<u64, String> {
        self.ask(|reply| Job::Add(increment, reply)).await
    }

    /// Locks an hour of a dimension with a record made elsewhere (the start's).
    pub async fn lock(&self, hour_ms: u64, dimension: &str, sent: Sent) -> Result<(), String> {
        let dimension = dimension.to_owned();
        self.ask(|reply| Job::Lock(hour_ms, dimension, sent, reply))
            .await
    }

    /// Plans the records to send now ([`store::plan`]).
    pub async fn plan(&self, rules: Rules) -> Result<Vec<Pending>, String> {
        self.ask(|reply| Job::Plan(rules, reply)).await
    }

    /// Records MeterUsage's answer to a planned record ([`store::settle`]).
    pub async fn settle(&self, pending: Pending, answer: Answer) -> Result<Option<Sent>, String> {
        self.ask(|reply| Job::Settle(pending, answer, reply)).await
    }

    /// The last snapshot, then the ledger closed: its file marked cleanly shut down, so the
    /// next start opens it without a recovery pass. Later calls find the thread stopped.
    pub async fn close(&self, current_ms: u64) -> Result<Snapshot, String> {
        self.ask(|reply| Job::Close(current_ms, reply)).await
    }

    /// Adds a scrape's samples to their hours, durably ([`store::sample`]).
    pub async fn sample(&self, samples: Vec<Sample>) -> Result<(), String> {
        self.ask(|reply| Job::Sample(samples, reply)).await
    }

    /// Everything the ledger holds; `current_ms` is the start of the open hour.
    pub async fn snapshot(&self, current_ms: u64) -> Result<Snapshot, String> {
        self.ask(|reply| Job::Snapshot(current_ms, reply)).await
    }
}

/// The ledger's thread: jobs in order; increments queued together go in one transaction.
fn serve(db: redb::Database, queue: mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Add(first, reply) => {
                let mut batch = vec![(first, reply)];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(Job::Add(inc, reply)) => batch.push((inc, reply)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let increments: Vec<Increment> = batch.iter().map(|(i, _)| i.clone()).collect();
                match store::add(&db, &increments) {
                    Ok(answers) => {
                        for ((_, reply), answer) in batch.into_iter().zip(answers) {
                            let _ = reply.send(answer);
                        }
                    }
                    Err(e) => {
                        for (_, reply) in batch {
                            let _ = reply.send(Err(format!("the ledger cannot be written: {e}")));
                        }
                    }
                }
            }
            Job::Lock(hour, dimension, sent, reply) => {
                let _ = reply.send(store::lock(&db, hour, &dimension, &sent));
            }
            Job::Plan(rules, reply) => {
                let _ = reply.send(store::plan(&db, &rules));
            }
            Job::Settle(pending, answer, reply) => {
                let _ = reply.send(store::settle(&db, &pending, &answer));
            }
            Job::Snapshot(current, reply) => {
                let _ = reply.send(store::snapshot(&db, current));
            }
            Job::Close(current, reply) => {
                let snapshot = store::snapshot(&db, current);
                drop(db);
                let _ = reply.send(snapshot);
                return;
            }
            Job::Sample(samples, reply) => {
                let _ = reply.send(store::sample(&db, &samples));
            }
        }
    }
}

#[cfg(test)]
mod tests;
