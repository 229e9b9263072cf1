//! Finds where in the file a field is, so every error names its line.
//!
//! The file is re-parsed with spans (`toml::de::DeTable`) only when there is an error
//! to report; a field path (`listeners[0].rules[3].conditions.path`) is walked down that
//! tree to the innermost part that exists.

use std::fmt::{self, Write};
use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Field path as the user reads it: `listeners[0].rules[3].conditions.path`.
pub(crate) struct FieldPath<'a>(pub(crate) &'a [Segment]);

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Converts a `serde_ignored` path (of an unknown key) into segments.
pub(crate) fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    let mut out = Vec::new();
    push_segments(path, &mut out);
    out
}

fn push_segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            push_segments(parent, out);
            out.push(Segment::Index(*index));
        }
        Path::Map { parent, key } => {
            push_segments(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => push_segments(parent, out),
    }
}

/// The text of a config file, for locating errors in it.
pub(crate) struct Source<'a> {
    path: PathBuf,
    text: &'a str,
}

impl<'a> Source<'a> {
    pub(crate) fn new(path: PathBuf, text: &'a str) -> Self {
        Self { path, text }
    }

    /// `file:line: field: message`, the line being that of the innermost part of
    /// `field` present in the file.
    pub(crate) fn render(&self, field: &[Segment], message: &str) -> String {
        let offset = DeTable::parse(self.text)
            .ok()
            .and_then(|root| span_of(root.get_ref(), field))
            .map_or(0, |span| span.start);
        format!(
            "{}:{}: {}: {message}",
            self.path.display(),
            self.line_of(offset),
            FieldPath(field)
        )
    }

    /// A TOML syntax or type error, with its line and, where found, its field.
    pub(crate) fn render_toml_error(&self, error: &toml::de::Error) -> String {
        let message = error.message().trim_end_matches('.').to_owned();
        let Some(span) = error.span() else {
            return format!("{}: {message}", self.path.display());
        };
        let field = DeTable::parse(self.text)
            .ok()
            .map(|root| field_at(root.get_ref(), span.start))
            .unwrap_or_default();
        let line = self.line_of(span.start);
        if field.is_empty() {
            format!("{}:{line}: {message}", self.path.display())
        } else {
            format!(
                "{}:{line}: {}: {message}",
                self.path.display(),
                FieldPath(&field)
            )
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

/// Span of the innermost existing part of `field`: the key's span for a table entry,
/// the element's span for an array item.
fn span_of(table: &DeTable<'_>, field: &[Segment]) -> Option<Range<usize>> {
    let (first, rest) = field.split_first()?;
    let Segment::Key(key) = first else {
        return None;
    };
    let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
    Some(value_span(v.get_ref(), rest).unwrap_or_else(|| k.span()))
}

fn value_span(value: &DeValue<'_>, rest: &[Segment]) -> Option<Range<usize>> {
    let (first, tail) = rest.split_first()?;
    match (value, first) {
        (DeValue::Table(t), Segment::Key(_)) => span_of(t, rest),
        (DeValue::Array(items), Segment::Index(i)) => {
            let item = items.get(*i)?;
            Some(value_span(item.get_ref(), tail).unwrap_or_else(|| item.span()))
        }
        _ => None,
    }
}

/// Field path of the part of the file an error at `offset` is in: the key or array
/// element that starts last at or before `offset`.
///
/// Containment cannot be used: a `[[listeners]]` element or a `[table]` is spanned by
/// its header only, and a later header may reopen a table defined much earlier. Keys
/// and elements are visited in tree order, so on a tie the deeper one wins.
fn field_at(table: &DeTable<'_>, offset: usize) -> Vec<Segment> {
    let mut latest = Latest {
        offset,
        start: None,
        field: Vec::new(),
    };
    latest.table(table, &mut Vec::new());
    latest.field
}

/// The best candidate so far for [`field_at`].
struct Latest {
    offset: usize,
    start: Option<usize>,
    field: Vec<Segment>,
}

impl Latest {
    fn consider(&mut self, start: usize, path: &[Segment]) {
        if start <= self.offset && self.start.is_none_or(|s| start >= s) {
            self.start = Some(start);
            self.field = path.to_vec();
        }
    }

    fn table(&mut self, table: &DeTable<'_>, path: &mut Vec<Segment>) {
        for (k, v) in table.iter() {
            path.push(Segment::Key(k.get_ref().to_string()));
            self.consider(k.span().start, path);
            self.value(v.get_ref(), path);
            path.pop();
        }
    }

    fn value(&mut self, value: &DeValue<'_>, path: &mut Vec<Segment>) {
        match value {
            DeValue::Table(t) => self.table(t, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Segment::Index(i));
                    self.consider(item.span().start, path);
                    self.value(item.get_ref(), path);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

impl Segment {
    pub(crate) fn key(key: &str) -> Self {
        Segment::Key(key.to_owned())
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Key(k) => f.write_str(k),
            Segment::Index(i) => f.write_char('[').and(write!(f, "{i}]")),
        }
    }
}
