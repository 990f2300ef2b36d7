//! The dependency graph of resource addresses.
//!
//! An edge `a -> b` means "`a` depends on `b`": `b` is created first and
//! destroyed last. petgraph stays private to this module. `Display` prints the
//! edges sorted, one per line, for snapshot tests; [`Graph::to_dot`] prints DOT
//! for `jaam graph`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::addr::ResourceAddr;

/// A directed graph of resource addresses.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    inner: DiGraph<ResourceAddr, ()>,
    index: BTreeMap<ResourceAddr, NodeIndex>,
}

impl Graph {
    /// Adds a node (once).
    pub fn add_node(&mut self, addr: ResourceAddr) -> NodeIndex {
        if let Some(index) = self.index.get(&addr) {
            return *index;
        }
        let index = self.inner.add_node(addr.clone());
        self.index.insert(addr, index);
        index
    }

    /// Adds "`from` depends on `to`" (once), adding both nodes if needed.
    pub fn add_edge(&mut self, from: ResourceAddr, to: ResourceAddr) {
        let (from, to) = (self.add_node(from), self.add_node(to));
        if self.inner.find_edge(from, to).is_none() {
            self.inner.add_edge(from, to, ());
        }
    }

    /// Whether `addr` is in the graph.
    pub fn contains(&self, addr: &ResourceAddr) -> bool {
        self.index.contains_key(addr)
    }

    /// The direct dependencies of `addr`, sorted.
    pub fn dependencies(&self, addr: &ResourceAddr) -> Vec<ResourceAddr> {
        let Some(index) = self.index.get(addr) else {
            return Vec::new();
        };
        let mut out: Vec<ResourceAddr> = self
            .inner
            .neighbors(*index)
            .map(|n| self.inner[n].clone())
            .collect();
        out.sort();
        out
    }

    /// `roots` and everything they depend on, transitively.
    pub fn with_dependencies(&self, roots: &[ResourceAddr]) -> BTreeSet<ResourceAddr> {
        let mut out = BTreeSet::new();
        let mut pending: Vec<ResourceAddr> = roots.to_vec();
        while let Some(addr) = pending.pop() {
            if out.insert(addr.clone()) {
                pending.extend(self.dependencies(&addr));
            }
        }
        out
    }

    /// Dependencies first: the order of creation. Ties break by address, so the
    /// order is stable.
    ///
    /// # Errors
    /// A cycle, as the addresses along it in dependency order.
    pub fn topological_order(&self) -> Result<Vec<ResourceAddr>, Vec<ResourceAddr>> {
        // Kahn's algorithm over sorted ready sets, for a deterministic order.
        let mut remaining: BTreeMap<&ResourceAddr, usize> = self
            .index
            .iter()
            .map(|(addr, index)| (addr, self.inner.neighbors(*index).count()))
            .collect();
        let mut ready: BTreeSet<&ResourceAddr> = remaining
            .iter()
            .filter(|(_, count)| **count == 0)
            .map(|(addr, _)| *addr)
            .collect();
        let mut order = Vec::with_capacity(self.index.len());
        while let Some(addr) = ready.pop_first() {
            remaining.remove(addr);
            order.push(addr.clone());
            for dependent in self
                .inner
                .neighbors_directed(self.index[addr], petgraph::Direction::Incoming)
            {
                let dependent = &self.inner[dependent];
                if let Some(count) = remaining.get_mut(dependent) {
                    *count -= 1;
                    if *count == 0 {
                        ready.insert(dependent);
                    }
                }
            }
        }
        if remaining.is_empty() {
            Ok(order)
        } else {
            Err(self.find_cycle(remaining.keys().map(|addr| (*addr).clone()).collect()))
        }
    }

    /// Dependents first: the order of destruction.
    ///
    /// # Errors
    /// A cycle, as in [`Graph::topological_order`].
    pub fn reverse_order(&self) -> Result<Vec<ResourceAddr>, Vec<ResourceAddr>> {
        self.topological_order().map(|mut order| {
            order.reverse();
            order
        })
    }

