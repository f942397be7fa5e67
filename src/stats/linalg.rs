//! Every dense decomposition strata does (symmetric eigendecompositions, Cholesky
//! factorisations and solves) and the large products around them, in one place, through
//! faer: LAPACK-class blocked algorithms on the `gemm` crate candle already builds, about
//! five times nalgebra's speed on a 768 x 768 symmetric eigenproblem.
//!
//! faer is built without its `rayon` feature, so every call runs on one thread: a result
//! never depends on the thread count, and analyses finishing side by side each take a
//! core. Matrices cross the boundary as nalgebra's `DMatrix` (both are column-major, so a
//! view costs nothing), which the callers keep for their small arithmetic.

use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::solvers::{Llt, SolveCore};
use faer::{Accum, Conj, Mat, MatRef, Par, Side};
use nalgebra::DMatrix;

/// A view of a nalgebra matrix as faer's (same column-major layout, no copy).
fn view(m: &DMatrix<f64>) -> MatRef<'_, f64> {
    MatRef::from_column_major_slice(m.as_slice(), m.nrows(), m.ncols())
}

/// A faer matrix as nalgebra's.
fn back(m: MatRef<'_, f64>) -> DMatrix<f64> {
    let columns = (0..m.ncols()).flat_map(|j| m.col(j).iter().copied());
    DMatrix::from_iterator(m.nrows(), m.ncols(), columns)
}

/// The eigenvalues of the symmetric `c` (its lower triangle is read), largest first, and
/// their unit eigenvectors as columns in the same order.
pub fn eigen_descending(c: &DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
    let d = c.nrows();
    match view(c).self_adjoint_eigen(Side::Lower) {
        Ok(e) => {
            let (s, u) = (e.S().column_vector(), e.U());
            // faer sorts ascending: reverse, as a permutation of columns.
            let values = (0..d).rev().map(|k| s[k]).collect();
            let vectors = DMatrix::from_fn(d, d, |r, k| u[(r, d - 1 - k)]);
            (values, vectors)
        }
        // The QR iteration did not converge (a matrix of NaNs or infinities): nalgebra's
        // solver gives its own best answer, as before faer.
        Err(_) => {
            let eig = c.clone().symmetric_eigen();
            let mut order: Vec<usize> = (0..d).collect();
            order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
            let values = order.iter().map(|&i| eig.eigenvalues[i]).collect();
            let vectors = DMatrix::from_fn(d, d, |r, k| eig.eigenvectors[(r, order[k])]);
            (values, vectors)
        }
    }
}

/// The eigenvalues of the symmetric `c`, largest first.
pub fn eigenvalues_descending(c: &DMatrix<f64>) -> Vec<f64> {
    let mut values = match view(c).self_adjoint_eigenvalues(Side::Lower) {
        Ok(v) => v,
        Err(_) => c.clone().symmetric_eigenvalues().iter().copied().collect(),
    };
    values.sort_by(|a, b| b.total_cmp(a));
    values
}

/// The Cholesky factor `L` of a symmetric positive-definite matrix, `A = L Lᵀ`.
pub struct Cholesky(Llt<f64>);

/// `a`'s Cholesky factorisation (its lower triangle is read); `None` when `a` is not
/// positive definite to working precision.
pub fn cholesky(a: &DMatrix<f64>) -> Option<Cholesky> {
    view(a).llt(Side::Lower).ok().map(Cholesky)
}

impl Cholesky {
    /// `A⁻¹ b`.
    pub fn solve(&self, b: &DMatrix<f64>) -> DMatrix<f64> {
        let mut x = view(b).to_owned();
        self.0.solve_in_place_with_conj(Conj::No, x.as_mut());
        back(x.as_ref())
    }

    /// `A⁻¹ b` for one vector.
    pub fn solve_vec(&self, b: &[f64]) -> Vec<f64> {
        let mut x = Mat::from_fn(b.len(), 1, |i, _| b[i]);
        self.0.solve_in_place_with_conj(Conj::No, x.as_mut());
        (0..b.len()).map(|i| x[(i, 0)]).collect()
    }
}

/// `a b`, through faer's blocked product on one thread.
pub fn matmul(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    back((view(a) * view(b)).as_ref())
}

/// `aᵀ b`.
pub fn matmul_tn(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    back((view(a).transpose() * view(b)).as_ref())
}

/// The Gram matrix `m m^T` (or `m^T m` with `transposed`), symmetric: only its lower
/// triangle is multiplied out (half the products of a full one), then mirrored.
pub fn gram(m: &DMatrix<f64>, transposed: bool) -> DMatrix<f64> {
    let v = if transposed {
        view(m).transpose()
    } else {
        view(m)
    };
    let n = v.nrows();
    let mut out = Mat::<f64>::zeros(n, n);
    triangular::matmul(
        out.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        v,
        BlockStructure::Rectangular,
        v.transpose(),
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
    DMatrix::from_fn(n, n, |i, j| if i >= j { out[(i, j)] } else { out[(j, i)] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(d: usize) -> DMatrix<f64> {
        let x = DMatrix::from_fn(d + 3, d, |i, j| ((i * 7 + j * 13) % 11) as f64 - 5.0);
        x.transpose() * &x + DMatrix::identity(d, d)
    }

    #[test]
    fn eigenpairs_reconstruct_the_matrix_largest_first() {
        let c = spd(9);
        let (values, vectors) = eigen_descending(&c);
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
        let back = &vectors * DMatrix::from_diagonal(&values.clone().into()) * vectors.transpose();
        assert!((back - &c).abs().max() < 1e-10 * c.abs().max());
        let nalgebra = c.clone().symmetric_eigenvalues();
        let mut want: Vec<f64> = nalgebra.iter().copied().collect();
        want.sort_by(|a, b| b.total_cmp(a));
        for (a, b) in eigenvalues_descending(&c).iter().zip(&want) {
            assert!((a - b).abs() < 1e-10 * want[0]);
        }
    }

    #[test]
    fn cholesky_solves_and_refuses_an_indefinite_matrix() {
        let a = spd(6);
        let b = DMatrix::from_fn(6, 2, |i, j| (i + 2 * j) as f64);
        let x = cholesky(&a).unwrap().solve(&b);
        assert!((&a * &x - &b).abs().max() < 1e-10);
        let v = cholesky(&a).unwrap().solve_vec(&[1.0; 6]);
        assert!((&a * nalgebra::DVector::from_vec(v))
            .iter()
            .all(|y| (y - 1.0).abs() < 1e-10));
        assert!(cholesky(&(&a - DMatrix::identity(6, 6) * 1e6)).is_none());
        let p = DMatrix::from_fn(6, 4, |i, j| (i * j) as f64 + 1.0);
        assert!((matmul_tn(&p, &b) - p.transpose() * &b).abs().max() < 1e-12);
        assert!((matmul(&a, &b) - &a * &b).abs().max() < 1e-12);
        assert!((gram(&p, false) - &p * p.transpose()).abs().max() < 1e-12);
        assert!((gram(&p, true) - p.transpose() * &p).abs().max() < 1e-12);
    }
}
