//! The statistical tests behind the verdicts, both two-sided Student's t
//! tests with the confidence interval of the difference:
//!
//! - [`paired`]: per-round differences of an A/B comparison (the merge
//!   gate, where rounds pair the two builds);
//! - [`welch`]: two independent samples with unequal variances (repeated
//!   runs compared with a baseline's).
//!
//! For figures compared as ratios the differences are of logarithms, so the
//! estimate and interval come back as a ratio (of geometric means).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// How a figure's values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// `ln b − ln a`: the estimate is a ratio `b / a`.
    Ratio,
    /// `b − a`: the estimate is a difference.
    Difference,
}

impl Scale {
    /// `values` on this scale, or `None` if a ratio meets a value that is
    /// not above zero.
    fn transform(self, values: &[f64]) -> Option<Vec<f64>> {
        match self {
            Scale::Ratio => values
                .iter()
                .map(|&v| (v > 0.0 && v.is_finite()).then(|| v.ln()))
                .collect(),
            Scale::Difference => Some(values.to_vec()),
        }
    }

    fn back(self, x: f64) -> f64 {
        match self {
            Scale::Ratio => x.exp(),
            Scale::Difference => x,
        }
    }
}

/// The outcome of a test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    /// The ratio `b / a` (geometric mean), or the mean difference `b − a`.
    pub estimate: f64,
    /// The estimate on the test's scale (the log of a ratio).
    pub center: f64,
    /// The standard error of `center`.
    pub error: f64,
    /// The degrees of freedom of the t distribution.
    pub freedom: f64,
    /// The confidence interval's lower end.
    pub low: f64,
    /// The confidence interval's upper end.
    pub high: f64,
    /// The two-sided p-value of "no difference".
    pub p_value: f64,
}

/// Tests the rounds `a[i]`, `b[i]` on `scale` with a confidence interval at
/// `1 − alpha`; `None` with fewer than two rounds or, for ratios, a value
/// that is not above zero.
pub fn paired(a: &[f64], b: &[f64], scale: Scale, alpha: f64) -> Option<Paired> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (a, b) = (scale.transform(a)?, scale.transform(b)?);
    let differences: Vec<f64> = a.iter().zip(&b).map(|(a, b)| b - a).collect();
    let (mean, variance) = mean_variance(&differences);
    let n = differences.len() as f64;
    Some(t_test(mean, (variance / n).sqrt(), n - 1.0, scale, alpha))
}

/// Welch's test of `b` against `a`, two independent samples of at least
/// two values each, with a confidence interval at `1 − alpha`; `None` with
/// fewer values or, for ratios, a value that is not above zero.
pub fn welch(a: &[f64], b: &[f64], scale: Scale, alpha: f64) -> Option<Paired> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (a, b) = (scale.transform(a)?, scale.transform(b)?);
    let ((mean_a, var_a), (mean_b, var_b)) = (mean_variance(&a), mean_variance(&b));
    let (sa, sb) = (var_a / a.len() as f64, var_b / b.len() as f64);
    let error = (sa + sb).sqrt();
    // Welch–Satterthwaite degrees of freedom.
    let freedom = (sa + sb).powi(2)
        / (sa.powi(2) / (a.len() as f64 - 1.0) + sb.powi(2) / (b.len() as f64 - 1.0));
    Some(t_test(mean_b - mean_a, error, freedom, scale, alpha))
}

/// The mean and sample variance of `values` (at least two).
fn mean_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, variance)
}

/// Whether a standard error `error` with `freedom` degrees of freedom
/// has a t distribution (it has none without spread).
fn spread(error: f64, freedom: f64) -> Option<StudentsT> {
    (error > 0.0 && error.is_finite() && freedom.is_finite())
        .then(|| StudentsT::new(0.0, 1.0, freedom).expect("degrees of freedom above zero"))
}

/// The half-width of the two-sided `1 − alpha` confidence interval of an
/// estimate with standard error `error` and `freedom` degrees of freedom
/// (zero without spread).
pub fn half_width(error: f64, freedom: f64, alpha: f64) -> f64 {
    spread(error, freedom).map_or(0.0, |t| t.inverse_cdf(1.0 - alpha / 2.0) * error)
}

/// The t test of a difference `mean` with standard error `error`.
fn t_test(mean: f64, error: f64, freedom: f64, scale: Scale, alpha: f64) -> Paired {
    let p_value = match spread(error, freedom) {
        Some(t) => 2.0 * (1.0 - t.cdf((mean / error).abs())),
        // No spread at all: the values either moved or they did not.
        None if mean == 0.0 => 1.0,
        None => 0.0,
    };
    let half_width = half_width(error, freedom, alpha);
    Paired {
        estimate: scale.back(mean),
        center: mean,
        error,
        freedom,
        low: scale.back(mean - half_width),
        high: scale.back(mean + half_width),
        p_value,
    }
}

/// A straight line fitted by least squares, with its slope's confidence
/// interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// Change of y per unit of x.
    pub slope: f64,
    /// The slope's confidence interval, low end.
    pub low: f64,
    /// The slope's confidence interval, high end.
    pub high: f64,
    /// The share of y's variance the line explains (`None`: y was flat).
    pub r2: Option<f64>,
}