    fn find_cycle(&self, stuck: BTreeSet<ResourceAddr>) -> Vec<ResourceAddr> {
        // Every stuck node has a stuck dependency; walk until a node repeats.
        let mut path: Vec<ResourceAddr> = Vec::new();
        let mut current = stuck.first().cloned().expect("a cycle has nodes");
        loop {
            if let Some(position) = path.iter().position(|addr| *addr == current) {
                return path.split_off(position);
            }
            path.push(current.clone());
            current = self
                .dependencies(&current)
                .into_iter()
                .find(|dependency| stuck.contains(dependency))
                .expect("a stuck node has a stuck dependency");
        }
    }

    /// The graph in Graphviz DOT, nodes and edges sorted.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph jaam {\n  rankdir = \"RL\";\n");
        for addr in self.index.keys() {
            out.push_str(&format!("  \"{addr}\";\n"));
        }
        for (from, to) in self.sorted_edges() {
            out.push_str(&format!("  \"{from}\" -> \"{to}\";\n"));
        }
        out.push_str("}\n");
        out
    }

    fn sorted_edges(&self) -> Vec<(&ResourceAddr, &ResourceAddr)> {
        let mut edges: Vec<_> = self
            .inner
            .edge_indices()
            .filter_map(|edge| self.inner.edge_endpoints(edge))
            .map(|(from, to)| (&self.inner[from], &self.inner[to]))
            .collect();
        edges.sort();
        edges
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for addr in self.index.keys() {
            let dependencies = self.dependencies(addr);
            if dependencies.is_empty() {
                writeln!(f, "{addr}")?;
            } else {
                let list: Vec<String> = dependencies.iter().map(ToString::to_string).collect();
                writeln!(f, "{addr} -> {}", list.join(", "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> ResourceAddr {
        text.parse().unwrap()
    }

    #[test]
    fn topological_order_should_put_dependencies_first() {
        let mut graph = Graph::default();
        graph.add_edge(addr("record.www"), addr("instance.web"));
        graph.add_edge(addr("instance.web"), addr("log_group.build"));
        graph.add_node(addr("log_group.other"));
        let order = graph.topological_order().unwrap();
        let names: Vec<String> = order.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "log_group.build",
                "instance.web",
                "log_group.other",
                "record.www"
            ]
        );
        assert_eq!(graph.reverse_order().unwrap()[0], addr("record.www"));
        insta::assert_snapshot!(graph.to_string(), @r"
        instance.web -> log_group.build
        log_group.build
        log_group.other
        record.www -> instance.web
        ");
    }

    #[test]
    fn dot_should_list_nodes_and_edges_sorted() {
        let mut graph = Graph::default();
        graph.add_edge(addr("record.www"), addr("instance.web"));
        graph.add_node(addr("log_group.logs"));
        insta::assert_snapshot!(graph.to_dot(), @r#"
        digraph jaam {
          rankdir = "RL";
          "instance.web";
          "log_group.logs";
          "record.www";
          "record.www" -> "instance.web";
        }
        "#);
    }

    #[test]
    fn cycle_should_be_reported_as_a_path() {
        let mut graph = Graph::default();
        graph.add_edge(addr("log_group.a"), addr("log_group.b"));
        graph.add_edge(addr("log_group.b"), addr("log_group.c"));
        graph.add_edge(addr("log_group.c"), addr("log_group.a"));
        graph.add_edge(addr("log_group.d"), addr("log_group.a"));
        let cycle = graph.topological_order().unwrap_err();
        assert_eq!(
            cycle,
            [
                addr("log_group.a"),
                addr("log_group.b"),
                addr("log_group.c")
            ]
        );
    }

    #[test]
    fn with_dependencies_should_follow_edges_transitively() {
        let mut graph = Graph::default();
        graph.add_edge(addr("record.www"), addr("instance.web"));
        graph.add_edge(addr("instance.web"), addr("log_group.build"));
        graph.add_node(addr("log_group.other"));
        let closure = graph.with_dependencies(&[addr("instance.web")]);
        assert_eq!(closure.len(), 2);
    }
}
