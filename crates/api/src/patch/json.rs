//! JSON patch (RFC 6902, <https://www.rfc-editor.org/rfc/rfc6902>): a list of `add`, `remove`,
//! `replace`, `move`, `copy` and `test` operations addressed by JSON pointers (RFC 6901,
//! <https://www.rfc-editor.org/rfc/rfc6901>: `/spec/containers/0/image`, `~1` for `/`, `~0`
//! for `~`, `-` for the end of an array).
//!
//! The operations apply in order to a copy of the original; the first failing one fails the
//! whole patch, so a patch applies completely or not at all.

use super::{remove_key, type_name, values_equal, PatchError};
use serde_json::{Map, Value};

/// Applies the RFC 6902 operations `ops` (a JSON array) to `original`.
pub fn json_patch(original: &Value, ops: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = ops else {
        return Err(PatchError::NotAnOperationList {
            found: type_name(ops),
        });
    };
    let mut doc = original.clone();
    for (index, op) in ops.iter().enumerate() {
        let Value::Object(op) = op else {
            return Err(PatchError::OpNotAnObject { index });
        };
        apply_op(&mut doc, index, op)?;
    }
    Ok(doc)
}

const OPS: [&str; 6] = ["add", "remove", "replace", "move", "copy", "test"];

/// One operation being applied, for error context.
#[derive(Debug, Clone, Copy)]
struct Op {
    index: usize,
    name: &'static str,
}

fn apply_op(doc: &mut Value, index: usize, op: &Map<String, Value>) -> Result<(), PatchError> {
    let name = string_field(op, index, "op")?;
    let Some(name) = OPS.into_iter().find(|o| *o == name) else {
        return Err(PatchError::UnknownOp {
            index,
            op: name.to_string(),
        });
    };
    let at = Op { index, name };
    let path = string_field(op, index, "path")?;
    let tokens = at.parse(path)?;
    let value = || {
        op.get("value")
            .ok_or(PatchError::OpValueMissing { index, op: name })
    };
    match name {
        "add" => at.add(doc, &tokens, path, value()?.clone()),
        "remove" => at.remove(doc, &tokens, path).map(drop),
        "replace" => {
            *at.resolve_mut(doc, &tokens, path)? = value()?.clone();
            Ok(())
        }
        "move" => {
            let from = string_field(op, index, "from")?;
            let from_tokens = at.parse(from)?;
            if from_tokens.len() < tokens.len() && tokens.starts_with(&from_tokens) {
                return Err(PatchError::MoveIntoChild {
                    index,
                    from: from.to_string(),
                    path: path.to_string(),
                });
            }
            let moved = at.remove(doc, &from_tokens, from)?;
            at.add(doc, &tokens, path, moved)
        }
        "copy" => {
            let from = string_field(op, index, "from")?;
            let copied = at.resolve(doc, &at.parse(from)?, from)?.clone();
            at.add(doc, &tokens, path, copied)
        }
        _ => {
            let expected = value()?;
            if values_equal(at.resolve(doc, &tokens, path)?, expected) {
                Ok(())
            } else {
                Err(PatchError::TestFailed {
                    index,
                    path: path.to_string(),
                })
            }
        }
    }
}

fn string_field<'o>(
    op: &'o Map<String, Value>,
    index: usize,
    field: &'static str,
) -> Result<&'o str, PatchError> {
    op.get(field)
        .and_then(Value::as_str)
        .ok_or(PatchError::OpFieldMissing { index, field })
}

/// Splits a JSON pointer into unescaped reference tokens; `""` is the whole document.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, &'static str> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("must be empty or start with \"/\"");
    };
    rest.split('/').map(unescape).collect()
}

fn unescape(token: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err("\"~\" must be followed by \"0\" or \"1\""),
        }
    }
    Ok(out)
}

/// An existing array element's index: digits without leading zeros, below `len`.
fn array_index(token: &str, len: usize) -> Option<usize> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    token.parse().ok().filter(|i| valid && *i < len)
}

impl Op {
    fn parse(self, pointer: &str) -> Result<Vec<String>, PatchError> {
        parse_pointer(pointer).map_err(|problem| PatchError::InvalidPointer {
            index: self.index,
            op: self.name,
            pointer: pointer.to_string(),
            problem,
        })
    }

