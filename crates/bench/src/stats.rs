//! Order statistics over measured samples (times, rates, memory). Pure.

/// The value at fraction `p` (0.0..=1.0) of the sorted samples, nearest
/// rank; NaN when there are none. Sorts `v` in place.
pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The median: `percentile(v, 0.5)`, which for an even count is the upper
/// of the two middle samples (`v[len / 2]` once sorted). NaN when empty.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    percentile(v, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_sample_and_the_upper_one_for_an_even_count() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(&mut [7.0]), 7.0);
        for n in 1..40 {
            let mut v: Vec<f64> = (0..n).rev().map(f64::from).collect();
            assert_eq!(median(&mut v), v[v.len() / 2], "{n} samples");
        }
    }

    #[test]
    fn percentiles_pick_the_nearest_rank_of_the_sorted_samples() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut v, 1.0), 100.0);
        assert_eq!(percentile(&mut [5.0, 1.0], 0.99), 5.0);
    }

    #[test]
    fn no_samples_give_nan_rather_than_a_panic() {
        assert!(median(&mut []).is_nan());
        assert!(percentile(&mut [], 0.99).is_nan());
    }

    #[test]
    fn nan_samples_sort_last_and_do_not_panic() {
        assert_eq!(median(&mut [f64::NAN, 1.0, 2.0]), 2.0);
    }
}
