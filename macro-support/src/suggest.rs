/// The candidate nearest to `input` (case-insensitive edit distance), if it
/// is near enough to be a plausible misspelling.
///
/// ```
/// assert_eq!(steadfast_macro_support::closest("Unavailible", ["Unavailable", "Aborted"]), Some("Unavailable"));
/// assert_eq!(steadfast_macro_support::closest("xyz", ["Unavailable", "Aborted"]), None);
/// ```
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input = input.to_ascii_lowercase();
    let normalized_input: String = input.chars().filter(|c| *c != '_' && *c != '-').collect();
    candidates
        .into_iter()
        .map(|candidate| {
            let lower = candidate.to_ascii_lowercase();
            let distance = if lower == normalized_input {
                0
            } else {
                edit_distance(&input, &lower)
            };
            (distance, candidate)
        })
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn case_and_separators_are_forgiven() {
        let names = ["DeadlineExceeded", "Unavailable"];
        assert_eq!(
            closest("DEADLINE_EXCEEDED", names),
            Some("DeadlineExceeded")
        );
        assert_eq!(closest("unavailable", names), Some("Unavailable"));
        assert_eq!(closest("Deadline", names), None);
    }
}
