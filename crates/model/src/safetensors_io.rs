//! Writing tensors to safetensors files atomically and durably (`slora_fsio`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;

use crate::error::{ModelError, Result};

/// Writes `bytes` to `path` atomically and durably, through the simulated-full-disk budget.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    slora_fsio::write_atomic(path, bytes).map_err(|e| ModelError::io(path, e))
}

/// Serialises `tensors` (made contiguous) with optional metadata and writes them atomically.
pub(crate) fn write_safetensors_atomic(
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let contiguous: Vec<(String, Tensor)> =
        tensors.iter().map(|(k, t)| Ok((k.clone(), t.contiguous()?))).collect::<Result<_>>()?;
    let bytes = safetensors::serialize(contiguous.iter().map(|(k, t)| (k.as_str(), t)), metadata)
        .map_err(|e| ModelError::Safetensors { file: path.to_path_buf(), message: e.to_string() })?;
    write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file (any float dtype becomes f32).
pub(crate) fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::Safetensors { file: path.to_path_buf(), message: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, &candle_core::Device::Cpu)
            .and_then(|t| if t.dtype().is_float() { t.to_dtype(candle_core::DType::F32) } else { Ok(t) })
            .map_err(|e| ModelError::Safetensors { file: path.to_path_buf(), message: format!("{name}: {e}") })?;
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk while replacing a safetensors file (an adapter, say) leaves the old file whole.
    #[test]
    fn full_disk_leaves_the_old_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("adapter_model.safetensors");
        let t = |v: f32| BTreeMap::from([("a".to_string(), Tensor::new(&[v; 64], &candle_core::Device::Cpu).unwrap())]);
        write_safetensors_atomic(&t(1.0), &p, None).unwrap();
        let before = std::fs::read(&p).unwrap();
        assert!(slora_fsio::fault::with_budget(32, || write_safetensors_atomic(&t(2.0), &p, None)).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), before);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(read_safetensors(&p).unwrap()["a"].to_vec1::<f32>().unwrap()[0], 1.0);
    }
}
