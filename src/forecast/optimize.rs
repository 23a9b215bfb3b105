//! Small minimisers for the smoothing parameters: bounded Nelder-Mead for 2 or 3 of them,
//! Brent's method for one.
//!
//! Nelder-Mead's parameters live in boxes `[lo, hi]`; the simplex moves in an unconstrained space mapped
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

/// Minimises a function of one variable on `[lo, hi]` by Brent's method (golden-section
/// steps with parabolic interpolation; Brent 1973, ch. 5), stopping when the bracket is
/// within `tol` (absolute, plus a relative 1e-10) of the best point. Returns the best point
/// and its value; every evaluated point lies inside the interval.
pub fn minimize_scalar(
    f: &dyn Fn(f64) -> f64,
    lo: f64,
    hi: f64,
    tol: f64,
    max_evals: usize,
) -> (f64, f64) {
    const GOLDEN: f64 = 0.381_966_011_250_105_1; // (3 − √5) / 2
    let eval = |x: f64| {
        let v = f(x);
        if v.is_finite() { v } else { f64::MAX }
    };
    let (mut a, mut b) = (lo.min(hi), lo.max(hi));
    let mut x = a + GOLDEN * (b - a);
    let (mut w, mut v) = (x, x);
    let mut fx = eval(x);
    let (mut fw, mut fv) = (fx, fx);
    let (mut d, mut e) = (0.0f64, 0.0f64);
    for _ in 1..max_evals {
        let m = 0.5 * (a + b);
        let tol1 = 1e-10 * x.abs() + tol;
        let tol2 = 2.0 * tol1;
        if (x - m).abs() <= tol2 - 0.5 * (b - a) {
            break;
        }
        let mut golden = true;
        if e.abs() > tol1 {
            // Parabola through x, w, v.
            let r = (x - w) * (fx - fv);
            let mut q = (x - v) * (fx - fw);
            let mut p = (x - v) * q - (x - w) * r;
            q = 2.0 * (q - r);
            if q > 0.0 {
                p = -p;
            }
            q = q.abs();
            if p.abs() < (0.5 * q * e).abs() && p > q * (a - x) && p < q * (b - x) {
                e = d;
                d = p / q;
                let u = x + d;
                if u - a < tol2 || b - u < tol2 {
                    d = if x < m { tol1 } else { -tol1 };
                }
                golden = false;
            }
        }
        if golden {
            e = if x < m { b - x } else { a - x };
            d = GOLDEN * e;
        }
        let u = if d.abs() >= tol1 {
            x + d
        } else {
            x + tol1.copysign(d)
        };
        let fu = eval(u);
        if fu <= fx {
            if u < x {
                b = x;
            } else {
                a = x;
            }
            (v, fv, w, fw, x, fx) = (w, fw, x, fx, u, fu);
        } else {
            if u < x {
                a = u;
            } else {
                b = u;
            }
            if fu <= fw || w == x {
                (v, fv, w, fw) = (w, fw, u, fu);
            } else if fu <= fv || v == x || v == w {
                (v, fv) = (u, fu);
            }
        }
    }
    (x, fx)
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

    #[test]
    fn brent_finds_interior_and_edge_minima() {
        let f = |x: f64| (x - 0.3).powi(2) + 1.0;
        let (x, v) = minimize_scalar(&f, 0.0, 1.0, 1e-9, 100);
        assert!((x - 0.3).abs() < 1e-6 && (v - 1.0).abs() < 1e-12, "{x}");
        // A non-smooth function: golden-section steps still converge.
        let g = |x: f64| (x - 0.7).abs();
        let (x, _) = minimize_scalar(&g, 0.0, 1.0, 1e-9, 200);
        assert!((x - 0.7).abs() < 1e-6, "{x}");
        // The minimum beyond the interval: the answer stays inside, at the edge.
        let h = |x: f64| -x;
        let (x, _) = minimize_scalar(&h, 0.2, 0.9, 1e-9, 200);
        assert!(x <= 0.9 && x > 0.9 - 1e-6, "{x}");
    }
}
