//! Real ClickHouse behind the data sources: a Python worker (`emulators/clickhouse/worker.py`)
//! holding one chdb session, spoken to in JSON lines over its stdin and stdout.
//!
//! One query at a time, each under a timeout. A worker that times out, dies or answers
//! garbage is killed and replaced on the next query, with every data source loaded again. The
//! worker is killed with the emulator (`kill_on_drop`), and exits by itself when its stdin closes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use super::datasources::DataSourceDefinition;
use crate::EmulatorError;

/// The worker's source, run with `python -u -c`, so the binary needs no file next to it.
const WORKER_SOURCE: &str = include_str!("../../clickhouse/worker.py");
/// Longest answer line read from the worker; a longer one is an error.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;
/// Time allowed to start the worker (import chdb) and load every data source.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The environment variable naming the Python interpreter that has chdb.
pub const CHDB_PYTHON_ENV: &str = "CHDB_PYTHON";

/// The Python interpreter with chdb named by `CHDB_PYTHON`.
///
/// # Errors
/// [`EmulatorError::ClickHouseNotConfigured`] when the variable is unset or empty.
pub fn chdb_python_from_env() -> Result<PathBuf, EmulatorError> {
    std::env::var_os(CHDB_PYTHON_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .ok_or(EmulatorError::ClickHouseNotConfigured)
}

/// Rows ClickHouse answered.
#[derive(Debug, Clone)]
pub(crate) struct QueryRows {
    pub(crate) meta: Vec<Value>,
    pub(crate) rows: Vec<Value>,
    pub(crate) statistics: Value,
    pub(crate) rows_before_limit_at_least: Option<Value>,
}

/// Why a query gave no rows.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    /// ClickHouse refused or failed the query (syntax, unknown column, a failing function...).
    #[error("{0}")]
    ClickHouse(String),
    /// The query ran past the timeout; the worker was killed.
    #[error("the query ran longer than {0:?}")]
    Timeout(Duration),
    /// The worker could not be started or broke down.
    #[error("the ClickHouse worker failed: {0}")]
    Worker(String),
}

/// The worker's answer line.
#[derive(Debug, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    meta: Vec<Value>,
    #[serde(default)]
    rows: Vec<Value>,
    #[serde(default)]
    statistics: Value,
    #[serde(default)]
    rows_before_limit_at_least: Option<Value>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The ClickHouse of one emulator.
pub(crate) struct ClickHouse {
    python: PathBuf,
    timeout: Duration,
    worker: Mutex<Option<Worker>>,
}

