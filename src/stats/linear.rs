//! Linear answers from labelled sums ([`super::labelled`]), for one hidden state: a class
//! against the rest of the tokens (for two classes, the second against the first), as
//! the difference of their means, its separation (Cohen's d of the projections onto it),
//! the LDA direction with the Fisher criterion it reaches, and a ridge probe fitted with
//! an unpenalised intercept on every fold but one and scored on that one, all in closed
//! form from the sums, with no second pass over the tokens.
//!
//! Probe targets are `y = +1` for the class and `-1` for the rest. Training sums are the
//! total's minus the held-out fold's, in integers; every matrix is centred at the
//! training mean before anything is squared, so large common offsets (massive
//! activations) cancel before they can cost precision.

use nalgebra::{DMatrix, DVector};

use super::linalg;

use super::gram::Fixed;
use super::labelled::LabelledMoments;

/// The penalties of the fits.
#[derive(Debug, Clone, Copy)]
pub struct Penalties {
    /// The probe's `alpha`: the penalty `alpha |w|^2` on the centred least squares.
    pub alpha: f64,
    /// LDA's ridge, as a fraction of the mean within-class variance.
    pub ridge: f64,
}

/// One contrast at one hidden state.
#[derive(Debug, Clone, Default)]
pub struct ContrastValues {
    /// `mean(class) - mean(rest)`.
    pub diff: Vec<f64>,
    /// Its Euclidean norm.
    pub diff_norm: f64,
    /// Every class's mean projection onto the unit difference, in class order.
    pub projections: Vec<Option<f64>>,
    /// Cohen's d of the tokens' projections onto the unit difference, with the pooled
    /// within-group standard deviation.
    pub cohen_d: Option<f64>,
    /// The Fisher criterion of the LDA direction, `diff^T (S_w + lambda I)^-1 diff`: the
    /// squared separation the best linear direction reaches (Mahalanobis D^2).
    pub fisher: Option<f64>,
    /// Cosine between the LDA direction and the difference of means.
    pub lda_cos: Option<f64>,
    /// Per fold, the probe's held-out squared error.
    pub fold_sse: Vec<f64>,
    /// `1 - sum of fold_sse / sum (y - mean y)^2`.
    pub r2: Option<f64>,
    /// Cohen's d of the held-out predictions, class against rest.
    pub heldout_cohen_d: Option<f64>,
    /// Whether LDA leaned on its ridge: the smallest within-group variance is below it.
    pub ridge_needed: bool,
}

/// Every contrast at one hidden state.
#[derive(Debug, Clone)]
pub struct LayerValues {
    /// In the order of the classes asked for.
    pub contrasts: Vec<ContrastValues>,
    /// Whether the within-class covariance was singular, so LDA leaned on its ridge.
    pub ridge_needed: bool,
}

/// The sums of one hidden state, in f64 and exact integers.
struct Layer {
    d: usize,
    /// Per fold, the upper triangle of `X^T X` (raw fixed point).
    products: Vec<Vec<i128>>,
    /// Per class, per fold: token count and `sum x` (raw fixed point).
    classes: Vec<Vec<(f64, Vec<i128>)>>,
}

/// The values of hidden state `li` (an index into `m.layers`) for each class of
/// `positive` (indices into the sorted classes) against the rest.
pub fn layer_values(
    m: &LabelledMoments,
    li: usize,
    positive: &[usize],
    p: Penalties,
) -> LayerValues {
    let layer = Layer::of(m, li);
    let mut contrasts: Vec<ContrastValues> = positive
        .iter()
        .map(|&c| layer.contrast(c, p.ridge))
        .collect();
    let ridge_needed = contrasts.iter().any(|c| c.ridge_needed);
    layer.probe(positive, p.alpha, &mut contrasts);
    LayerValues {
        contrasts,
        ridge_needed,
    }
}

