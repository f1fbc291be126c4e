//! The `slora` Python module: moves arrays and arguments, nothing else. States are dicts of
//! float32 NumPy arrays keyed by the project's tensor names.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use slora_federation::State;

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
    #[pyo3(signature = (config, method, shard, overrides = Vec::new()))]
    fn new(config: PathBuf, method: &str, shard: PathBuf, overrides: Vec<String>) -> PyResult<Self> {
        Ok(Self { inner: crate::Client::open(&config, &overrides, method, &shard).map_err(err)? })
    }

    /// The trainable state.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        state_to_py(py, &self.inner.state().map_err(err)?)
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

#[pymodule]
fn slora(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyClient>()?;
    m.add_function(wrap_pyfunction!(sample_clients, m)?)?;
    m.add_function(wrap_pyfunction!(fedavg, m)?)?;
    Ok(())
}
