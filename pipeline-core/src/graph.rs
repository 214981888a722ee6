//! The topology of a built pipeline, rendered as Mermaid or Graphviz DOT.

use std::fmt::Write;

use crate::stats::Kind;

/// Nodes and edges of a pipeline, in build order.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use pipeline_core::prelude::*;
/// let (sink, _out) = sink::collect::<u64>();
/// let pipeline = Pipeline::builder("demo")
///     .source(source::iter(0..3u64))
///     .stage(stage::map_fn("double", |n: u64| async move { Ok::<_, std::convert::Infallible>(n * 2) }))
///     .sink(sink)
///     .build();
/// let mermaid = pipeline.graph().to_mermaid();
/// assert!(mermaid.contains("double"));
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

/// A pipeline element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Position in [`Graph::nodes`].
    pub id: usize,
    /// The element's name.
    pub name: String,
    /// What it is.
    pub kind: Kind,
}

/// A bounded edge between two elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Upstream node id.
    pub from: usize,
    /// Downstream node id.
    pub to: usize,
    /// Capacity in items.
    pub capacity: usize,
    /// Overflow policy, as text (`block`, `drop_newest`, ...).
    pub when_full: String,
}

impl Graph {
    pub(crate) fn node(&mut self, name: &str, kind: Kind) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            id,
            name: name.to_owned(),
            kind,
        });
        id
    }

    pub(crate) fn rename(&mut self, id: usize, name: &str) {
        if let Some(node) = self.nodes.get_mut(id) {
            node.name = name.to_owned();
        }
    }

    pub(crate) fn edge(&mut self, from: usize, to: usize, capacity: usize, when_full: &str) {
        self.edges.push(Edge {
            from,
            to,
            capacity,
            when_full: when_full.to_owned(),
        });
    }

    /// The elements.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The edges.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Renders a Mermaid `flowchart LR`.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        for n in &self.nodes {
            let label = escape(&n.name, '"');
            let _ = match n.kind {
                Kind::Source => writeln!(s, "    n{}[/\"{}\"/]", n.id, label),
                Kind::Sink | Kind::DeadLetter => writeln!(s, "    n{}[(\"{}\")]", n.id, label),
                Kind::Router => writeln!(s, "    n{}{{\"{}\"}}", n.id, label),
                Kind::Stage => writeln!(s, "    n{}[\"{}\"]", n.id, label),
            };
        }
        for e in &self.edges {
            let _ = writeln!(
                s,
                "    n{} -->|\"{} {}\"| n{}",
                e.from, e.capacity, e.when_full, e.to
            );
        }
        s
    }

    /// Renders a Graphviz `digraph`.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph pipeline {\n    rankdir=LR;\n");
        for n in &self.nodes {
            let shape = match n.kind {
                Kind::Source => "invhouse",
                Kind::Sink | Kind::DeadLetter => "cylinder",
                Kind::Router => "diamond",
                Kind::Stage => "box",
            };
            let _ = writeln!(
                s,
                "    n{} [label=\"{}\", shape={}];",
                n.id,
                escape(&n.name, '"'),
                shape
            );
        }
        for e in &self.edges {
            let _ = writeln!(
                s,
                "    n{} -> n{} [label=\"{} {}\"];",
                e.from, e.to, e.capacity, e.when_full
            );
        }
        s.push_str("}\n");
        s
    }
}

fn escape(text: &str, quote: char) -> String {
    text.replace('\\', "\\\\").replace(quote, "\\\"")
}
