//! Whether a column a filter compares is the column: ClickHouse reads a name as an alias of the
//! query before a column of its tables (`SELECT {{String(org)}} AS org ... WHERE org = ...`
//! compares the value with itself), and a node, CTE or subquery read in FROM may return as
//! `org` whatever its own SELECT list computes.

use std::collections::HashSet;

use super::super::expr::Expr;
use super::super::sql::{Bits, Member, Role, Shape, SourceKind};
use super::super::template::Template;
use super::{Analysis, shown};

/// The columns `sql_and()` calls compare (`org_id=...`, `org__in=...`).
pub(super) fn sql_and_columns(template: &Template) -> Vec<String> {
    let mut columns = Vec::new();
    template.walk_exprs(&mut |expr| {
        if let Expr::Call { func, kwargs, .. } = expr
            && matches!(&**func, Expr::Name(name) if name == "sql_and")
        {
            for (key, _) in kwargs {
                let column = key.split("__").next().unwrap_or_default().to_owned();
                if !columns.contains(&column) {
                    columns.push(column);
                }
            }
        }
    });
    columns
}

/// The SELECTs of `query` and of the parenthesised queries among its members.
fn selects_of(shape: &Shape, query: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut queries = vec![query];
    while let Some(query) = queries.pop() {
        for member in shape.queries.get(query).into_iter().flatten() {
            match member {
                Member::Select(select) => found.push(*select),
                Member::Query(inner) if *inner > query => queries.push(*inner),
                Member::Query(_) => {}
            }
        }
    }
    found
}

fn aliases(shape: &Shape, selects: Bits, column: &str) -> bool {
    shape.aliases.iter().any(|(bits, name)| bits & selects != 0 && (name == column || name == "*"))
}

impl Analysis<'_> {
    /// Why the strict filters of `select` in `node` may not compare the columns they name, if
    /// they may not.
    pub(super) fn shadowed(&self, node: usize, select: usize) -> Option<String> {
        let Some(Ok(parsed)) = self.parsed.get(&node) else { return None };
        let shape = &parsed.shape;
        let mut columns: Vec<(&str, Bits)> = Vec::new();
        for leaf in &shape.leaves {
            let Some(Role::Filter { selects, weak: None, value, condition }) = &leaf.role else { continue };
            if selects & (1 << select) == 0 {
                continue;
            }
            let scope = leaf.scope | (1 << select);
            if value.is_none() {
                columns.extend(leaf.columns.iter().map(|column| (column.as_str(), scope)));
            }
            if condition.is_none() {
                columns.extend(parsed.sql_and_columns.iter().map(|column| (column.as_str(), scope)));
            }
        }
        let name = shown(&self.pipe.nodes[node].name);
        for (column, scope) in &columns {
            if aliases(shape, *scope, column) {
                return Some(format!(
                    "node `{name}` filters on `{}`, which the query also names as an alias of another \
                     expression (ClickHouse reads the alias)",
                    shown(column)
                ));
            }
        }
        let mut seen = HashSet::new();
        for (column, _) in &columns {
            if let Some(source) = self.aliased_below(node, select, column, &mut seen) {
                return Some(format!(
                    "node `{name}` filters on `{}`, which `{source}` it reads computes as an alias of \
                     another expression",
                    shown(column)
                ));
            }
        }
        None
    }

    /// A node (or this node's CTE or subquery) read by `select`, directly or not, that defines
    /// `column` as an alias.
    fn aliased_below(
        &self,
        node: usize,
        select: usize,
        column: &str,
        seen: &mut HashSet<(usize, usize)>,
    ) -> Option<String> {
        if !seen.insert((node, select)) {
            return None;
        }
        let Some(Ok(parsed)) = self.parsed.get(&node) else { return None };
        let shape = &parsed.shape;
        for source in shape.selects.get(select).into_iter().flatten() {
            let (read_node, query) = match shape.sources.get(*source) {
                Some(SourceKind::Subquery(query)) => (node, *query),
                Some(SourceKind::Table(table)) => {
                    match (shape.cte(table), self.by_name.get(table.as_str())) {
                        (Some(query), _) => (node, query),
                        (None, Some(read)) => (*read, 0),
                        (None, None) => continue,
                    }
                }
                _ => continue,
            };
            let Some(Ok(read)) = self.parsed.get(&read_node) else { continue };
            let inner = selects_of(&read.shape, query);
            let bits = inner.iter().fold(0, |bits: Bits, select| bits | (1 << select));
            let whole_node = if read_node == node { bits } else { Bits::MAX };
            if aliases(&read.shape, whole_node, column) {
                return Some(shown(&self.pipe.nodes[read_node].name));
            }
            for inner in inner {
                if let Some(found) = self.aliased_below(read_node, inner, column, seen) {
                    return Some(found);
                }
            }
        }
        None
    }
}
