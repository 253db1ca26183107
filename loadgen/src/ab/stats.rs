//! The paired test behind the merge gate: a two-sided paired Student's t
//! test on per-round differences, with the confidence interval of the mean
//! difference. For figures compared as ratios the differences are of
//! logarithms, so the estimate and interval come back as a ratio
//! (geometric mean of the per-round ratios).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// How a figure's rounds are paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// `ln(b / a)` per round: the estimate is a ratio.
    Ratio,
    /// `b − a` per round: the estimate is a difference.
    Difference,
}

/// The outcome of a paired test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    /// The ratio `b / a` (geometric mean), or the mean difference `b − a`.
    pub estimate: f64,
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
    let differences: Vec<f64> = match scale {
        Scale::Ratio => {
            if a.iter().chain(b).any(|&v| v <= 0.0 || !v.is_finite()) {
                return None;
            }
            a.iter().zip(b).map(|(a, b)| (b / a).ln()).collect()
        }
        Scale::Difference => a.iter().zip(b).map(|(a, b)| b - a).collect(),
    };
    let n = differences.len() as f64;
    let mean = differences.iter().sum::<f64>() / n;
    let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let error = (variance / n).sqrt();
    let (half_width, p_value) = if error == 0.0 {
        // Every round moved by exactly the same amount: no spread to test.
        (0.0, if mean == 0.0 { 1.0 } else { 0.0 })
    } else {
        let t = StudentsT::new(0.0, 1.0, n - 1.0).expect("n − 1 ≥ 1 degrees of freedom");
        let statistic = mean / error;
        let p_value = 2.0 * (1.0 - t.cdf(statistic.abs()));
        (t.inverse_cdf(1.0 - alpha / 2.0) * error, p_value)
    };
    let back = |x: f64| match scale {
        Scale::Ratio => x.exp(),
        Scale::Difference => x,
    };
    Some(Paired {
        estimate: back(mean),
        low: back(mean - half_width),
        high: back(mean + half_width),
        p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn degenerate_rounds() {
        assert_eq!(paired(&[1.0], &[2.0], Scale::Ratio, 0.05), None);
        assert_eq!(paired(&[0.0, 1.0], &[1.0, 1.0], Scale::Ratio, 0.05), None);
        let same = paired(&[1.0, 2.0], &[1.0, 2.0], Scale::Ratio, 0.05).unwrap();
        assert_eq!((same.estimate, same.p_value), (1.0, 1.0));
        let shifted = paired(&[1.0, 2.0], &[2.0, 3.0], Scale::Difference, 0.05).unwrap();
        assert_eq!((shifted.estimate, shifted.p_value), (1.0, 0.0));
    }
}
