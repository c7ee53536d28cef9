//! Label and field selectors, parsed once into structs and matched against JSON objects, with
//! the grammar and matching rules of apimachinery's `labels.Parse` and `fields.ParseSelector`
//! (<https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors>,
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/>).
//!
//! Label selectors: comma-separated requirements (`a=b`, `a==b`, `a!=b`, `a in (x,y)`,
//! `a notin (x)`, `a`, `!a`, `a>1`, `a<1`), whitespace tolerant; keys and values are checked
//! against the label syntax. Field selectors: `path=value`, `path==value`, `path!=value` joined by
//! commas (AND); `\,`, `\=` and `\\` escape those characters in values. A field path is read from
//! the object as dotted JSON keys (`metadata.name`, `status.phase`, `involvedObject.uid`); an
//! absent field reads as the empty string, as the API server's field sets do.

use serde_json::Value;

use crate::names;

/// A selector string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: LabelOp,
}

/// What a [`Requirement`] asks of the label named by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOp {
    Exists,
    DoesNotExist,
    /// `=` or `==`.
    Equals(String),
    /// `!=`: also matches objects without the label.
    NotEquals(String),
    In(Vec<String>),
    /// Also matches objects without the label.
    NotIn(Vec<String>),
    GreaterThan(i64),
    LessThan(i64),
}

impl LabelSelector {
    /// Parses `s`; the empty (or all-blank) string is the selector matching everything.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let error = |reason: String| SelectorError {
            selector: s.to_string(),
            reason,
        };
        let (tokens, pos) = (lex(s), 0);
        let mut parser = Parser { tokens, pos };
        let mut requirements = Vec::new();
        while parser.peek().is_some() {
            requirements.push(parser.requirement().map_err(error)?);
            match parser.next() {
                None => break,
                // A requirement must follow the comma (`a,` is an error).
                Some(",") if parser.peek().is_some() => continue,
                other => return Err(error(found(other, "',' and a requirement, or the end"))),
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether this selector matches every object.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.requirements.iter().all(|r| {
            let value = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            r.op.matches(value)
        })
    }
}

impl LabelOp {
    /// Whether a label with this value (`None`: no such label) satisfies the operator.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let int = || value.and_then(|v| v.parse::<i64>().ok());
        match self {
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::Equals(want) => value == Some(want.as_str()),
            LabelOp::NotEquals(want) => value != Some(want.as_str()),
            LabelOp::In(set) => value.is_some_and(|v| set.iter().any(|s| s == v)),
            LabelOp::NotIn(set) => !value.is_some_and(|v| set.iter().any(|s| s == v)),
            LabelOp::GreaterThan(n) => int().is_some_and(|v| v > *n),
            LabelOp::LessThan(n) => int().is_some_and(|v| v < *n),
        }
    }
}

/// Operators and punctuation; every other token is an identifier.
const SPECIAL: [&str; 11] = [",", "(", ")", "!", "=", "==", "!=", ">", "<", "in", "notin"];

/// Splits a label selector into tokens: operators, punctuation and words.
fn lex(s: &str) -> Vec<&str> {
    let is_special = |c: char| c.is_whitespace() || ",()!=<>".contains(c);
    let mut tokens = Vec::new();
    let mut rest = s.trim_start();
    while let Some(c) = rest.chars().next() {
        let len = match c {
            '!' | '=' if rest[1..].starts_with('=') => 2,
            c if is_special(c) => 1,
            _ => rest.find(is_special).unwrap_or(rest.len()),
        };
        tokens.push(&rest[..len]);
        rest = rest[len..].trim_start();
    }
    tokens
}

struct Parser<'a> {
    tokens: Vec<&'a str>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<&'a str> {
        let token = self.peek();
        self.pos += 1;
        token
    }

    /// The next token if it is an identifier.
    fn ident(&mut self, expected: &str) -> Result<&'a str, String> {
        match self.next() {
            Some(t) if !SPECIAL.contains(&t) => Ok(t),
            other => Err(found(other, expected)),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some("!") {
            self.pos += 1;
            let key = self.ident("identifier")?;
            validate_key(key)?;
            let op = LabelOp::DoesNotExist;
            return Ok(Requirement {
                key: key.into(),
                op,
            });
        }
        let key = self.ident("!, identifier")?;
        validate_key(key)?;
        if matches!(self.peek(), None | Some(",")) {
            let op = LabelOp::Exists;
            return Ok(Requirement {
                key: key.into(),
                op,
            });
        }
        let op = match self.next() {
            Some("=" | "==") => LabelOp::Equals(self.value()?),
            Some("!=") => LabelOp::NotEquals(self.value()?),
            Some("in") => LabelOp::In(self.set()?),
            Some("notin") => LabelOp::NotIn(self.set()?),
            Some(">") => LabelOp::GreaterThan(self.integer()?),
            Some("<") => LabelOp::LessThan(self.integer()?),
            other => return Err(found(other, "in, notin, =, ==, !=, >, <")),
        };
        Ok(Requirement {
            key: key.into(),
            op,
        })
    }

    /// A label value; nothing before `,`, `)` or the end is the empty value.
    fn value(&mut self) -> Result<String, String> {
        let value = match self.peek() {
            None | Some("," | ")") => "",
            _ => self.ident("identifier")?,
        };
        validate_value(value)?;
        Ok(value.to_string())
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Some("(") => {}
            other => return Err(found(other, "'('")),
        }
        if self.peek() == Some(")") {
            return Err("for 'in', 'notin' operators, values set can't be empty".into());
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            match self.next() {
                Some(",") => continue,
                Some(")") => return Ok(values),
                other => return Err(found(other, "',', ')'")),
            }
        }
    }

    fn integer(&mut self) -> Result<i64, String> {
        let v = self.ident("integer")?;
        v.parse()
            .map_err(|_| format!("for '>', '<' operators, the value must be an integer: {v}"))
    }
}