impl Layer {
    fn of(m: &LabelledMoments, li: usize) -> Self {
        let d = m
            .classes
            .values()
            .flat_map(|c| &c.sums)
            .find(|s| !s.is_empty())
            .map_or(0, |s| s[li].raw.len());
        let zeros = |len: usize| vec![0i128; len];
        let products = m
            .products
            .iter()
            .map(|p| p.get(li).map_or(zeros(d * (d + 1) / 2), |f| f.raw.clone()))
            .collect();
        let classes = m
            .classes
            .values()
            .map(|c| {
                (0..m.folds)
                    .map(|f| {
                        let sum = c.sums[f].get(li).map_or(zeros(d), |s| s.raw.clone());
                        (c.tokens[f] as f64, sum)
                    })
                    .collect()
            })
            .collect();
        Self {
            d,
            products,
            classes,
        }
    }

    fn folds(&self) -> usize {
        self.products.len()
    }

    /// Class `c`'s (or, with `None`, every class's) tokens and sums over the folds where
    /// `keep(f)`.
    fn sums(&self, c: Option<usize>, keep: &dyn Fn(usize) -> bool) -> (f64, Vec<f64>) {
        let mut raw = vec![0i128; self.d];
        let mut n = 0.0;
        for (k, class) in self.classes.iter().enumerate() {
            if c.is_some_and(|c| c != k) {
                continue;
            }
            for (_, (tokens, s)) in class.iter().enumerate().filter(|(f, _)| keep(*f)) {
                n += tokens;
                add_raw(&mut raw, s);
            }
        }
        (n, values(raw))
    }

    /// `X^T X` over the folds where `keep(f)`, whole.
    fn products(&self, keep: &dyn Fn(usize) -> bool) -> DMatrix<f64> {
        let mut raw = vec![0i128; self.d * (self.d + 1) / 2];
        for (_, p) in self.products.iter().enumerate().filter(|(f, _)| keep(*f)) {
            add_raw(&mut raw, p);
        }
        symmetric(&values(raw), self.d)
    }
}

impl Layer {
    /// Class `c` against the rest over every token: the difference of means, its
    /// separation and LDA.
    fn contrast(&self, c: usize, ridge: f64) -> ContrastValues {
        let all = |_: usize| true;
        let (n, s) = self.sums(None, &all);
        let (n_p, s_p) = self.sums(Some(c), &all);
        let n_q = n - n_p;
        if n_p < 1.0 || n_q < 1.0 {
            return ContrastValues::default();
        }
        let s_q: Vec<f64> = s.iter().zip(&s_p).map(|(a, b)| a - b).collect();
        let diff: Vec<f64> = (0..self.d).map(|i| s_p[i] / n_p - s_q[i] / n_q).collect();
        let diff_norm = diff.iter().map(|v| v * v).sum::<f64>().sqrt();
        let projections = (0..self.classes.len())
            .map(|k| {
                let (nk, sk) = self.sums(Some(k), &all);
                (nk > 0.0 && diff_norm > 0.0).then(|| dot(&sk, &diff) / (nk * diff_norm))
            })
            .collect();
        let mut out = ContrastValues {
            diff_norm,
            projections,
            fold_sse: vec![0.0; self.folds()],
            ..Default::default()
        };
        if n > 2.0 {
            let pooled = self.within(&[(n_p, &s_p), (n_q, &s_q)]) / (n - 2.0);
            let var = quadratic(&pooled, &diff) / (diff_norm * diff_norm);
            out.cohen_d = (var > 0.0).then(|| diff_norm / var.sqrt());
            let (lda, needed) = lda(&pooled, &diff, ridge);
            out.ridge_needed = needed;
            out.fisher = lda.as_ref().map(|w| dot(w, &diff));
            out.lda_cos = lda.as_ref().and_then(|w| cosine(w, &diff));
        }
        out.diff = diff;
        out
    }

    /// The scatter of every token about its group's mean, for groups given by their
    /// token counts and sums.
    fn within(&self, groups: &[(f64, &Vec<f64>)]) -> DMatrix<f64> {
        let mut w = self.products(&|_| true);
        for &(n, s) in groups {
            let v = DVector::from_column_slice(s);
            w -= (&v * v.transpose()) / n;
        }
        w
    }
}

