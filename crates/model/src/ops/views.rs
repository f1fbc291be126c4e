//! The views the GEMMs read and write through, shared by the f32 path (`cpu`) and the bf16
//! kernels (`bf16`), in their own module so that neither imports the other for them.

/// A strided read-only matrix view for the GEMMs ([`super::cpu`], [`super::bf16`]): element (i, j)
/// is `data[i * rs + j * cs]`; f32, or bf16 for a weight held in bf16 (read by the bf16 kernels only).
pub(crate) struct MatView<'a, T = f32> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

// Not derived: a derive would ask `T: Copy`, which every element type is anyway.
impl<T> Clone for MatView<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MatView<'_, T> {}

impl<'a, T> MatView<'a, T> {
    /// Row-major `rows × cols`.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        Self { data, rs: 1, cs: cols }
    }
    pub(crate) fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < self.data.len(), "gemm: {what} view out of bounds");
        }
    }
}

/// A raw pointer that parallel tasks may share because each writes a disjoint region of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: users guarantee disjoint access (documented at each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the raw field).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}
