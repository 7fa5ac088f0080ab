//! Owns the metering agent, a duty beside the workload (or alone, as a sidecar): the ledger, the push API on its socket, the hourly sender.

pub mod client;
mod push;
mod scrape;
mod send;

/// The push API's parser (for the fuzz target): the increment a body asks for, or the
/// sentence the client gets.
pub use push::parse as parse_record;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::exit::Failure;
use crate::ledger::{Ledger, Prior, Sent, Snapshot};
use crate::metering::meter_usage::{hour_start_ms, Session, StartRecord};
use crate::supervisor::{Duty, Event, Loss, Phase};

/// The socket's name in the ledger directory (or a private directory without one).
pub const SOCKET_FILE: &str = "usage.sock";
/// The variable that tells the workload (and `mpgate usage add`) where the socket is.
pub const SOCKET_VARIABLE: &str = "MPGATE_USAGE_SOCKET";
/// The variable that tells the workload the push API's loopback URL, with `--usage-listen`.
pub const URL_VARIABLE: &str = "MPGATE_USAGE_URL";

/// Why the agent cannot start; exit 2 (a configuration the container must fix).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentError(pub String);

/// What the agent runs with.
pub struct Settings {
    pub dimensions: Vec<String>,
    pub metering_hour: Duration,
    pub socket: PathBuf,
    /// The push API on TCP too (a loopback address).
    pub listen: Option<std::net::SocketAddr>,
    pub jitter: Duration,
    pub send_zero: bool,
    pub deadline: Duration,
    pub flush_timeout: Duration,
    /// Dimensions read from the workload's metrics.
    pub scrape: Option<crate::config::scrape::Scrape>,
    /// Whether the agent started the workload (its counters start at zero) or is a sidecar.
    pub workload: bool,
}

/// The metering agent: started before the workload, finished (the partial hour flushed)
/// after it.
pub struct Agent {
    ledger: Ledger,
    socket: PathBuf,
    /// `http://127.0.0.1:PORT` with `--usage-listen`.
    url: Option<String>,
    tcp_server: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    sender: Option<JoinHandle<()>>,
    /// The scraper ends first at a stop (one last scrape), then the rest are stopped, so
    /// the flush holds its samples.
    scraper: Option<(JoinHandle<()>, watch::Sender<bool>, Arc<Notify>)>,
    server: Option<JoinHandle<()>>,
    phase: Phase,
    lost: watch::Receiver<Option<Loss>>,
    lost_reported: bool,
    sent: Arc<Mutex<Vec<serde_json::Value>>>,
    metering_hour: Duration,
}

