//! The `slora` Python module: moves arrays and arguments, nothing else. States are dicts of
//! float32 NumPy arrays keyed by the project's tensor names.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use slora_federation::State;
use slora_metrics::RoundMetrics;

fn err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn state_to_py<'py>(py: Python<'py>, state: &State) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, t) in state {
        let values: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err)?;
        dict.set_item(name, values.into_pyarray(py).reshape(t.dims().to_vec())?)?;
    }
    Ok(dict)
}

fn state_from_py(dict: &Bound<'_, PyDict>) -> PyResult<State> {
    let mut state = State::new();
    for (key, value) in dict.iter() {
        let name: String = key.extract()?;
        let array: PyReadonlyArrayDyn<f32> = value.extract().map_err(|_| err(format!("state: `{name}` must be a float32 NumPy array")))?;
        let dims = array.shape().to_vec();
        let values = array.to_vec().map_err(err)?;
        state.insert(name, Tensor::from_vec(values, dims, &Device::Cpu).map_err(err)?);
    }
    Ok(state)
}

/// One data holder's model and shard (see the Rust `Client`).
#[pyclass(unsendable, name = "Client")]
struct PyClient {
    inner: crate::Client,
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (config, method, shard, overrides = Vec::new(), stage1_state = None))]
    fn new(config: PathBuf, method: &str, shard: PathBuf, overrides: Vec<String>, stage1_state: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let stage1 = stage1_state.map(state_from_py).transpose()?;
        Ok(Self { inner: crate::Client::open(&config, &overrides, method, &shard, stage1.as_ref()).map_err(err)? })
    }

    /// The trainable state.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        state_to_py(py, &self.inner.state().map_err(err)?)
    }

    /// Replaces the trainable state.
    fn set_state(&mut self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        self.inner.set_state(&state_from_py(state)?).map_err(err)
    }

    /// Rows in the shard.
    fn rows(&self) -> usize {
        self.inner.rows()
    }

    /// `(update, [(mean loss, rows) per step])` after training from `global` in `round` as `client`.
    fn fit<'py>(&mut self, py: Python<'py>, global: &Bound<'py, PyDict>, round: u32, client: usize) -> PyResult<(Bound<'py, PyDict>, Vec<(f64, usize)>)> {
        let global = state_from_py(global)?;
        let (update, losses) = self.inner.fit(&global, round, client).map_err(err)?;
        Ok((state_to_py(py, &update)?, losses))
    }

    /// `(accuracy, mean loss, rows)` of `state` on the shard at `path`, in the engine's batches.
    fn evaluate(&mut self, state: &Bound<'_, PyDict>, path: PathBuf) -> PyResult<(f64, f64, u64)> {
        let e = self.inner.evaluate(&state_from_py(state)?, &path).map_err(err)?;
        Ok((e.accuracy, e.loss, e.rows))
    }
}

/// One method's server (see the Rust `Server`).
#[pyclass(unsendable, name = "Server")]
struct PyServer {
    inner: crate::Server,
}

