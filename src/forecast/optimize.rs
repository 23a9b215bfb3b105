//! A small bounded Nelder-Mead minimiser for the smoothing parameters (2 to 4 of them).
//!
//! Parameters live in boxes `[lo, hi]`; the simplex moves in an unconstrained space mapped
//! onto each box by a logistic function, so every evaluated point is feasible. Deterministic:
//! the same start gives the same answer.

/// Relative spread of the simplex values at which it stops.
pub const TOLERANCE: f64 = 1e-8;

/// Minimises `f` over the box `bounds`, starting at `start` (clamped into the box).
/// Returns the best point found and its value.
pub fn minimize(
    f: &dyn Fn(&[f64]) -> f64,
    start: &[f64],
    bounds: &[(f64, f64)],
    max_evals: usize,
) -> (Vec<f64>, f64) {
    let n = start.len();
    let to_box = |u: &[f64]| -> Vec<f64> {
        u.iter()
            .zip(bounds)
            .map(|(&x, &(lo, hi))| lo + (hi - lo) / (1.0 + (-x).exp()))
            .collect()
    };
    let from_box = |p: &[f64]| -> Vec<f64> {
        p.iter()
            .zip(bounds)
            .map(|(&x, &(lo, hi))| {
                let t = ((x - lo) / (hi - lo)).clamp(1e-6, 1.0 - 1e-6);
                (t / (1.0 - t)).ln()
            })
            .collect()
    };
    let eval = |u: &[f64]| {
        let v = f(&to_box(u));
        if v.is_finite() { v } else { f64::MAX }
    };
    // Initial simplex: the start and one step along each axis.
    let u0 = from_box(start);
    let mut simplex: Vec<(Vec<f64>, f64)> = vec![(u0.clone(), eval(&u0))];
    for i in 0..n {
        let mut u = u0.clone();
        u[i] += 1.0;
        let v = eval(&u);
        simplex.push((u, v));
    }
    let mut evals = n + 1;
    while evals < max_evals {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[n].1);
        if (worst - best).abs() <= TOLERANCE * (best.abs() + 1e-12) {
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|j| simplex[..n].iter().map(|p| p.0[j]).sum::<f64>() / n as f64)
            .collect();
        let toward = |t: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&simplex[n].0)
                .map(|(c, w)| c + t * (w - c))
                .collect()
        };
        let xr = toward(-1.0);
        let fr = eval(&xr);
        evals += 1;
        if fr < simplex[0].1 {
            let xe = toward(-2.0);
            let fe = eval(&xe);
            evals += 1;
            simplex[n] = if fe < fr { (xe, fe) } else { (xr, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (xr, fr);
        } else {
            let xc = if fr < simplex[n].1 {
                toward(-0.5)
            } else {
                toward(0.5)
            };
            let fc = eval(&xc);
            evals += 1;
            if fc < simplex[n].1.min(fr) {
                simplex[n] = (xc, fc);
            } else {
                // Shrink toward the best point.
                let b = simplex[0].0.clone();
                for p in simplex.iter_mut().skip(1) {
                    p.0 = p.0.iter().zip(&b).map(|(x, y)| y + 0.5 * (x - y)).collect();
                    p.1 = eval(&p.0);
                }
                evals += n;
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    (to_box(&simplex[0].0), simplex[0].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_box_interior_minimum_and_respects_bounds() {
        let f = |p: &[f64]| (p[0] - 0.3).powi(2) + 10.0 * (p[1] - 0.7).powi(2);
        let (p, v) = minimize(&f, &[0.5, 0.5], &[(0.0, 1.0), (0.0, 1.0)], 2000);
        assert!(
            (p[0] - 0.3).abs() < 1e-3 && (p[1] - 0.7).abs() < 1e-3,
            "{p:?}"
        );
        assert!(v < 1e-6);
        // The minimum outside the box: the answer stays inside, at the edge.
        let g = |p: &[f64]| (p[0] - 2.0).powi(2);
        let (p, _) = minimize(&g, &[0.5], &[(0.0, 1.0)], 2000);
        assert!(p[0] <= 1.0 && p[0] > 0.99, "{p:?}");
    }
}
