//! From path states to verdicts: for every path of a node, whether the rows it returns are
//! filtered by the parameter, following FROM items into CTEs, subqueries and upstream nodes.

mod shadow;

use std::collections::{HashMap, HashSet};

use super::eval::{World, is_typed};
use super::expr::Expr;
use super::flow::{Flow, State, follow};
use super::sql::{Member, Shape, SourceKind, shape};
use super::template::{Template, parse};
use super::{Assumptions, MAX_NODE_SQL_BYTES, MAX_PIPE_NODES, PipeDescription, Verdict};

/// Deepest chain of nodes, CTEs and subqueries followed from the endpoint.
const MAX_READ_DEPTH: usize = 96;

/// Longest parameter name judged.
const MAX_PARAM_BYTES: usize = 128;

/// Whether the rows a node (or query, or path) returns are filtered by the parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Filtered,
    /// Some rows are not; the text says where.
    Open(String),
    Unknown(String),
    /// The request fails on this path.
    Dead,
}

impl Outcome {
    fn rank(&self) -> u8 {
        match self {
            Self::Filtered => 0,
            Self::Unknown(_) => 1,
            Self::Open(_) => 2,
            Self::Dead => 3,
        }
    }
}

/// The worst of the outcomes of one path's parts: a failing part fails the request.
fn on_one_path(outcomes: impl IntoIterator<Item = Outcome>) -> Option<Outcome> {
    outcomes.into_iter().fold(None, |worst, outcome| match worst {
        Some(worst) if worst.rank() >= outcome.rank() => Some(worst),
        _ => Some(outcome),
    })
}

/// The outcome over all paths: failing paths do not count; `Dead` when every path fails.
fn over_paths(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
    on_one_path(outcomes.into_iter().filter(|outcome| *outcome != Outcome::Dead)).unwrap_or(Outcome::Dead)
}

struct Parsed {
    template: Template,
    shape: Shape,
    /// The columns the node's `sql_and()` calls compare.
    sql_and_columns: Vec<String>,
}

/// A pipe read once for all parameters.
pub(super) struct Analysis<'p> {
    pipe: &'p PipeDescription,
    by_name: HashMap<&'p str, usize>,
    parsed: HashMap<usize, Result<Parsed, String>>,
    endpoint: usize,
    /// Nodes whose rows reach the endpoint's rows (through FROM and JOIN).
    row_nodes: Vec<usize>,
    /// Nodes the endpoint reads anywhere (also in IN or EXISTS subqueries).
    all_nodes: Vec<usize>,
    assumptions: Assumptions,
}

impl<'p> Analysis<'p> {
    pub(super) fn new(pipe: &'p PipeDescription, assumptions: Assumptions) -> Result<Self, String> {
        if pipe.nodes.len() > MAX_PIPE_NODES {
            return Err(format!(
                "the pipe has {} nodes; the analyser reads at most {MAX_PIPE_NODES}",
                pipe.nodes.len()
            ));
        }
        if let Some(node) = pipe.nodes.iter().find(|node| node.sql.len() > MAX_NODE_SQL_BYTES) {
            return Err(format!(
                "node `{}` has {} bytes of SQL; the analyser reads at most {MAX_NODE_SQL_BYTES}",
                shown(&node.name),
                node.sql.len()
            ));
        }
        let mut by_name = HashMap::new();
        for (at, node) in pipe.nodes.iter().enumerate() {
            if by_name.insert(node.name.as_str(), at).is_some() {
                return Err(format!("two nodes are named `{}`", shown(&node.name)));
            }
        }
        let endpoint = super::endpoint_index(pipe)?;
        let mut analysis = Self {
            pipe,
            by_name,
            parsed: HashMap::new(),
            endpoint,
            row_nodes: Vec::new(),
            all_nodes: Vec::new(),
            assumptions,
        };
        analysis.read_reachable();
        Ok(analysis)
    }

    /// Parses every node the endpoint reads, and sorts them into row and other readers.
    fn read_reachable(&mut self) {
        let mut queue = vec![self.endpoint];
        while let Some(node) = queue.pop() {
            if self.parsed.contains_key(&node) {
                continue;
            }
            self.all_nodes.push(node);
            let parsed = parse(&self.pipe.nodes[node].sql).and_then(|template| {
                let sql_and_columns = shadow::sql_and_columns(&template);
                Ok(Parsed { shape: shape(&template)?, template, sql_and_columns })
            });
            if let Ok(parsed) = &parsed {
                for kind in &parsed.shape.sources {
                    if let Some(read) = self.node_read(&parsed.shape, kind) {
                        queue.push(read);
                    }
                }
            }
            self.parsed.insert(node, parsed);
        }
        let mut seen = HashSet::new();
        self.collect_row_nodes(self.endpoint, &mut seen);
        self.row_nodes = seen.into_iter().collect();
    }