/// `(S_w + lambda I)^-1 diff`, with `lambda = ridge * trace(S_w) / d` (`None` when even
/// the ridged matrix does not factor), and whether the ridge decided a direction: the
/// smallest eigenvalue of `S_w` is below `lambda`, exactly when `S_w - lambda I` does not
/// factor (one Cholesky, not an eigendecomposition).
fn lda(pooled: &DMatrix<f64>, diff: &[f64], ridge: f64) -> (Option<Vec<f64>>, bool) {
    let d = diff.len();
    let lambda = ridge * pooled.trace() / d as f64;
    let shifted = |by: f64| {
        let mut a = pooled.clone();
        for i in 0..d {
            a[(i, i)] += by;
        }
        a
    };
    let needed = linalg::cholesky(&shifted(-lambda)).is_none();
    let w = linalg::cholesky(&shifted(lambda)).map(|c| c.solve_vec(diff));
    (w, needed)
}

/// The running sums of the held-out predictions of one contrast.
#[derive(Default)]
struct Heldout {
    /// Sum of predictions over the class's tokens, and the rest's.
    sum_p: f64,
    sum_q: f64,
    /// Sum of squared predictions over all tokens.
    squares: f64,
}

impl Layer {
    /// Fits the probe on every fold but one and scores it on that one, for every
    /// contrast: one factorisation per fold serves them all.
    fn probe(&self, positive: &[usize], alpha: f64, out: &mut [ContrastValues]) {
        let mut held: Vec<Heldout> = positive.iter().map(|_| Heldout::default()).collect();
        for f in 0..self.folds() {
            let train = |g: usize| g != f;
            let (n_t, s_t) = self.sums(None, &train);
            let (n_f, s_f) = self.sums(None, &|g| g == f);
            if n_t < 2.0 {
                for c in out.iter_mut() {
                    c.fold_sse[f] = f64::NAN;
                }
                continue;
            }
            let mean: Vec<f64> = s_t.iter().map(|v| v / n_t).collect();
            let mut a = centred(&self.products(&train), &s_t, &mean, n_t);
            for i in 0..self.d {
                a[(i, i)] += alpha;
            }
            let Some(chol) = linalg::cholesky(&a) else {
                for c in out.iter_mut() {
                    c.fold_sse[f] = f64::NAN;
                }
                continue;
            };
            let z = centred(&self.products(&|g| g == f), &s_f, &mean, n_f);
            let fold = Fold {
                f,
                n_t,
                n_f,
                s_t: &s_t,
                s_f: &s_f,
                mean: &mean,
                z: &z,
            };
            for ((&c, values), h) in positive.iter().zip(out.iter_mut()).zip(&mut held) {
                let (sse, add) = self.score(&fold, c, &chol);
                values.fold_sse[f] = sse;
                h.sum_p += add.sum_p;
                h.sum_q += add.sum_q;
                h.squares += add.squares;
            }
        }
        self.finish_probe(positive, &held, out);
    }

    /// The corpus-wide figures of the held-out scores.
    fn finish_probe(&self, positive: &[usize], held: &[Heldout], out: &mut [ContrastValues]) {
        let n = self.sums(None, &|_| true).0;
        for ((&c, values), h) in positive.iter().zip(out.iter_mut()).zip(held) {
            let n_p = self.sums(Some(c), &|_| true).0;
            let n_q = n - n_p;
            let sse: f64 = values.fold_sse.iter().sum();
            let sum_y = n_p - n_q;
            let total = n - sum_y * sum_y / n;
            values.r2 = (sse.is_finite() && total > 0.0).then(|| 1.0 - sse / total);
            if !sse.is_finite() || n_p < 1.0 || n_q < 1.0 || n <= 2.0 {
                continue;
            }
            let (m_p, m_q) = (h.sum_p / n_p, h.sum_q / n_q);
            let within = h.squares - n_p * m_p * m_p - n_q * m_q * m_q;
            values.heldout_cohen_d =
                (within > 0.0).then(|| (m_p - m_q) / (within / (n - 2.0)).sqrt());
        }
    }
}

/// One held-out fold, with the training sums it is scored against.
struct Fold<'a> {
    f: usize,
    n_t: f64,
    n_f: f64,
    s_t: &'a [f64],
    s_f: &'a [f64],
    /// The training mean.
    mean: &'a [f64],
    /// The fold's `X^T X` centred at the training mean.
    z: &'a DMatrix<f64>,
}

