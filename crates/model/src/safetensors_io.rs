//! Writing tensors to safetensors files atomically (temporary name, then rename).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::error::{ModelError, Result};

/// A temporary sibling of `path` (same folder, so the final rename is atomic).
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` via a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::io(path, e));
    }
    Ok(())
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