    /// The node a FROM item reads, if it reads one.
    fn node_read(&self, shape: &Shape, kind: &SourceKind) -> Option<usize> {
        match kind {
            SourceKind::Table(name) if shape.cte(name).is_none() => self.by_name.get(name.as_str()).copied(),
            _ => None,
        }
    }

    fn collect_row_nodes(&self, node: usize, seen: &mut HashSet<usize>) {
        if !seen.insert(node) {
            return;
        }
        let Some(Ok(parsed)) = self.parsed.get(&node) else { return };
        let mut queries = vec![0];
        let mut visited = HashSet::new();
        while let Some(query) = queries.pop() {
            if !visited.insert(query) {
                continue;
            }
            queries.extend(parsed.shape.exposed.get(query).into_iter().flatten().copied());
            for member in parsed.shape.queries.get(query).into_iter().flatten() {
                let select = match member {
                    Member::Query(inner) => {
                        queries.push(*inner);
                        continue;
                    }
                    Member::Select(select) => *select,
                };
                for source in parsed.shape.selects.get(select).into_iter().flatten() {
                    match parsed.shape.sources.get(*source) {
                        Some(SourceKind::Subquery(inner)) => queries.push(*inner),
                        Some(SourceKind::Table(name)) if parsed.shape.cte(name).is_some() => {
                            queries.extend(parsed.shape.cte(name));
                        }
                        Some(kind) => {
                            if let Some(read) = self.node_read(&parsed.shape, kind) {
                                self.collect_row_nodes(read, seen);
                            }
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// The verdict for one parameter.
    pub(super) fn verdict(&self, param: &str) -> Verdict {
        let valid = !param.is_empty()
            && param.len() <= MAX_PARAM_BYTES
            && !param.starts_with(|ch: char| ch.is_ascii_digit())
            && param.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
        if !valid {
            return Verdict::Unknown(bounded(&format!(
                "`{}` is not a template parameter name",
                shown(param)
            )));
        }
        let mut run = Run::new(self, param);
        let given = run.node(self.endpoint, World::Given);
        let missing = if self.assumptions.required_refuses_missing && self.declares_required(param) {
            Outcome::Dead
        } else {
            run.node(self.endpoint, World::Missing)
        };
        match given {
            Outcome::Dead => Verdict::Unknown(bounded(
                "every template path of the endpoint fails the request (error() or a failing template \
                 function)",
            )),
            Outcome::Unknown(why) => Verdict::Unknown(bounded(&why)),
            Outcome::Filtered => match missing {
                Outcome::Filtered | Outcome::Dead => Verdict::Enforced,
                Outcome::Open(_) | Outcome::Unknown(_) => Verdict::Optional,
            },
            Outcome::Open(gap) => run.unfiltered(&gap),
        }
    }

    /// Whether a node whose rows reach the endpoint declares `param` with `required=True`.
    fn declares_required(&self, param: &str) -> bool {
        let mut found = false;
        for node in &self.row_nodes {
            let Some(Ok(parsed)) = self.parsed.get(node) else { continue };
            parsed.template.walk_exprs(&mut |expr| {
                if let Expr::Call { func, args, kwargs } = expr {
                    let typed = matches!(&**func, Expr::Name(name) if is_typed(name));
                    let names_param = matches!(args.first(), Some(Expr::Name(name)) if name == param);
                    let required =
                        kwargs.iter().any(|(key, value)| key == "required" && *value == Expr::True);
                    found |= typed && names_param && required;
                }
            });
        }
        found
    }
}

/// The judging of one parameter.
struct Run<'a, 'p> {
    analysis: &'a Analysis<'p>,
    param: &'a str,
    flows: HashMap<(usize, World), Result<Flow, String>>,
    outcomes: HashMap<(usize, World), Outcome>,
    visiting: Vec<usize>,
    /// How many nodes and queries are being followed: bounds the recursion.
    depth: usize,
}

/// One path of one node being followed.
#[derive(Clone, Copy)]
struct At<'s> {
    node: usize,
    state: &'s State,
    world: World,
}

impl Run<'_, '_> {
    fn new<'a, 'p>(analysis: &'a Analysis<'p>, param: &'a str) -> Run<'a, 'p> {
        Run {
            analysis,
            param,
            flows: HashMap::new(),
            outcomes: HashMap::new(),
            visiting: Vec::new(),
            depth: 0,
        }
    }

    fn name(&self, node: usize) -> String {
        shown(&self.analysis.pipe.nodes[node].name)
    }

    fn shape(&self, node: usize) -> Option<&Shape> {
        match self.analysis.parsed.get(&node) {
            Some(Ok(parsed)) => Some(&parsed.shape),
            _ => None,
        }
    }

    fn flow(&mut self, node: usize, world: World) -> Result<&Flow, String> {
        if !self.flows.contains_key(&(node, world)) {
            let flow = match self.analysis.parsed.get(&node) {
                Some(Ok(parsed)) => follow(&parsed.template, &parsed.shape, self.param, world),
                Some(Err(why)) => Err(why.clone()),
                None => Err("was not read".to_owned()),
            };
            self.flows.insert((node, world), flow);
        }
        match self.flows.get(&(node, world)) {
            Some(Ok(flow)) => Ok(flow),
            Some(Err(why)) => Err(why.clone()),
            None => Err("was not read".to_owned()),
        }
    }

    /// Runs `follow` one level deeper, or refuses past [`MAX_READ_DEPTH`].
    fn deeper(&mut self, node: usize, follow: impl FnOnce(&mut Self) -> Outcome) -> Outcome {
        if self.depth >= MAX_READ_DEPTH {
            let name = self.name(node);
            return Outcome::Unknown(format!(
                "node `{name}`: nodes, subqueries and CTEs nest more than {MAX_READ_DEPTH} deep (or a CTE \
                 reads itself)"
            ));
        }
        self.depth += 1;
        let outcome = follow(self);
        self.depth -= 1;
        outcome
    }

    fn node(&mut self, node: usize, world: World) -> Outcome {
        if let Some(known) = self.outcomes.get(&(node, world)) {
            return known.clone();
        }
        if self.visiting.contains(&node) {
            return Outcome::Unknown(format!(
                "node `{}` reads itself through a cycle of nodes",
                self.name(node)
            ));
        }
        let states = match self.flow(node, world) {
            Ok(flow) => flow.states.clone(),
            Err(why) => return Outcome::Unknown(format!("node `{}`: {why}", self.name(node))),
        };
        self.visiting.push(node);
        let outcome = self.deeper(node, |run| {
            over_paths(states.iter().map(|state| run.query(At { node, state, world }, 0)).collect::<Vec<_>>())
        });
        self.visiting.pop();
        self.outcomes.insert((node, world), outcome.clone());
        outcome
    }

    fn query(&mut self, at: At<'_>, query: usize) -> Outcome {
        self.deeper(at.node, |run| {
            let Some(shape) = run.shape(at.node) else { return Outcome::Dead };
            let members = shape.queries.get(query).cloned().unwrap_or_default();
            // Subqueries in the SELECT list and such return their values too: the rows they
            // read must be filtered as well (`count() / (SELECT count() FROM events)` is not).
            let exposed: Vec<usize> = shape
                .exposed
                .get(query)
                .into_iter()
                .flatten()
                .copied()
                .filter(|inner| shape.written(*inner, at.state.selects))
                .collect();
            let mut outcomes: Vec<Outcome> = members
                .iter()
                .filter_map(|member| match member {
                    Member::Select(select) if at.state.selects & (1 << select) != 0 => {
                        Some(run.select(at, *select))
                    }
                    Member::Select(_) => None,
                    Member::Query(inner) => Some(run.query(at, *inner)),
                })
                .collect();
            if outcomes.is_empty() {
                // No SELECT on this path: the rendered SQL is empty there and ClickHouse refuses it.
                return Outcome::Dead;
            }
            outcomes.extend(exposed.into_iter().map(|inner| run.query(at, inner)));
            on_one_path(outcomes).unwrap_or(Outcome::Dead)
        })
    }

    fn select(&mut self, at: At<'_>, select: usize) -> Outcome {
        let shape = self.shape(at.node);
        let sources: Vec<usize> = shape
            .and_then(|shape| shape.selects.get(select))
            .into_iter()
            .flatten()
            .copied()
            .filter(|source| at.state.sources & (1 << source) != 0)
            .collect();
        // A table named at request time may be any SQL (`table()` does not quote it): even a
        // filter of this SELECT cannot vouch for it.
        let dynamic = sources.iter().find_map(|source| match shape?.sources.get(*source)? {
            SourceKind::Dynamic(why) => Some(*why),
            _ => None,
        });
        let outcomes: Vec<Outcome> = sources.iter().map(|source| self.source(at, *source)).collect();
        if outcomes.contains(&Outcome::Dead) {
            return Outcome::Dead;
        }
        let name = self.name(at.node);
        if let Some(why) = dynamic {
            return Outcome::Unknown(format!("node `{name}` {why}"));
        }
        if at.state.filtered & (1 << select) != 0 {
            return match self.analysis.shadowed(at.node, select) {
                Some(why) => Outcome::Unknown(why),
                None => Outcome::Filtered,
            };
        }
        let Some(outcome) = on_one_path(outcomes) else {
            return Outcome::Open(format!("node `{name}` returns rows without reading a table"));
        };
        let filtered_elsewhere = self
            .flows
            .get(&(at.node, at.world))
            .and_then(|flow| flow.as_ref().ok())
            .is_some_and(|flow| flow.evidence.filtered & (1 << select) != 0);
        match outcome {
            Outcome::Open(_) if filtered_elsewhere => Outcome::Open(format!(
                "node `{name}` filters by `{}` on some template paths only (others are chosen by other \
                 parameters)",
                self.param
            )),
            other => other,
        }
    }

    fn source(&mut self, at: At<'_>, source: usize) -> Outcome {
        let name = self.name(at.node);
        let Some(kind) = self.shape(at.node).and_then(|shape| shape.sources.get(source)).cloned() else {
            return Outcome::Unknown(format!("node `{name}`: a FROM item was lost"));
        };
        let unfiltered = |table: &str| {
            format!("node `{name}` reads `{}` without a filter on `{}`", shown(table), self.param)
        };
        match kind {
            SourceKind::Table(table) => {
                if let Some(query) = self.shape(at.node).and_then(|shape| shape.cte(&table)) {
                    return self.query(at, query);
                }
                match self.analysis.by_name.get(table.as_str()) {
                    Some(read) => self.node(*read, at.world),
                    None => Outcome::Open(unfiltered(&table)),
                }
            }
            SourceKind::Qualified(table) => Outcome::Open(unfiltered(&table)),
            SourceKind::Subquery(query) => self.query(at, query),
            SourceKind::TableFunction(function) => {
                Outcome::Open(format!("node `{name}` reads the table function {}()", shown(&function)))
            }
            SourceKind::Dynamic(why) => Outcome::Unknown(format!("node `{name}` {why}")),
        }
    }

    /// The verdict when some rows reach the endpoint unfiltered: `Unused` when the parameter
    /// filters nothing anywhere the endpoint reads, else `Unknown` with why.
    fn unfiltered(&mut self, gap: &str) -> Verdict {
        let mut filters = false;
        for node in self.analysis.all_nodes.clone() {
            let name = self.name(node);
            let Ok(flow) = self.flow(node, World::Given) else { continue };
            if let Some(doubt) = flow.evidence.doubts.first() {
                return Verdict::Unknown(bounded(&format!("node `{name}` {doubt}")));
            }
            filters |= flow.evidence.filtered != 0;
        }
        if filters {
            let param = self.param;
            Verdict::Unknown(bounded(&format!(
                "`{param}` filters some of what the endpoint reads, not every row it returns (filters in \
                 IN or EXISTS subqueries are not followed): {gap}"
            )))
        } else {
            Verdict::Unused
        }
    }
}

/// A name from the description or the SQL, safe and short enough to quote in a message.
fn shown(name: &str) -> String {
    let safe: String = crate::core::redact::prefix(name, 64)
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-') { ch } else { '?' })
        .collect();
    if name.chars().count() > 64 { format!("{safe}...") } else { safe }
}

/// A reason cut to [`super::MAX_REASON_CHARS`].
pub(super) fn bounded(reason: &str) -> String {
    let cut = crate::core::redact::prefix(reason, super::MAX_REASON_CHARS - 3);
    if cut.len() < reason.len() { format!("{cut}...") } else { reason.to_owned() }
}
