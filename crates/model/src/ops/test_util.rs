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
    if diff.is_nan() || diff > tol * scale.max(1e-6) {
        bail!("{what}: max abs diff {diff:e} exceeds {tol:e} x reference scale {scale:e}");
    }
    Ok(())
}

/// CPU seconds all threads of this process have run (`/proc/self/task/*/schedstat`, ns).
pub(crate) fn cpu_seconds() -> f64 {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    ns as f64 * 1e-9
}

/// CPU seconds (all threads) per run of `f`, averaged over `n` runs after one warm-up: unlike
/// wall time, barely moved by other processes on a shared machine.
pub(crate) fn time_it(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = cpu_seconds();
    for _ in 0..n {
        f();
    }
    (cpu_seconds() - start) / n as f64
}

#[test]
#[ignore = "micro-benchmark: prints kernel timings"]
fn ops_kernel_timings() -> Result<()> {
    use candle_core::Var;
    let x = Var::from_tensor(&rand_tensor(&[32, 128, 1536], 1)?)?;
    let g = rand_tensor(&[32, 128, 1536], 2)?;
    let n = x.elem_count() as f64;
    let t = time_it(5, || drop(super::gelu_erf(&x).unwrap()));
    println!("gelu_erf fwd   {:.2} ms  {:.2} ns/elem", t * 1e3, t * 1e9 / n);
    let t = time_it(5, || drop(super::gelu_tanh(&x).unwrap()));
    println!("gelu_tanh fwd  {:.2} ms  {:.2} ns/elem", t * 1e3, t * 1e9 / n);
    let t = time_it(5, || drop((super::gelu_erf(&x).unwrap() * &g).unwrap().sum_all().unwrap().backward().unwrap()));
    println!("gelu_erf f+b+mul+sum {:.2} ms", t * 1e3);
    let t = time_it(5, || drop((&*x * &g).unwrap()));
    println!("candle mul     {:.2} ms", t * 1e3);
    let t = time_it(5, || drop(x.gelu_erf().unwrap()));
    println!("candle gelu_erf {:.2} ms", t * 1e3);
    let s = rand_tensor(&[32, 12, 128, 128], 3)?;
    let t = time_it(5, || drop(super::softmax_last_dim(&s).unwrap()));
    println!("softmax fwd    {:.2} ms  {:.2} ns/elem", t * 1e3, t * 1e9 / s.elem_count() as f64);
    let h = rand_tensor(&[32, 128, 384], 4)?;
    let gamma = rand_tensor(&[384], 5)?;
    let t = time_it(5, || drop(super::layer_norm(&h, &gamma, &gamma, 1e-12).unwrap()));
    println!("layer_norm fwd {:.2} ms", t * 1e3);
    let t = time_it(5, || drop(super::dropout(&s, 0.1, 3).unwrap()));
    println!("dropout fwd    {:.2} ms  {:.2} ns/elem", t * 1e3, t * 1e9 / s.elem_count() as f64);
    let w = rand_tensor(&[1536, 384], 6)?;
    let t = time_it(5, || drop(super::frozen_linear(&h, &w, None).unwrap()));
    println!("frozen_linear 4096x384 -> 1536: {:.2} ms  {:.1} GFLOP/s", t * 1e3, 2.0 * 4096.0 * 384.0 * 1536.0 / t / 1e9);
    Ok(())
}