fn row_to_py<'py>(py: Python<'py>, m: &RoundMetrics) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("method", &m.method)?;
    dict.set_item("round", m.round)?;
    dict.set_item("accuracy", m.accuracy)?;
    dict.set_item("loss", m.loss)?;
    dict.set_item("train_loss", m.train_loss)?;
    dict.set_item("bytes_up_per_client", m.bytes_up_per_client)?;
    dict.set_item("bytes_down_per_client", m.bytes_down_per_client)?;
    dict.set_item("cum_bytes_up", m.cum_bytes_up)?;
    dict.set_item("wall_seconds", m.wall_seconds)?;
    dict.set_item("clients", m.clients)?;
    dict.set_item("eval_rows", m.eval_rows)?;
    dict.set_item("full_test_accuracy", m.full_test_accuracy)?;
    dict.set_item("full_test_loss", m.full_test_loss)?;
    dict.set_item("full_test_rows", m.full_test_rows)?;
    dict.set_item("bytes_up_head_per_client", m.bytes_up_head_per_client)?;
    dict.set_item("bytes_down_head_per_client", m.bytes_down_head_per_client)?;
    dict.set_item("bytes_down_switch_per_client", m.bytes_down_switch_per_client)?;
    dict.set_item("cum_bytes_down", m.cum_bytes_down)?;
    dict.set_item("train_seconds", m.train_seconds)?;
    dict.set_item("server_seconds", m.server_seconds)?;
    Ok(dict)
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (config, method, data_dir, overrides = Vec::new(), num_clients = None, checkpoint_dir = None, stage1 = None))]
    fn new(
        config: PathBuf,
        method: &str,
        data_dir: PathBuf,
        overrides: Vec<String>,
        num_clients: Option<usize>,
        checkpoint_dir: Option<PathBuf>,
        stage1: Option<PyRef<'_, PyServer>>,
    ) -> PyResult<Self> {
        let stage1 = stage1.as_ref().map(|s| &s.inner);
        Ok(Self { inner: crate::Server::open(&config, &overrides, method, &data_dir, num_clients, checkpoint_dir.as_deref(), stage1).map_err(err)? })
    }

    /// The global state: what the next round's clients start from.
    fn global_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        state_to_py(py, self.inner.global())
    }

    /// What SLoRA's switch sends every client (Stage 1's sparse ΔW values), from this Stage-1 server.
    fn switch_payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        state_to_py(py, &crate::switch_payload(self.inner.global()))
    }

    /// `(bytes per client, svd seconds)` of SLoRA's switch, for a Stage-2 server.
    fn switch(&self) -> Option<(u64, f64)> {
        self.inner.switch().map(|s| (s.bytes_per_client, s.svd_seconds))
    }

    /// Rounds of this run, and the global number of its round 0.
    fn rounds(&self) -> (u32, u32) {
        (self.inner.config().rounds, self.inner.config().round_offset)
    }

    /// The local round this run resumed after, if it resumed from a checkpoint.
    fn resumed_from(&self) -> Option<u32> {
        self.inner.resumed_from()
    }

    /// The metrics `method` of this run.
    fn method(&self) -> String {
        self.inner.config().method.clone()
    }

    /// Local rounds completed so far.
    fn completed_rounds(&self) -> u32 {
        self.inner.completed_rounds()
    }

    /// Clients in the federation (what sampling draws from).
    fn num_clients(&self) -> usize {
        self.inner.num_clients()
    }

    /// `(round, local round, sampled clients, switch bytes)` of the next round, or `None`.
    fn begin_round(&mut self) -> Option<(u32, u32, Vec<usize>, u64)> {
        self.inner.begin_round().map(|p| (p.round, p.local_round, p.chosen, p.switch_bytes))
    }

    /// Adds a reply to the open round: the client, the round and state digest it echoes, its
    /// update, claimed rows, step losses and seconds; raises `ValueError` with the reason when it
    /// is refused (nothing changes).
    #[allow(clippy::too_many_arguments)]
    fn accept(&mut self, client: usize, round: u32, base_digest: &str, update: &Bound<'_, PyDict>, samples: u64, step_losses: Vec<(f64, usize)>, train_seconds: f64) -> PyResult<()> {
        let update = state_from_py(update)?;
        self.inner.accept(client, round, base_digest, &update, samples, &step_losses, train_seconds).map_err(err)
    }

    /// Adds a round's secure aggregate: `replies` as `(client, round, base digest, claimed rows,
    /// step losses, seconds)` (their fields in the clear), `mean` the weighted mean of their
    /// uploads, `total_weight` the rows it was weighted by. Raises `ValueError` with the reason
    /// when it is refused (every client of it is, and nothing changes).
    #[allow(clippy::type_complexity)]
    fn accept_aggregate(&mut self, replies: Vec<(usize, u32, String, u64, Vec<(f64, usize)>, f64)>, mean: &Bound<'_, PyDict>, total_weight: u64) -> PyResult<()> {
        let replies: Vec<crate::ReplyFields> = replies
            .into_iter()
            .map(|(client, round, base_digest, samples, step_losses, train_seconds)| crate::ReplyFields { client, round, base_digest, samples, step_losses, train_seconds })
            .collect();
        self.inner.accept_aggregate(&replies, &state_from_py(mean)?, total_weight).map_err(err)
    }

    /// Raises `ValueError`, naming the key, when this run cannot take secure aggregates.
    fn check_secure_aggregation(&self) -> PyResult<()> {
        self.inner.check_secure_aggregation().map_err(err)
    }

    /// Each client's registered training rows.
    fn rows(&self) -> Vec<u64> {
        self.inner.rows().to_vec()
    }

    /// The replies refused so far: `(round, client, reason)`.
    fn refusals(&self) -> Vec<(u32, usize, String)> {
        self.inner.refusals().iter().map(|r| (r.round, r.client, r.reason.clone())).collect()
    }

    /// Refuses later replies farther than `bound` (L2) from their download; `None` lifts it.
    #[pyo3(signature = (bound=None))]
    fn set_max_update_norm(&mut self, bound: Option<f64>) {
        self.inner.set_max_update_norm(bound)
    }

    /// The L2 distance of `update` from what `client` downloaded this round.
    fn update_norm(&self, client: usize, update: &Bound<'_, PyDict>) -> PyResult<f64> {
        self.inner.update_norm(client, &state_from_py(update)?).map_err(err)
    }

    /// Closes the open round; its metrics row as a dict.
    fn finish_round<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let row = self.inner.finish_round().map_err(err)?;
        row_to_py(py, &row)
    }

    /// The metrics rows so far.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner.metrics().iter().map(|r| row_to_py(py, r)).collect()
    }
}