impl Agent {
    /// Binds the socket (0660) and starts the push API and the sender (which locks the start's
    /// hour in the ledger first). `session` is the start's caller, `None` when the start was
    /// not verified (`allow`): the sender then connects itself, and a first record answered
    /// CustomerNotEntitledException stops the workload.
    pub async fn start(
        settings: Settings,
        ledger: Ledger,
        session: Option<Session>,
        config: Arc<Config>,
        start: Option<&StartRecord>,
    ) -> Result<Agent, AgentError> {
        let listener = bind(&settings.socket)?;
        let tcp = match settings.listen {
            None => None,
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                AgentError(format!(
                    "cannot serve the push API on {addr}: {e}; choose a free loopback port for MPGATE_USAGE_LISTEN"
                ))
            })?),
        };
        let url = tcp
            .as_ref()
            .and_then(|t| t.local_addr().ok())
            .map(|a| format!("http://{a}"));
        let (stop, stopped) = watch::channel(false);
        let (lose, lost) = watch::channel(None);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let push = Arc::new(push::Push {
            ledger: ledger.clone(),
            dimensions: settings.dimensions.clone(),
            metering_hour: settings.metering_hour,
        });
        let server = tokio::spawn(push::serve(
            push::Listener::Unix(listener),
            push.clone(),
            stopped.clone(),
        ));
        let tcp_server = tcp
            .map(|tcp| tokio::spawn(push::serve(push::Listener::Tcp(tcp), push, stopped.clone())));
        let sender = send::Sender {
            ledger: ledger.clone(),
            session,
            config,
            dimensions: settings.dimensions,
            metering_hour: settings.metering_hour,
            jitter: settings.jitter,
            send_zero: settings.send_zero,
            deadline: settings.deadline,
            flush_timeout: settings.flush_timeout,
            sent: sent.clone(),
            start: start.map(|start| {
                let sent = Sent {
                    quantity: 0,
                    how: "start".into(),
                    metering_record_id: start.metering_record_id.clone(),
                    request_id: start.request_id.clone(),
                };
                (start.hour_start_ms, start.dimension.clone(), sent)
            }),
        };
        let sender = tokio::spawn(sender.run(stopped, lose));
        let scraper = settings.scrape.map(|scrape| {
            let (stop, stopped) = watch::channel(false);
            let now = Arc::new(Notify::new());
            let first = match (settings.workload, ledger.dir.is_some()) {
                (true, _) => Prior::Zero,
                (false, true) => Prior::Last,
                (false, false) => Prior::LastOrSelf,
            };
            let scraper = scrape::Scraper {
                scrape,
                ledger: ledger.clone(),
                metering_hour: settings.metering_hour,
                first,
                now: now.clone(),
            };
            (tokio::spawn(scraper.run(stopped)), stop, now)
        });
        tracing::info!(
            socket = %settings.socket.display(),
            ledger = %ledger.dir.as_deref().map(|d| d.display().to_string()).unwrap_or_else(|| "memory".into()),
            "metering agent started: POST usage to http://localhost/v1/usage on the socket ({SOCKET_VARIABLE}), or run 'mpgate usage add DIMENSION N'"
        );
        Ok(Agent {
            ledger,
            url,
            tcp_server,
            socket: settings.socket,
            stop,
            sender: Some(sender),
            scraper,
            server: Some(server),
            phase: Phase::Running,
            lost,
            lost_reported: false,
            sent,
            metering_hour: settings.metering_hour,
        })
    }

    /// Where the push API listens.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The push API's loopback URL, with `--usage-listen`.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// This run's records, as the result file lists them.
    pub fn sent(&self) -> Vec<serde_json::Value> {
        crate::http::lock(self.sent.as_ref()).clone()
    }

    /// What the ledger still holds, once the agent has finished; the ledger is closed after it.
    pub async fn close(&self) -> Option<Snapshot> {
        let current = hour_start_ms(std::time::SystemTime::now(), self.metering_hour);
        self.ledger.close(current).await.ok()
    }

    async fn step(&mut self) -> Event {
        loop {
            if self.phase == Phase::Exited {
                if let Some((scraper, _, _)) = self.scraper.as_mut() {
                    let _ = scraper.await;
                    self.scraper = None;
                    let _ = self.stop.send(true);
                }
                if let Some(server) = self.server.as_mut() {
                    let _ = server.await;
                    self.server = None;
                }
                if let Some(server) = self.tcp_server.as_mut() {
                    let _ = server.await;
                    self.tcp_server = None;
                }
                if let Some(sender) = self.sender.as_mut() {
                    let _ = sender.await;
                    self.sender = None;
                }
                let _ = std::fs::remove_file(&self.socket);
                return Event::Done;
            }
            if !self.lost_reported {
                if let Some(loss) = self.lost.borrow().clone() {
                    self.lost_reported = true;
                    return Event::Lost(loss);
                }
            }
            if self.lost.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Duty for Agent {
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        // The workload may report its last usage while it shuts down: the socket stays open
        // until it has exited.
        match (phase, &self.scraper) {
            // The workload's last usage, while it still serves its metrics.
            (Phase::Stopping, Some((_, _, now))) => now.notify_one(),
            (Phase::Exited, Some((_, stop, _))) => {
                let _ = stop.send(true);
            }
            (Phase::Exited, None) => {
                let _ = self.stop.send(true);
            }
            _ => {}
        }
    }

    fn next(&mut self) -> Pin<Box<dyn Future<Output = Event> + '_>> {
        Box::pin(self.step())
    }

    fn when_stopping(&self) -> Option<&'static str> {
        Some("the partial hour's usage is sent once the workload has exited")
    }
}

/// A loss the sender reports: MeterUsage said the buyer is not entitled.
pub(crate) fn loss(error: crate::metering::MeteringError) -> Loss {
    let failure = Failure::Metering(error);
    Loss {
        exit_code: failure.exit_code(),
        outcome: failure.outcome(),
        message: failure.to_string(),
    }
}

/// Binds the socket with mode 0660 (the workload's group may push; others may not): a stale
/// socket from a run that was killed is replaced, anything else at the path is refused.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, AgentError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(AgentError(format!(
                "cannot create the usage socket {}: something that is not a socket is there; remove it or set {SOCKET_VARIABLE} to another path",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    // SAFETY: umask only changes this process's file-creation mask; restored right after.
    let old = unsafe { libc::umask(0o117) };
    let bound = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    bound.map_err(|e| {
        AgentError(format!(
            "cannot create the usage socket {}: {e}; make its directory writable or set {SOCKET_VARIABLE}",
            path.display()
        ))
    })
}