#[test]
#[ignore = "micro-benchmark: prints attention and linear timings, fused vs composed"]
fn ops_fused_vs_composed_timings() -> Result<()> {
    use candle_core::Var;
    let (b, t, heads, d) = (32, 128, 12, 32);
    let q = Var::from_tensor(&rand_tensor(&[b, t, heads * d], 1)?)?;
    let k = Var::from_tensor(&rand_tensor(&[b, t, heads * d], 2)?)?;
    let v = Var::from_tensor(&rand_tensor(&[b, t, heads * d], 3)?)?;
    let g = rand_tensor(&[b, t, heads * d], 4)?;
    let fused = time_it(3, || drop((super::attention(&q, &k, &v, None, heads, None).unwrap() * &g).unwrap().sum_all().unwrap().backward().unwrap()));
    let composed = time_it(3, || drop((super::attention_slow(&q, &k, &v, None, heads, None).unwrap() * &g).unwrap().sum_all().unwrap().backward().unwrap()));
    println!("attention fwd+bwd 32x128x12x32: fused {:.1} ms, composed {:.1} ms", fused * 1e3, composed * 1e3);
    let x = Var::from_tensor(&rand_tensor(&[b, t, 384], 5)?)?;
    let w = Var::from_tensor(&rand_tensor(&[1536, 384], 6)?)?;
    let bias = Var::from_tensor(&rand_tensor(&[1536], 7)?)?;
    let gy = rand_tensor(&[b, t, 1536], 8)?;
    let fused = time_it(3, || drop((super::linear(&x, &w, Some(&bias)).unwrap() * &gy).unwrap().sum_all().unwrap().backward().unwrap()));
    let composed = time_it(3, || {
        let y = x.reshape((b * t, 384)).unwrap().matmul(&w.t().unwrap()).unwrap().broadcast_add(&bias).unwrap().reshape((b, t, 1536)).unwrap();
        drop((y * &gy).unwrap().sum_all().unwrap().backward().unwrap())
    });
    println!("linear 384->1536 fwd+bwd: fused {:.1} ms, composed {:.1} ms", fused * 1e3, composed * 1e3);
    let a = Var::from_tensor(&(rand_tensor(&[8, 384], 9)? * 0.05)?)?;
    let bl = Var::from_tensor(&(rand_tensor(&[1536, 8], 10)? * 0.05)?)?;
    let fused = time_it(3, || drop((super::lora_linear(&x, &w, Some(&bias), &a, &bl, 2.0).unwrap() * &gy).unwrap().sum_all().unwrap().backward().unwrap()));
    let composed = time_it(3, || drop((super::lora_linear_slow(&x, &w, Some(&bias), &a, &bl, 2.0).unwrap() * &gy).unwrap().sum_all().unwrap().backward().unwrap()));
    println!("lora_linear 384->1536 r8 fwd+bwd: fused {:.1} ms, composed {:.1} ms", fused * 1e3, composed * 1e3);
    Ok(())
}

#[test]
#[ignore = "micro-benchmark: sparse delta linear vs frozen linear (fwd + bwd)"]
fn ops_sparse_linear_timing() -> Result<()> {
    use candle_core::Var;
    use std::sync::Arc;
    let x = Var::from_tensor(&rand_tensor(&[32, 128, 384], 5)?)?;
    let w = rand_tensor(&[1536, 384], 6)?;
    let gy = rand_tensor(&[32, 128, 1536], 8)?;
    let idx = Arc::new(crate::sparse::random_mask(1536, 384, 0.01, 1));
    let values = Var::from_tensor(&(rand_tensor(&[idx.len()], 9)? * 0.01)?)?;
    let run = |f: &dyn Fn() -> Result<Tensor>| -> f64 {
        time_it(5, || {
            let y = f().unwrap();
            let g = crate::ops::frozen_linear(&y, &Tensor::eye(1536, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(), None).unwrap();
            drop((g * &gy).unwrap().sum_all().unwrap().backward().unwrap())
        })
    };
    let frozen = run(&|| super::frozen_linear(&x, &w, None));
    let sparse = run(&|| super::sparse_delta_linear(&x, &w, &idx, &values, None));
    println!("fwd+bwd 384->1536 (plus a 1536x1536 frozen layer on top): frozen {:.1} ms, sparse {:.1} ms", frozen * 1e3, sparse * 1e3);
    let g = rand_tensor(&[4096, 1536], 10)?;
    let t = time_it(5, || {
        super::cpu::with_f32(&g, "t", |g| drop(super::cpu::transpose(g, 4096, 1536))).unwrap();
    });
    println!("transpose 4096x1536: {:.2} ms", t * 1e3);
    Ok(())
}