fn found(token: Option<&str>, expected: &str) -> String {
    format!("found '{}', expected: {expected}", token.unwrap_or(""))
}

/// A label name or value body: at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn is_label_word(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && alnum(s.chars().next())
        && alnum(s.chars().last())
}

/// What a label name part or a non-empty label value must look like.
const LABEL_WORD: &str = "must consist of alphanumeric characters, '-', '_' or '.', start and \
                          end with an alphanumeric character and be at most 63 characters";

/// A label key: a qualified name, `[prefix/]name` with a DNS subdomain prefix.
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = key
        .split_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    if let Some(prefix) = prefix {
        names::dns1123_subdomain(prefix)
            .map_err(|e| format!("invalid label key {key:?}: prefix part {e}"))?;
    }
    if !is_label_word(name) {
        return Err(format!("invalid label key {key:?}: name part {LABEL_WORD}"));
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), String> {
    if !value.is_empty() && !is_label_word(value) {
        return Err(format!(
            "invalid label value {value:?}: a label value {LABEL_WORD}"
        ));
    }
    Ok(())
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// One `path op value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted JSON path, e.g. `status.phase`.
    pub path: String,
    pub op: FieldOp,
    /// Unescaped value.
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    Equals,
    NotEquals,
}

impl FieldSelector {
    /// Parses `s`; empty terms (`a=b,`) are skipped, as the API server does.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let error = |reason: String| SelectorError {
            selector: s.to_string(),
            reason,
        };
        let mut requirements = Vec::new();
        for term in split_terms(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (path, op, value) =
                split_term(term).ok_or_else(|| error(format!("can't understand '{term}'")))?;
            let path = path.trim();
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(error(format!("invalid field path {path:?}")));
            }
            let value = unescape(value.trim()).map_err(error)?;
            requirements.push(FieldRequirement {
                path: path.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether every term holds for `object`.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let equal = field_text(object, &r.path).is_some_and(|v| v == r.value);
            match r.op {
                FieldOp::Equals => equal,
                FieldOp::NotEquals => !equal,
            }
        })
    }
}