impl Layer {
    /// Contrast `c`'s probe fitted on the training folds (`chol` factors their centred
    /// `X^T X + alpha I`) and scored on fold `fold.f`: its squared error, and its
    /// predictions' sums.
    fn score(&self, fold: &Fold, c: usize, chol: &linalg::Cholesky) -> (f64, Heldout) {
        let (f, d) = (fold.f, self.d);
        let (n_fc, s_fc) = (self.classes[c][f].0, values(self.classes[c][f].1.clone()));
        let (n_c, s_c) = self.sums(Some(c), &|_| true);
        let n_tc = n_c - n_fc;
        let s_tc: Vec<f64> = s_c.iter().zip(&s_fc).map(|(a, b)| a - b).collect();
        // Targets +1 for the class, -1 for the rest.
        let sum_y_t = 2.0 * n_tc - fold.n_t;
        let y_bar = sum_y_t / fold.n_t;
        let rhs: Vec<f64> = (0..d)
            .map(|i| (2.0 * s_tc[i] - fold.s_t[i]) - fold.mean[i] * sum_y_t)
            .collect();
        let w = chol.solve_vec(&rhs);
        let w = w.as_slice();
        // The held-out fold, centred at the training mean: z = x - mean.
        let sum_z: Vec<f64> = (0..d)
            .map(|i| fold.s_f[i] - fold.n_f * fold.mean[i])
            .collect();
        let sum_y_f = 2.0 * n_fc - fold.n_f;
        let sum_zy: Vec<f64> = (0..d)
            .map(|i| (2.0 * s_fc[i] - fold.s_f[i]) - fold.mean[i] * sum_y_f)
            .collect();
        let sum_r2 = fold.n_f - 2.0 * y_bar * sum_y_f + fold.n_f * y_bar * y_bar;
        let sum_zr: Vec<f64> = (0..d).map(|i| sum_zy[i] - y_bar * sum_z[i]).collect();
        let q = quadratic(fold.z, w);
        let sse = sum_r2 - 2.0 * dot(w, &sum_zr) + q;
        // Predictions y_bar + z^T w, summed by group and squared.
        let z_c: Vec<f64> = (0..d).map(|i| s_fc[i] - n_fc * fold.mean[i]).collect();
        let sum_p = n_fc * y_bar + dot(w, &z_c);
        let sum_all = fold.n_f * y_bar + dot(w, &sum_z);
        let squares = fold.n_f * y_bar * y_bar + 2.0 * y_bar * dot(w, &sum_z) + q;
        let h = Heldout {
            sum_p,
            sum_q: sum_all - sum_p,
            squares,
        };
        (sse, h)
    }
}

/// `P - s m^T - m s^T + n m m^T`: the sums of cross products `P` of `n` rows with sum
/// `s`, centred at `m`.
fn centred(p: &DMatrix<f64>, s: &[f64], m: &[f64], n: f64) -> DMatrix<f64> {
    let d = s.len();
    DMatrix::from_fn(d, d, |i, j| {
        p[(i, j)] - s[i] * m[j] - m[i] * s[j] + n * m[i] * m[j]
    })
}

fn add_raw(acc: &mut [i128], x: &[i128]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a = a.wrapping_add(b);
    }
}

fn values(raw: Vec<i128>) -> Vec<f64> {
    Fixed {
        raw,
        overflow: false,
    }
    .values()
}

/// The whole `d x d` matrix from its upper triangle, row by row.
fn symmetric(upper: &[f64], d: usize) -> DMatrix<f64> {
    let mut m = DMatrix::zeros(d, d);
    let mut at = 0;
    for i in 0..d {
        for j in i..d {
            m[(i, j)] = upper[at];
            m[(j, i)] = upper[at];
            at += 1;
        }
    }
    m
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `v^T M v`.
fn quadratic(m: &DMatrix<f64>, v: &[f64]) -> f64 {
    let v = DVector::from_column_slice(v);
    (v.transpose() * m * &v)[(0, 0)]
}

/// The cosine of two vectors; `None` when one is zero.
pub fn cosine(a: &[f64], b: &[f64]) -> Option<f64> {
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    (na > 0.0 && nb > 0.0).then(|| dot(a, b) / (na * nb))
}
