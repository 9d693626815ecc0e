//! "Did you mean" suggestions for misspelled keys and values: the closest candidate by edit
//! distance (a swap of two neighbours counts as one edit), plus a few known synonyms.

/// The candidate a known synonym of `input` maps to, else the candidate closest to `input` if
/// it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    input: &str,
    candidates: &[&'a str],
    synonyms: &[(&str, &'a str)],
) -> Option<&'a str> {
    let lowered = input.to_ascii_lowercase();
    let budget = match lowered.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    if let Some((_, c)) = synonyms.iter().find(|(s, _)| *s == lowered) {
        return Some(c);
    }
    candidates
        .iter()
        .map(|c| (strsim::osa_distance(&lowered, c), *c))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn typos_and_synonyms() {
        let keys = ["scope", "ttl", "max_entries", "on_release", "crate"];
        assert_eq!(closest("max_entires", &keys, &[]), Some("max_entries"));
        assert_eq!(closest("scop", &keys, &[]), Some("scope"));
        assert_eq!(closest("tll", &keys, &[]), Some("ttl"));
        assert_eq!(closest("colour", &keys, &[]), None);
        let scopes = ["global", "session"];
        assert_eq!(closest("sesion", &scopes, &[]), Some("session"));
        assert_eq!(closest("globl", &scopes, &[]), Some("global"));
        assert_eq!(closest("Session", &scopes, &[]), Some("session"));
        assert_eq!(closest("user", &scopes, &[("user", "session")]), Some("session"));
    }
}
