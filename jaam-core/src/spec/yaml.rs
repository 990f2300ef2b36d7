//! A YAML tree whose every node knows its file, line and column.
//!
//! Built from the event stream of `saphyr-parser`, the parser of the saphyr
//! project (the maintained, pure-Rust YAML 1.2 successor of yaml-rust; see
//! `spec/mod.rs` for why). Plain scalars are resolved with the YAML 1.2 core
//! schema (`null`, `true`, integers, floats); quoted and block scalars are strings.
//!
//! # Limits
//! A spec file is input from whoever can write to the specs directory (or to
//! a repository a daemon watches), so the tree it builds is bounded:
//! - at most [`MAX_NODES`] nodes per file, counting every node an alias
//!   copies (a ten-line "billion laughs" file is an error, not 10⁹ nodes: the
//!   count is checked before an alias is copied);
//! - at most [`MAX_DEPTH`] nested collections (the loader walks the tree
//!   recursively);
//! - a key written twice in one mapping is an error naming both places.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::Location;

/// The most nodes one file may expand to (aliases count each copy).
pub(crate) const MAX_NODES: usize = 200_000;

/// The deepest nesting of collections in one file.
pub(crate) const MAX_DEPTH: usize = 64;

/// A YAML node with its location.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) location: Location,
}

/// What a node holds.
#[derive(Clone, Debug)]
pub(crate) enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A syntax error with where it happened.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub(crate) location: Location,
    pub(crate) message: String,
}

fn location(file: &Arc<Path>, span: Span) -> Location {
    Location {
        file: Arc::clone(file),
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

fn resolve_plain(text: &str) -> NodeKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => NodeKind::Null,
        "true" | "True" | "TRUE" => NodeKind::Bool(true),
        "false" | "False" | "FALSE" => NodeKind::Bool(false),
        _ => {
            if let Ok(number) = text.parse::<i64>() {
                NodeKind::Int(number)
            } else if text
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.')
                && let Ok(number) = text.parse::<f64>()
            {
                NodeKind::Float(number)
            } else {
                NodeKind::String(text.to_owned())
            }
        }
    }
}

/// A collection under construction, with the anchor it will be stored
/// under and the node count when it started.
enum Frame {
    List(Node, Vec<Node>),
    Map(Node, Vec<(Node, Node)>, Option<Node>),
}

/// Parses one YAML file into documents (an empty file has none).
pub(crate) fn parse(file: &Arc<Path>, text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    // Anchored nodes with the number of nodes each holds.
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut stack: Vec<(Frame, usize, usize)> = Vec::new();
    let mut documents = Vec::new();
    let mut nodes = 0usize;
    let error = |location: &Location, message: String| SyntaxError {
        location: location.clone(),
        message,
    };
    let finish =
        |node: Node, stack: &mut Vec<(Frame, usize, usize)>, documents: &mut Vec<Node>| match stack
            .last_mut()
        {
            None => documents.push(node),
            Some((Frame::List(_, items), _, _)) => items.push(node),
            Some((Frame::Map(_, entries, pending), _, _)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        };

    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(pair)) => pair,
            Some(Err(error)) => {
                let marker = error.marker();
                return Err(SyntaxError {
                    location: Location {
                        file: Arc::clone(file),
                        line: marker.line(),
                        column: marker.col() + 1,
                    },
                    message: error.info().to_owned(),
                });
            }
        };
        let here = location(file, span);
        match event {
            Event::StreamEnd => break,
            Event::Scalar(text, style, anchor, _tag) => {
                add_nodes(&mut nodes, 1, &here)?;
                let kind = if style == ScalarStyle::Plain {
                    resolve_plain(&text)
                } else {
                    NodeKind::String(text.into_owned())
                };
                let node = Node {
                    kind,
                    location: here,
                };
                if anchor > 0 {
                    anchors.insert(anchor, (node.clone(), 1));
                }
                finish(node, &mut stack, &mut documents);
            }
            Event::Alias(anchor) => {
                let (node, size) = anchors
                    .get(&anchor)
                    .ok_or_else(|| error(&here, "alias to an unknown anchor".to_owned()))?;
                // Counted before the copy is made.
                add_nodes(&mut nodes, *size, &here)?;
                let node = node.clone();
                finish(node, &mut stack, &mut documents);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(error(
                        &here,
                        format!("collections are nested more than {MAX_DEPTH} deep"),
                    ));
                }
                let started = add_nodes(&mut nodes, 1, &here)?;
                let node = Node {
                    kind: NodeKind::Null,
                    location: here,
                };
                let frame = if matches!(event, Event::SequenceStart(..)) {
                    Frame::List(node, Vec::new())
                } else {
                    Frame::Map(node, Vec::new(), None)
                };
                stack.push((frame, anchor, started));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((frame, anchor, started)) = stack.pop() else {
                    continue;
                };
                let node = match frame {
                    Frame::List(mut node, items) => {
                        node.kind = NodeKind::List(items);
                        node
                    }
                    Frame::Map(mut node, entries, _) => {
                        check_duplicate_keys(&entries)?;
                        node.kind = NodeKind::Map(entries);
                        node
                    }
                };
                if anchor > 0 {
                    anchors.insert(anchor, (node.clone(), nodes - started + 1));
                }
                finish(node, &mut stack, &mut documents);
            }
            _ => {}
        }
    }
    Ok(documents)
}