/// Writes `metrics.parquet` (the pipeline's schema) with the rows of `servers`, in order.
#[pyfunction]
fn write_metrics(path: PathBuf, servers: Vec<PyRef<'_, PyServer>>) -> PyResult<()> {
    let rows: Vec<RoundMetrics> = servers.iter().flat_map(|s| s.inner.metrics().iter().cloned()).collect();
    crate::Server::write_metrics(&path, &rows).map_err(err)
}

/// SLoRA's switch as the `decompose` stage computes it: Stage 1's final global state (a dict) and the
/// label count give Stage 2's init — LoRA factors, corrected base tensors and the head.
#[pyfunction]
#[pyo3(signature = (config, stage1_state, num_labels, overrides = Vec::new()))]
fn decompose<'py>(py: Python<'py>, config: PathBuf, stage1_state: &Bound<'py, PyDict>, num_labels: usize, overrides: Vec<String>) -> PyResult<Bound<'py, PyDict>> {
    let cfg = crate::load_config(&config, &overrides).map_err(err)?;
    state_to_py(py, &crate::decompose(&cfg, num_labels, &state_from_py(stage1_state)?).map_err(err)?)
}

/// The pipeline's report of a deployment's run (see the Rust `render_report`): `index.html`,
/// `report.md`, `figures/` and `summary.json` in `out_dir`.
#[pyfunction]
#[pyo3(signature = (config, data_dir, metrics_file, servers, out_dir, overrides = Vec::new(), setup = Vec::new()))]
fn render_report(
    config: PathBuf,
    data_dir: PathBuf,
    metrics_file: PathBuf,
    servers: Vec<PyRef<'_, PyServer>>,
    out_dir: PathBuf,
    overrides: Vec<String>,
    setup: Vec<(String, String)>,
) -> PyResult<()> {
    let servers: Vec<&crate::Server> = servers.iter().map(|s| &s.inner).collect();
    crate::render_report(&config, &overrides, &data_dir, &metrics_file, &servers, setup, &out_dir).map_err(err)
}

/// The metrics rows of `servers` as `pipeline inspect` prints them.
#[pyfunction]
fn metrics_table(servers: Vec<PyRef<'_, PyServer>>) -> String {
    let rows: Vec<RoundMetrics> = servers.iter().flat_map(|s| s.inner.metrics().iter().cloned()).collect();
    slora_metrics::format_table(&rows)
}

/// The digest of a state (a dict of arrays) as the server computes it for a download: a client
/// echoes the digest of the global state it trained from.
#[pyfunction]
fn state_digest(state: &Bound<'_, PyDict>) -> PyResult<String> {
    Ok(slora_federation::state_digest(&state_from_py(state)?))
}

/// The clients of `round`, as the in-process engine draws them.
#[pyfunction]
fn sample_clients(num_clients: usize, per_round: usize, seed: u64, round: u32) -> PyResult<Vec<usize>> {
    crate::sample_clients(num_clients, per_round, seed, round).map_err(err)
}

