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

/// Median seconds of `f` over `n` runs after one warm-up.
pub(crate) fn time_it(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = std::time::Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[n / 2]
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