/// The least-squares line through `points` (x, y), with a `1 − alpha`
/// confidence interval on its slope; `None` under three points or when
/// every x is the same.
pub fn fit_line(points: &[(f64, f64)], alpha: f64) -> Option<Line> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let (mean_x, mean_y) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let residual = (syy - slope * sxy).max(0.0);
    let freedom = n - 2.0;
    let test = t_test(
        slope,
        (residual / freedom / sxx).sqrt(),
        freedom,
        Scale::Difference,
        alpha,
    );
    Some(Line {
        slope,
        low: test.low,
        high: test.high,
        r2: (syy > 0.0).then(|| 1.0 - residual / syy),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_recovered_with_its_quality() {
        let exact: Vec<(f64, f64)> = (0..10)
            .map(|x| (f64::from(x), 3.0 * f64::from(x) + 1.0))
            .collect();
        let line = fit_line(&exact, 0.05).unwrap();
        assert!(
            (line.slope - 3.0).abs() < 1e-9 && line.r2 == Some(1.0),
            "{line:?}"
        );
        assert!((line.high - line.low).abs() < 1e-9);
        // Noise around a flat line: a slope near zero, its interval across it.
        let noisy: Vec<(f64, f64)> = (0..20)
            .map(|x| (f64::from(x), 100.0 + [5.0, -5.0, 3.0, -3.0][x as usize % 4]))
            .collect();
        let line = fit_line(&noisy, 0.05).unwrap();
        assert!(line.low < 0.0 && line.high > 0.0, "{line:?}");
        assert!(line.r2.unwrap() < 0.2, "{line:?}");
        let flat = [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)];
        assert_eq!(fit_line(&flat, 0.05).unwrap().r2, None);
        assert!(fit_line(&flat[..2], 0.05).is_none());
    }

    #[test]
    fn a_consistent_slowdown_is_significant_and_its_ratio_is_recovered() {
        let a = [100.0, 120.0, 90.0, 110.0, 105.0];
        let b: Vec<f64> = a
            .iter()
            .zip([1.9, 2.1, 2.0, 1.95, 2.05])
            .map(|(a, k)| a * k)
            .collect();
        let test = paired(&a, &b, Scale::Ratio, 0.05).unwrap();
        assert!((test.estimate - 2.0).abs() < 0.02, "{test:?}");
        assert!(test.low > 1.9 && test.high < 2.1, "{test:?}");
        assert!(test.p_value < 0.001, "{test:?}");
    }

    #[test]
    fn noise_around_no_change_is_not_significant() {
        let a = [100.0, 100.0, 100.0, 100.0, 100.0, 100.0];
        let b = [110.0, 92.0, 104.0, 95.0, 101.0, 99.0];
        let test = paired(&a, &b, Scale::Ratio, 0.05).unwrap();
        assert!(test.p_value > 0.5, "{test:?}");
        assert!(test.low < 1.0 && test.high > 1.0, "{test:?}");
    }

    #[test]
    fn matches_a_textbook_paired_t_test() {
        // Differences 1, 2, 3, 4: mean 2.5, sd 1.291, t = 3.873, df 3;
        // two-sided p = 0.0305; 95% CI 2.5 ± 3.182 × 0.6455 = [0.446, 4.554].
        let test = paired(&[0.0; 4], &[1.0, 2.0, 3.0, 4.0], Scale::Difference, 0.05).unwrap();
        assert!((test.p_value - 0.0305).abs() < 0.0005, "{test:?}");
        assert!((test.low - 0.446).abs() < 0.001 && (test.high - 4.554).abs() < 0.001);
    }

    #[test]
    fn welch_matches_a_textbook_example() {
        // a: mean 2, var 1 (n 3); b: mean 5, var 1 (n 3): t = 3 / √(2/3) =
        // 3.674, df 4, two-sided p = 0.0213.
        let test = welch(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], Scale::Difference, 0.05).unwrap();
        assert!((test.estimate - 3.0).abs() < 1e-12);
        assert!((test.p_value - 0.0213).abs() < 0.0005, "{test:?}");
        let same = welch(&[1.0, 2.0, 3.0], &[2.0, 1.0, 3.0], Scale::Ratio, 0.05).unwrap();
        assert!((same.estimate - 1.0).abs() < 1e-12 && same.p_value > 0.99);
        assert_eq!(welch(&[1.0], &[1.0, 2.0], Scale::Ratio, 0.05), None);
    }

    #[test]
    fn degenerate_rounds() {
        assert_eq!(paired(&[1.0], &[2.0], Scale::Ratio, 0.05), None);
        assert_eq!(paired(&[0.0, 1.0], &[1.0, 1.0], Scale::Ratio, 0.05), None);
        let same = paired(&[1.0, 2.0], &[1.0, 2.0], Scale::Ratio, 0.05).unwrap();
        assert_eq!((same.estimate, same.p_value), (1.0, 1.0));
        let shifted = paired(&[1.0, 2.0], &[2.0, 3.0], Scale::Difference, 0.05).unwrap();
        assert_eq!((shifted.estimate, shifted.p_value), (1.0, 0.0));
    }
}
