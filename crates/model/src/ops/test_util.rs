//! Test helpers: seeded random tensors and a relative closeness check.

use candle_core::{bail, Device, Result, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// Standard-normal f32 tensor from a seed.
pub(crate) fn rand_tensor(dims: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(data, dims, &Device::Cpu)
}

/// Fails unless max|a - b| <= tol * max(max|b|, 1e-6) and the shapes agree.
pub(crate) fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) -> Result<()> {
    if a.dims() != b.dims() {
        bail!("{what}: shapes differ {:?} vs {:?}", a.dims(), b.dims());
    }
    let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
    if !(diff <= tol * scale.max(1e-6)) {
        bail!("{what}: max abs diff {diff:e} exceeds {tol:e} x reference scale {scale:e}");
    }
    Ok(())
}