/// Counts `added` nodes; an error past [`MAX_NODES`]. Returns the count.
fn add_nodes(nodes: &mut usize, added: usize, here: &Location) -> Result<usize, SyntaxError> {
    *nodes = nodes.saturating_add(added);
    if *nodes > MAX_NODES {
        return Err(SyntaxError {
            location: here.clone(),
            message: format!(
                "the file expands to more than {MAX_NODES} YAML nodes (aliases count every copy)"
            ),
        });
    }
    Ok(*nodes)
}

/// A scalar key written twice in one mapping: an error at the second,
/// naming the first.
fn check_duplicate_keys(entries: &[(Node, Node)]) -> Result<(), SyntaxError> {
    let mut seen: HashMap<String, &Location> = HashMap::new();
    for (key, _) in entries {
        let text = match &key.kind {
            NodeKind::String(text) => text.clone(),
            NodeKind::Int(number) => number.to_string(),
            NodeKind::Bool(flag) => flag.to_string(),
            NodeKind::Null => "null".to_owned(),
            _ => continue,
        };
        if let Some(first) = seen.get(&text) {
            return Err(SyntaxError {
                location: key.location.clone(),
                message: format!(
                    "duplicate key `{text}`, first written at line {} column {}",
                    first.line, first.column
                ),
            });
        }
        seen.insert(text, &key.location);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> Node {
        let file: Arc<Path> = Arc::from(Path::new("t.yaml"));
        parse(&file, text).unwrap().remove(0)
    }

    #[test]
    fn nodes_should_carry_line_and_column() {
        let node = parse_one("a:\n  b: 14\n  c: [x, \"2\"]\n");
        let NodeKind::Map(entries) = node.kind else {
            panic!()
        };
        let NodeKind::Map(inner) = &entries[0].1.kind else {
            panic!()
        };
        assert_eq!(
            (inner[0].1.location.line, inner[0].1.location.column),
            (2, 6)
        );
        assert!(matches!(inner[0].1.kind, NodeKind::Int(14)));
        let NodeKind::List(items) = &inner[1].1.kind else {
            panic!()
        };
        assert!(matches!(&items[1].kind, NodeKind::String(s) if s == "2"));
    }

    #[test]
    fn syntax_error_should_name_line() {
        let file: Arc<Path> = Arc::from(Path::new("t.yaml"));
        let error = parse(&file, "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(error.location.line >= 1, "{error:?}");
    }
}
