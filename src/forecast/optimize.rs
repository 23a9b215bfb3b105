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
/// within `tol` (absolute, plus a relative 1e-10) of the best point; every evaluated point
/// lies inside the interval. A state machine: it asks for a point ([`Brent::ask`]) and is
/// told the function's value there ([`Brent::tell`]), so that a caller can run many
/// searches side by side and evaluate their points together (each takes the steps it
/// takes alone); [`Brent::minimize`] runs one search to its end.
#[derive(Debug, Clone)]
pub struct Brent {
    a: f64,
    b: f64,
    x: f64,
    w: f64,
    v: f64,
    fx: f64,
    fw: f64,
    fv: f64,
    d: f64,
    e: f64,
    tol: f64,
    /// Steps left after the first evaluation.
    steps: usize,
    /// The point asked for, `None` once done.
    asked: Option<f64>,
    /// No value told yet (the first is the starting point's).
    first: bool,
}

impl Brent {
    const GOLDEN: f64 = 0.381_966_011_250_105_1; // (3 − √5) / 2

    /// A search of `[lo, hi]` with at most `max_evals` evaluations.
    pub fn new(lo: f64, hi: f64, tol: f64, max_evals: usize) -> Brent {
        let (a, b) = (lo.min(hi), lo.max(hi));
        let x = a + Self::GOLDEN * (b - a);
        Brent {
            a,
            b,
            x,
            w: x,
            v: x,
            fx: 0.0,
            fw: 0.0,
            fv: 0.0,
            d: 0.0,
            e: 0.0,
            tol,
            steps: max_evals.saturating_sub(1),
            asked: Some(x),
            first: true,
        }
    }

    /// The point whose value the search needs next; `None` once it is done.
    pub fn ask(&self) -> Option<f64> {
        self.asked
    }

    /// The value at the point [`Brent::ask`] gave (a non-finite value counts as the
    /// largest).
    pub fn tell(&mut self, value: f64) {
        let Some(u) = self.asked else { return };
        let fu = if value.is_finite() { value } else { f64::MAX };
        if self.first {
            self.first = false;
            (self.fx, self.fw, self.fv) = (fu, fu, fu);
        } else if fu <= self.fx {
            if u < self.x {
                self.b = self.x;
            } else {
                self.a = self.x;
            }
            (self.v, self.fv, self.w, self.fw, self.x, self.fx) =
                (self.w, self.fw, self.x, self.fx, u, fu);
        } else {
            if u < self.x {
                self.a = u;
            } else {
                self.b = u;
            }
            if fu <= self.fw || self.w == self.x {
                (self.v, self.fv, self.w, self.fw) = (self.w, self.fw, u, fu);
            } else if fu <= self.fv || self.v == self.x || self.v == self.w {
                (self.v, self.fv) = (u, fu);
            }
        }
        self.asked = self.next_point();
    }

    /// Runs the search on `f` to its end: the best point and its value.
    pub fn minimize(mut self, f: impl Fn(f64) -> f64) -> (f64, f64) {
        while let Some(u) = self.ask() {
            self.tell(f(u));
        }
        self.best()
    }

    /// The best point and its value so far.
    pub fn best(&self) -> (f64, f64) {
        (self.x, self.fx)
    }

    /// The next point to evaluate, or `None` when the bracket is small enough or the
    /// evaluations are spent.
    fn next_point(&mut self) -> Option<f64> {
        if self.steps == 0 {
            return None;
        }
        let (a, b, x) = (self.a, self.b, self.x);
        let m = 0.5 * (a + b);
        let tol1 = 1e-10 * x.abs() + self.tol;
        let tol2 = 2.0 * tol1;
        if (x - m).abs() <= tol2 - 0.5 * (b - a) {
            return None;
        }
        self.steps -= 1;
        let mut golden = true;
        if self.e.abs() > tol1 {
            // Parabola through x, w, v.
            let r = (x - self.w) * (self.fx - self.fv);
            let mut q = (x - self.v) * (self.fx - self.fw);
            let mut p = (x - self.v) * q - (x - self.w) * r;
            q = 2.0 * (q - r);
            if q > 0.0 {
                p = -p;
            }
            q = q.abs();
            if p.abs() < (0.5 * q * self.e).abs() && p > q * (a - x) && p < q * (b - x) {
                self.e = self.d;
                self.d = p / q;
                let u = x + self.d;
                if u - a < tol2 || b - u < tol2 {
                    self.d = if x < m { tol1 } else { -tol1 };
                }
                golden = false;
            }
        }
        if golden {
            self.e = if x < m { b - x } else { a - x };
            self.d = Self::GOLDEN * self.e;
        }
        Some(if self.d.abs() >= tol1 {
            x + self.d
        } else {
            x + tol1.copysign(self.d)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brent's method as a loop (what the state machine replaced), for comparison.
    fn reference_scalar(
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

    proptest::proptest! {
        /// The state machine takes the loop's steps: the same best point, bit for bit.
        #[test]
        fn brent_as_a_state_machine_takes_the_loops_steps(
            c in -2.0f64..3.0, k in 0.0f64..40.0, s in 0.01f64..10.0,
            lo in -1.0f64..0.5, width in 0.01f64..3.0, evals in 1usize..60,
        ) {
            let f = |x: f64| s * (x - c).powi(2) + (k * x).sin() + if x > 2.5 { f64::NAN } else { 0.0 };
            let (x1, v1) = Brent::new(lo, lo + width, 1e-7, evals).minimize(f);
            let (x2, v2) = reference_scalar(&f, lo, lo + width, 1e-7, evals);
            proptest::prop_assert_eq!((x1.to_bits(), v1.to_bits()), (x2.to_bits(), v2.to_bits()));
        }
    }

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
        let (x, v) = Brent::new(0.0, 1.0, 1e-9, 100).minimize(f);
        assert!((x - 0.3).abs() < 1e-6 && (v - 1.0).abs() < 1e-12, "{x}");
        // A non-smooth function: golden-section steps still converge.
        let g = |x: f64| (x - 0.7).abs();
        let (x, _) = Brent::new(0.0, 1.0, 1e-9, 200).minimize(g);
        assert!((x - 0.7).abs() < 1e-6, "{x}");
        // The minimum beyond the interval: the answer stays inside, at the edge.
        let h = |x: f64| -x;
        let (x, _) = Brent::new(0.2, 0.9, 1e-9, 200).minimize(h);
        assert!(x <= 0.9 && x > 0.9 - 1e-6, "{x}");
    }
}