    fn resolve<'d>(
        self,
        doc: &'d Value,
        tokens: &[String],
        path: &str,
    ) -> Result<&'d Value, PatchError> {
        let mut node = doc;
        for token in tokens {
            node = match node {
                Value::Object(map) => map.get(token).ok_or_else(|| self.not_found(path))?,
                Value::Array(items) => {
                    let i = array_index(token, items.len())
                        .ok_or_else(|| self.bad_index(path, token, items.len()))?;
                    &items[i]
                }
                scalar => return Err(self.not_a_container(path, scalar)),
            };
        }
        Ok(node)
    }

    fn resolve_mut<'d>(
        self,
        doc: &'d mut Value,
        tokens: &[String],
        path: &str,
    ) -> Result<&'d mut Value, PatchError> {
        let mut node = doc;
        for token in tokens {
            node = match node {
                Value::Object(map) => map.get_mut(token).ok_or_else(|| self.not_found(path))?,
                Value::Array(items) => {
                    let len = items.len();
                    let i =
                        array_index(token, len).ok_or_else(|| self.bad_index(path, token, len))?;
                    &mut items[i]
                }
                scalar => return Err(self.not_a_container(path, scalar)),
            };
        }
        Ok(node)
    }

    /// RFC 6902 §4.1: sets an object member (replacing it) or inserts into an array.
    fn add(
        self,
        doc: &mut Value,
        tokens: &[String],
        path: &str,
        value: Value,
    ) -> Result<(), PatchError> {
        let Some((last, parent)) = tokens.split_last() else {
            *doc = value;
            return Ok(());
        };
        match self.resolve_mut(doc, parent, path)? {
            Value::Object(map) => {
                map.insert(last.clone(), value);
            }
            Value::Array(items) => {
                let len = items.len();
                let at = match last.as_str() {
                    "-" => len,
                    token => array_index(token, len + 1)
                        .ok_or_else(|| self.bad_index(path, token, len))?,
                };
                items.insert(at, value);
            }
            scalar => return Err(self.not_a_container(path, scalar)),
        }
        Ok(())
    }

    /// RFC 6902 §4.2: removes and returns an existing value.
    fn remove(self, doc: &mut Value, tokens: &[String], path: &str) -> Result<Value, PatchError> {
        let Some((last, parent)) = tokens.split_last() else {
            return Err(PatchError::RemoveRoot {
                index: self.index,
                op: self.name,
            });
        };
        match self.resolve_mut(doc, parent, path)? {
            Value::Object(map) => remove_key(map, last).ok_or_else(|| self.not_found(path)),
            Value::Array(items) => {
                let len = items.len();
                let i = array_index(last, len).ok_or_else(|| self.bad_index(path, last, len))?;
                Ok(items.remove(i))
            }
            scalar => Err(self.not_a_container(path, scalar)),
        }
    }

    fn not_found(self, path: &str) -> PatchError {
        PatchError::PathNotFound {
            index: self.index,
            op: self.name,
            path: path.to_string(),
        }
    }

    fn bad_index(self, path: &str, token: &str, len: usize) -> PatchError {
        PatchError::BadArrayIndex {
            index: self.index,
            op: self.name,
            path: path.to_string(),
            token: token.to_string(),
            len,
        }
    }

    fn not_a_container(self, path: &str, found: &Value) -> PatchError {
        PatchError::NotAContainer {
            index: self.index,
            op: self.name,
            path: path.to_string(),
            found: type_name(found),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers() {
        let cases: [(&str, Result<Vec<&str>, ()>); 9] = [
            ("", Ok(vec![])),
            ("/", Ok(vec![""])),
            ("/a/b", Ok(vec!["a", "b"])),
            ("/a~1b", Ok(vec!["a/b"])),
            ("/m~0n", Ok(vec!["m~n"])),
            ("/~01", Ok(vec!["~1"])),
            ("a", Err(())),
            ("/a~2", Err(())),
            ("/a~", Err(())),
        ];
        for (pointer, want) in cases {
            let want = want.map(|t| t.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(parse_pointer(pointer).map_err(drop), want, "{pointer:?}");
        }
    }

    #[test]
    fn array_indices() {
        let cases = [
            ("0", 1, Some(0)),
            ("2", 3, Some(2)),
            ("3", 3, None),
            ("01", 3, None),
            ("-", 3, None),
            ("-1", 3, None),
            ("+1", 3, None),
            ("", 3, None),
            ("x", 3, None),
        ];
        for (token, len, want) in cases {
            assert_eq!(array_index(token, len), want, "{token:?} of {len}");
        }
    }
}