/// The text of the field at a dotted `path`: absent or null reads as `""`, numbers and booleans
/// as their JSON text; objects and arrays have no text (they equal no value).
fn field_text(object: &Value, path: &str) -> Option<String> {
    let field = path.split('.').try_fold(object, |v, part| v.get(part));
    match field.unwrap_or(&Value::Null) {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        v @ (Value::Bool(_) | Value::Number(_)) => Some(v.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// Splits on commas not escaped by a backslash.
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits at the first operator; `!=` and `==` win over `=` at the same position.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    let i = term.find("!=").into_iter().chain(term.find('=')).min()?;
    let (op, len) = match &term[i..] {
        rest if rest.starts_with("!=") => (FieldOp::NotEquals, 2),
        rest if rest.starts_with("==") => (FieldOp::Equals, 2),
        _ => (FieldOp::Equals, 1),
    };
    Some((&term[..i], op, &term[i + len..]))
}

fn unescape(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e @ ('\\' | ',' | '=')) => out.push(e),
            Some(e) => return Err(format!("invalid escape sequence '\\{e}' in {value:?}")),
            None => return Err(format!("unterminated escape sequence in {value:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "labels": labels},
               "spec": {"nodeName": "n1", "replicas": 3},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selectors_parse() {
        use LabelOp::*;
        let req = |key: &str, op: LabelOp| Requirement {
            key: key.into(),
            op,
        };
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: Vec<(&str, Vec<Requirement>)> = vec![
            ("", vec![]),
            ("   ", vec![]),
            ("a=b", vec![req("a", Equals("b".into()))]),
            ("a==b", vec![req("a", Equals("b".into()))]),
            ("a = b", vec![req("a", Equals("b".into()))]),
            ("a!=b", vec![req("a", NotEquals("b".into()))]),
            ("a=", vec![req("a", Equals("".into()))]),
            ("a==", vec![req("a", Equals("".into()))]),
            ("a", vec![req("a", Exists)]),
            ("!a", vec![req("a", DoesNotExist)]),
            ("! a", vec![req("a", DoesNotExist)]),
            ("a in (x,y)", vec![req("a", In(s(&["x", "y"])))]),
            ("a in ( x , y )", vec![req("a", In(s(&["x", "y"])))]),
            ("a notin (x)", vec![req("a", NotIn(s(&["x"])))]),
            ("a in (x,)", vec![req("a", In(s(&["x", ""])))]),
            ("a>1", vec![req("a", GreaterThan(1))]),
            ("a < -2", vec![req("a", LessThan(-2))]),
            (
                "app=web, tier in (fe,be),!canary,example.com/owner",
                vec![
                    req("app", Equals("web".into())),
                    req("tier", In(s(&["fe", "be"]))),
                    req("canary", DoesNotExist),
                    req("example.com/owner", Exists),
                ],
            ),
            (
                "a.b-c_d=E.f-1",
                vec![req("a.b-c_d", Equals("E.f-1".into()))],
            ),
        ];
        for (input, want) in cases {
            let got = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.requirements(), want.as_slice(), "{input}");
        }
    }

    #[test]
    fn label_selectors_reject() {
        let long = format!("a={}", "v".repeat(64));
        let cases = [
            "a=b,",
            ",a",
            "a b",
            "a in ()",
            "a in x",
            "a in (x",
            "a in (x y)",
            "a=(b)",
            "-a=b",
            "a-=b",
            "a=-b",
            "a=b c",
            "Example.com/a=b",
            "/a",
            "a/",
            "!",
            "!a=b",
            "a>x",
            "a<",
            "=b",
            long.as_str(),
        ];
        for input in cases {
            let err = LabelSelector::parse(input).expect_err(input);
            assert_eq!(err.selector, input);
        }
    }

    #[test]
    fn label_selectors_match() {
        let object = pod(json!({"app": "web", "tier": "fe", "n": "5"}));
        let bare = json!({"metadata": {"name": "x"}});
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app!=web", false, true),
            ("app!=db", true, true),
            ("app", true, false),
            ("!app", false, true),
            ("tier in (fe,be)", true, false),
            ("tier notin (fe)", false, true),
            ("tier notin (be)", true, true),
            ("app=web,tier=be", false, false),
            ("n>4", true, false),
            ("n<5", false, false),
            ("app>1", false, false),
            ("missing=", false, false),
        ];
        for (input, on_object, on_bare) in cases {
            let selector = LabelSelector::parse(input).expect(input);
            assert_eq!(
                selector.matches(&object),
                on_object,
                "{input} on labelled object"
            );
            assert_eq!(
                selector.matches(&bare),
                on_bare,
                "{input} on unlabelled object"
            );
        }
    }

    #[test]
    fn field_selectors_parse() {
        let req = |path: &str, op, value: &str| FieldRequirement {
            path: path.into(),
            op,
            value: value.into(),
        };
        use FieldOp::*;
        let cases = [
            ("", vec![]),
            (
                "metadata.name=web",
                vec![req("metadata.name", Equals, "web")],
            ),
            (
                "metadata.name==web",
                vec![req("metadata.name", Equals, "web")],
            ),
            (
                "status.phase!=Running",
                vec![req("status.phase", NotEquals, "Running")],
            ),
            ("spec.nodeName=", vec![req("spec.nodeName", Equals, "")]),
            (" type = Normal ,", vec![req("type", Equals, "Normal")]),
            (r"a=x\,y\=z\\", vec![req("a", Equals, r"x,y=z\")]),
            (
                "metadata.namespace=default,involvedObject.uid=u1",
                vec![
                    req("metadata.namespace", Equals, "default"),
                    req("involvedObject.uid", Equals, "u1"),
                ],
            ),
            ("a=b=c", vec![req("a", Equals, "b=c")]),
        ];
        for (input, want) in cases {
            let got = FieldSelector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.requirements(), want.as_slice(), "{input}");
        }
    }

    #[test]
    fn field_selectors_reject() {
        for input in [
            "name", "=x", "a..b=x", ".a=x", "a.=x", r"a=\x", r"a=x\", "a=b,c",
        ] {
            let err = FieldSelector::parse(input).expect_err(input);
            assert_eq!(err.selector, input);
        }
    }

    #[test]
    fn field_selectors_match() {
        let object = pod(json!({}));
        let cases = [
            ("", true),
            ("metadata.name=web", true),
            ("metadata.name!=web", false),
            ("metadata.namespace=default", true),
            ("status.phase=Running,spec.nodeName=n1", true),
            ("status.phase=Running,spec.nodeName=n2", false),
            ("spec.replicas=3", true),
            ("spec.missing=", true),
            ("spec.missing!=", false),
            ("spec.missing.deeper=x", false),
            ("metadata.labels=", false),
            ("metadata.labels!=x", true),
        ];
        for (input, want) in cases {
            let selector = FieldSelector::parse(input).expect(input);
            assert_eq!(selector.matches(&object), want, "{input}");
        }
    }
}