impl std::fmt::Debug for ClickHouse {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClickHouse")
            .field("python", &self.python)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClickHouse {
    /// Starts the worker and loads `sources`.
    ///
    /// # Errors
    /// [`EmulatorError::ClickHouse`] when the interpreter cannot run the worker, chdb cannot be
    /// loaded, or a data source cannot be created.
    pub(crate) async fn start(
        python: &Path,
        timeout: Duration,
        sources: &[DataSourceDefinition],
    ) -> Result<Self, EmulatorError> {
        let clickhouse = Self { python: python.to_owned(), timeout, worker: Mutex::new(None) };
        let mut worker = clickhouse.worker.lock().await;
        *worker = Some(
            clickhouse
                .spawn_loaded(sources)
                .await
                .map_err(|error| EmulatorError::ClickHouse(format!("{}: {error}", python.display())))?,
        );
        drop(worker);
        Ok(clickhouse)
    }

    /// Runs `sql`; `sources` are loaded first if the worker has to be replaced.
    pub(crate) async fn query(
        &self,
        sql: &str,
        sources: &[DataSourceDefinition],
    ) -> Result<QueryRows, QueryError> {
        let mut slot = self.worker.lock().await;
        let mut worker = match slot.take() {
            Some(worker) => worker,
            None => self.spawn_loaded(sources).await?,
        };
        match tokio::time::timeout(self.timeout, worker.ask(sql)).await {
            Ok(Ok(answer)) => {
                *slot = Some(worker);
                answer
            }
            Ok(Err(broken)) => {
                worker.kill();
                Err(broken)
            }
            Err(_) => {
                worker.kill();
                tracing::warn!(timeout = ?self.timeout, "ClickHouse query timed out; worker killed");
                Err(QueryError::Timeout(self.timeout))
            }
        }
    }

    /// (Re)creates one data source's table.
    pub(crate) async fn load(
        &self,
        source: &DataSourceDefinition,
        sources: &[DataSourceDefinition],
    ) -> Result<(), QueryError> {
        for statement in source.ddl() {
            self.query(&statement, sources).await?;
        }
        Ok(())
    }

    /// Drops one data source's table.
    pub(crate) async fn drop_table(
        &self,
        name: &str,
        sources: &[DataSourceDefinition],
    ) -> Result<(), QueryError> {
        self.query(&format!("DROP TABLE IF EXISTS `{name}`"), sources).await.map(|_| ())
    }

    /// A new worker with every data source loaded.
    async fn spawn_loaded(&self, sources: &[DataSourceDefinition]) -> Result<Worker, QueryError> {
        let started = tokio::time::timeout(STARTUP_TIMEOUT, async {
            let mut worker = Worker::spawn(&self.python).await?;
            for statement in sources.iter().flat_map(DataSourceDefinition::ddl) {
                worker.ask(&statement).await?.map_err(|error| {
                    QueryError::Worker(format!("loading the data sources failed: {error}"))
                })?;
            }
            Ok(worker)
        })
        .await;
        started.unwrap_or_else(|_| {
            Err(QueryError::Worker(format!("it did not start within {STARTUP_TIMEOUT:?}")))
        })
    }
}

impl Worker {
    async fn spawn(python: &Path) -> Result<Self, QueryError> {
        let mut child = Command::new(python)
            .args(["-u", "-c", WORKER_SOURCE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| QueryError::Worker(format!("cannot run {}: {error}", python.display())))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(QueryError::Worker("the worker's pipes are missing".to_owned()));
        };
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "tenant_access_emulators::clickhouse_worker", "{line}");
            }
        });
        let mut worker = Self { child, stdin, stdout: BufReader::new(stdout) };
        // The first line says whether chdb loaded.
        let ready = worker.read_answer().await?;
        if !ready.ok {
            return Err(QueryError::Worker(ready.error.unwrap_or_default()));
        }
        Ok(worker)
    }

    /// Sends one query; the outer error means the worker is unusable, the inner one is
    /// ClickHouse's answer.
    async fn ask(&mut self, sql: &str) -> Result<Result<QueryRows, QueryError>, QueryError> {
        let mut request = serde_json::json!({"query": sql}).to_string();
        request.push('\n');
        let broken = |error: std::io::Error| QueryError::Worker(format!("cannot talk to it: {error}"));
        self.stdin.write_all(request.as_bytes()).await.map_err(broken)?;
        self.stdin.flush().await.map_err(broken)?;
        let answer = self.read_answer().await?;
        Ok(if answer.ok {
            Ok(QueryRows {
                meta: answer.meta,
                rows: answer.rows,
                statistics: answer.statistics,
                rows_before_limit_at_least: answer.rows_before_limit_at_least,
            })
        } else {
            Err(QueryError::ClickHouse(answer.error.unwrap_or_default()))
        })
    }

    async fn read_answer(&mut self) -> Result<Answer, QueryError> {
        let mut line = Vec::new();
        let read = (&mut self.stdout)
            .take(MAX_ANSWER_BYTES)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|error| QueryError::Worker(format!("cannot read its answer: {error}")))?;
        if read == 0 {
            let status = self.child.try_wait().ok().flatten();
            return Err(QueryError::Worker(format!(
                "it exited{}",
                status.map(|status| format!(" ({status})")).unwrap_or_default()
            )));
        }
        if line.last() != Some(&b'\n') {
            return Err(QueryError::Worker(format!("an answer was longer than {MAX_ANSWER_BYTES} bytes")));
        }
        serde_json::from_slice(&line)
            .map_err(|error| QueryError::Worker(format!("it answered something other than JSON: {error}")))
    }

    fn kill(mut self) {
        // kill_on_drop also kills it; starting now frees the memory before the next spawn.
        let _ = self.child.start_kill();
    }
}
