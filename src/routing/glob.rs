//! ALB's wildcard patterns: `*` matches any run of characters (including none), `?`
//! exactly one. Matching is iterative with a single backtrack point, so it is linear in
//! practice and never recursive.

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: Box<[u8]>,
    case_insensitive: bool,
}

impl Glob {
    /// Case-insensitive patterns are lower-cased once here.
    pub(crate) fn new(pattern: &str, case_insensitive: bool) -> Self {
        let pattern = if case_insensitive {
            pattern.to_ascii_lowercase()
        } else {
            pattern.to_owned()
        };
        Self {
            pattern: pattern.into_bytes().into_boxed_slice(),
            case_insensitive,
        }
    }

    pub(crate) fn has_wildcards(pattern: &str) -> bool {
        pattern.bytes().any(|b| b == b'*' || b == b'?')
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        let (p, t) = (&self.pattern[..], text.as_bytes());
        let eq = |a: u8, b: u8| {
            if self.case_insensitive {
                a == b.to_ascii_lowercase()
            } else {
                a == b
            }
        };
        let (mut pi, mut ti) = (0, 0);
        // Position after the last `*` and the text position it is currently matched up to.
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], t[ti]))) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                pi += 1;
                star = Some((pi, ti));
            } else if let Some((sp, st)) = star {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn wildcards_follow_alb_semantics() {
        let cases = [
            ("/api/*", "/api/", true),
            ("/api/*", "/api/v1/users", true),
            ("/api/*", "/api", false),
            ("/img/*.png", "/img/a/b.png", true),
            ("/img/*.png", "/img/a/b.jpg", false),
            ("/v?/x", "/v1/x", true),
            ("/v?/x", "/v10/x", false),
            ("*", "", true),
            ("/a*b*c", "/aXbYbZc", true),
            ("/a*b*c", "/aXbYbZ", false),
            ("/exact", "/exact", true),
            ("/exact", "/Exact", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                Glob::new(pattern, false).matches(text),
                want,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn case_insensitive_patterns_ignore_case_on_both_sides() {
        let g = Glob::new("*.Example.COM", true);
        assert!(g.matches("api.example.com"));
        assert!(g.matches("API.EXAMPLE.COM"));
        assert!(!g.matches("example.com"));
    }
}