/// The sample-weighted average of `[(state, samples)]`, added in the order given.
#[pyfunction]
fn fedavg<'py>(py: Python<'py>, updates: Vec<(Bound<'py, PyDict>, u64)>) -> PyResult<Bound<'py, PyDict>> {
    let updates = updates.iter().map(|(d, n)| Ok((state_from_py(d)?, *n))).collect::<PyResult<Vec<_>>>()?;
    state_to_py(py, &crate::fedavg(&updates).map_err(err)?)
}

pyo3::create_exception!(slora, PipelineError, pyo3::exceptions::PyRuntimeError, "A pipeline command failed; the message is the CLI's one line after `error: `.");

/// What the worker thread of [`execute`] sends: text to show, then the command's end.
enum Message {
    Text(String),
    Done(Result<(slora_pipeline::cli::Outcome, slora_pipeline::cli::Output), slora_pipeline::PipelineError>),
}

/// `pipeline ARGS…` run in this process; returns what it produced as JSON text.
///
/// The command runs on a worker thread with the GIL released. Its log lines and progress bars go to
/// Python's `sys.stderr` (which a notebook shows) from this thread. Ctrl-C (`KeyboardInterrupt`)
/// asks the run to stop after its current training step; once it has stopped, the interrupt is
/// raised, and every completed round stays checkpointed for the next run. Bad flags, keys or
/// values raise `ValueError`, other failures `slora.PipelineError`, both with the CLI's one line.
#[pyfunction]
fn execute(py: Python<'_>, args: Vec<String>) -> PyResult<String> {
    use crate::research::{command_error, output_json, parse_command, CommandError};
    use std::sync::{mpsc, Arc, Mutex};
    let raise = |e: CommandError| match e {
        CommandError::Invalid(m) => PyValueError::new_err(m),
        CommandError::Failed(m) => PipelineError::new_err(m),
    };
    let cli = parse_command(&args).map_err(raise)?;
    let (tx, rx) = mpsc::channel::<Message>();
    let text_tx = tx.clone();
    slora_pipeline::progress::set_sink(Some(Arc::new(move |text: &str| {
        let _ = text_tx.send(Message::Text(text.to_string()));
    })));
    slora_federation::interrupt::clear();
    let worker = std::thread::spawn(move || {
        let result = slora_pipeline::cli::execute(&cli);
        let _ = tx.send(Message::Done(result));
    });
    let rx = Mutex::new(rx);
    let stderr = py.import("sys")?.getattr("stderr")?;
    let mut interrupt: Option<PyErr> = None;
    let result = loop {
        match py.detach(|| rx.lock().unwrap_or_else(|e| e.into_inner()).recv_timeout(std::time::Duration::from_millis(100))) {
            Ok(Message::Text(text)) => {
                let _ = stderr.call_method1("write", (text,));
                let _ = stderr.call_method0("flush");
            }
            Ok(Message::Done(result)) => break Some(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if interrupt.is_none() {
                    if let Err(e) = py.check_signals() {
                        slora_federation::interrupt::request_stop();
                        interrupt = Some(e);
                    }
                }
            }
            // The worker ended without a result: it panicked.
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    let panicked = py.detach(|| worker.join()).err();
    slora_pipeline::progress::set_sink(None);
    slora_federation::interrupt::clear();
    if let Some(e) = interrupt {
        return Err(e);
    }
    match result {
        Some(Ok((outcome, output))) => Ok(output_json(outcome, &output).to_string()),
        Some(Err(e)) => Err(raise(command_error(&e))),
        None => {
            let why = panicked.and_then(|p| p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())));
            Err(PipelineError::new_err(format!("the pipeline panicked: {}", why.unwrap_or_default())))
        }
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(execute, m)?)?;
    m.add("PipelineError", m.py().get_type::<PipelineError>())?;
    m.add_class::<PyClient>()?;
    m.add_class::<PyServer>()?;
    m.add_function(wrap_pyfunction!(write_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(metrics_table, m)?)?;
    m.add_function(wrap_pyfunction!(decompose, m)?)?;
    m.add_function(wrap_pyfunction!(render_report, m)?)?;
    m.add_function(wrap_pyfunction!(sample_clients, m)?)?;
    m.add_function(wrap_pyfunction!(state_digest, m)?)?;
    m.add_function(wrap_pyfunction!(fedavg, m)?)?;
    Ok(())
}
