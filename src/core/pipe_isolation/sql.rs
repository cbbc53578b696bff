//! Pass one over a node: the SQL around the template blocks, read once in template order, every
//! branch of a block from the same starting point. It yields the node's [`Shape`] (queries,
//! SELECTs, FROM items, CTEs), which text or insertion wrote each SELECT and FROM item (so pass
//! two knows which exist on a template path), and the [`Role`] of every insertion.

use super::conjunct::Reading;
use super::cursor::{Cursor, merge};
use super::template::{Item, Template};

/// A set of SELECTs or FROM items of one node, by number.
pub(super) type Bits = u128;

/// Most SELECTs, and most FROM items, in one node (the bits of [`Bits`]).
pub(super) const MAX_SELECTS: usize = 128;

/// Most subqueries in one node.
const MAX_QUERIES: usize = 512;

/// A member of a query: a SELECT, or a parenthesised query (`(SELECT ...) UNION ALL ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Member {
    Select(usize),
    Query(usize),
}

/// What a FROM or JOIN item reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SourceKind {
    /// A bare name: a CTE, a node of the pipe, or a data source.
    Table(String),
    /// `database.table`: never a node.
    Qualified(String),
    Subquery(usize),
    TableFunction(String),
    /// A table the analyser cannot name; the text says why.
    Dynamic(&'static str),
}

/// Why a use of a value in a filtering clause may not pin the rows to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Weak {
    Or,
    Not,
    Case,
    Function(String),
    Operator(String),
    OuterJoin,
    TemplateOperand,
    Unclear,
    /// Not the value of a whole conjunct `column = value` or `column IN value`.
    NotCompared,
    /// Not a whole conjunct.
    NotWhole,
}

impl Weak {
    /// How a message describes it.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Or => "under an OR".to_owned(),
            Self::Not => "under a NOT".to_owned(),
            Self::Case => "inside a CASE expression".to_owned(),
            Self::Function(name) => format!("inside {}()", crate::core::redact::prefix(name, 24)),
            Self::Operator(op) => format!("next to `{}`", crate::core::redact::prefix(op, 12)),
            Self::OuterJoin => "in the ON or USING clause of an outer join".to_owned(),
            Self::TemplateOperand => "compared with another template value".to_owned(),
            Self::Unclear => "after template branches that end on different SQL".to_owned(),
            Self::NotCompared => {
                "that is not a whole AND-ed condition `column = value` or `column IN value` \
                                  (one plain column on one side, the value alone on the other)"
                    .to_owned()
            }
            Self::NotWhole => "that is not a whole AND-ed condition".to_owned(),
        }
    }
}

/// Where an insertion stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// In a SQL comment: rendered, never read.
    Comment,
    /// In FROM or JOIN: a table named at request time (recorded as a dynamic FROM item).
    Source,
    /// In WHERE, PREWHERE, HAVING, QUALIFY, or an ON or USING condition of these SELECTs:
    /// `weak` whatever the value, `value` when it is the parameter's value, `condition` when it
    /// is a condition (`sql_and()`).
    Filter { selects: Bits, weak: Option<Weak>, value: Option<Weak>, condition: Option<Weak> },
    /// Before the query's first keyword (Tinybird's `{{max_threads(2)}}` writes a comment there).
    Leading,
    /// Where template branches left the clause unclear.
    Ambiguous,
    /// Anywhere else: the SELECT list, GROUP BY, ORDER BY, LIMIT, SETTINGS...
    Other,
}

/// What a text or insertion contributes.
#[derive(Clone, Debug, Default)]
pub(super) struct Leaf {
    pub selects: Bits,
    pub sources: Bits,
    pub role: Option<Role>,
    /// Filters: the names of the columns the insertion is compared with.
    pub columns: Vec<String>,
    /// Filters: the SELECTs whose aliases those names may mean (its own and enclosing ones).
    pub scope: Bits,
}

/// A node's query structure.
#[derive(Clone, Debug)]
pub(super) struct Shape {
    /// Members of each query; query 0 is the node's statement.
    pub queries: Vec<Vec<Member>>,
    /// Subqueries whose values a query returns (in its SELECT list, WITH, ORDER BY...: anywhere
    /// but FROM and the filtering clauses), by query.
    pub exposed: Vec<Vec<usize>>,
    /// FROM and JOIN items of each SELECT.
    pub selects: Vec<Vec<usize>>,
    pub sources: Vec<SourceKind>,
    /// `WITH name AS (subquery)`.
    pub ctes: Vec<(String, usize)>,
    pub leaves: Vec<Leaf>,
    /// Names the SQL defines as aliases (`expr AS org`, `expr org`) other than of the column of
    /// that name, and the SELECTs they belong to (all bits for a `WITH` alias); `*` for a name
    /// chosen at request time.
    pub aliases: Vec<(Bits, String)>,
}

impl Shape {
    /// Whether a template path that writes `selects` writes a SELECT of `query`.
    pub(super) fn written(&self, query: usize, selects: Bits) -> bool {
        let mut queries = vec![query];
        while let Some(query) = queries.pop() {
            for member in self.queries.get(query).into_iter().flatten() {
                match member {
                    Member::Select(select) if selects & (1 << select) != 0 => return true,
                    Member::Query(inner) if *inner > query => queries.push(*inner),
                    Member::Select(_) | Member::Query(_) => {}
                }
            }
        }
        false
    }

    /// The CTE of that name, if any.
    pub(super) fn cte(&self, name: &str) -> Option<usize> {
        self.ctes.iter().find(|(cte, _)| cte == name).map(|(_, query)| *query)
    }
}

/// A role whose OR groups are resolved at the end.
#[derive(Clone, Debug)]
pub(super) enum PendingRole {
    Done(Role),
    Filter {
        selects: Bits,
        weak: Option<Weak>,
        value: Option<Weak>,
        condition: Option<Weak>,
        groups: Vec<usize>,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Group {
    or: bool,
    parent: Option<usize>,
}

/// Collects the shape while the cursor reads.
#[derive(Debug)]
pub(super) struct Builder {
    pub shape: Shape,
    /// The leaf being read.
    pub leaf: usize,
    groups: Vec<Group>,
    roles: Vec<Option<PendingRole>>,
    overflow: Option<String>,
}

impl Builder {
    fn new(leaves: usize) -> Self {
        let shape = Shape {
            queries: vec![Vec::new()],
            exposed: vec![Vec::new()],
            selects: Vec::new(),
            sources: Vec::new(),
            ctes: Vec::new(),
            leaves: vec![Leaf::default(); leaves],
            aliases: Vec::new(),
        };
        Self { shape, leaf: 0, groups: Vec::new(), roles: vec![None; leaves], overflow: None }
    }

    pub(super) fn new_group(&mut self) -> usize {
        self.groups.push(Group::default());
        self.groups.len() - 1
    }

    pub(super) fn flag_or(&mut self, group: usize) {
        if let Some(group) = self.groups.get_mut(group) {
            group.or = true;
        }
    }

    /// A group standing for two that template branches left in the same place.
    pub(super) fn merge_groups(&mut self, first: usize, second: usize) -> usize {
        let merged = self.new_group();
        for group in [first, second] {
            if let Some(group) = self.groups.get_mut(group) {
                group.parent = Some(merged);
            }
        }
        merged
    }

    fn group_has_or(&self, mut group: usize) -> bool {
        // Each merge adds a group after the ones it merges, so the walk ends.
        while let Some(found) = self.groups.get(group) {
            if found.or {
                return true;
            }
            match found.parent {
                Some(parent) if parent > group => group = parent,
                _ => return false,
            }
        }
        false
    }

    pub(super) fn new_query(&mut self) -> usize {
        if self.shape.queries.len() >= MAX_QUERIES {
            self.fail(format!("the node has more than {MAX_QUERIES} subqueries"));
        }
        self.shape.queries.push(Vec::new());
        self.shape.exposed.push(Vec::new());
        self.shape.queries.len() - 1
    }

    /// Records that `query` returns values computed by `subquery`.
    pub(super) fn expose(&mut self, query: usize, subquery: usize) {
        if let Some(exposed) = self.shape.exposed.get_mut(query) {
            exposed.push(subquery);
        }
    }

    /// Records that the node cannot be read (reported when the reading ends).
    pub(super) fn fail(&mut self, why: String) {
        self.overflow.get_or_insert(why);
    }

    pub(super) fn add_member(&mut self, query: usize, member: Member) {
        if let Some(members) = self.shape.queries.get_mut(query) {
            members.push(member);
        }
    }

    /// A new SELECT in `query`, written by the current leaf; its bit.
    pub(super) fn new_select(&mut self, query: usize) -> Bits {
        let select = self.shape.selects.len();
        if select >= MAX_SELECTS {
            self.fail(format!("the node has more than {MAX_SELECTS} SELECTs"));
            return 0;
        }
        self.shape.selects.push(Vec::new());
        self.add_member(query, Member::Select(select));
        self.leaf_mut().selects |= 1 << select;
        1 << select
    }

    /// A FROM item of each SELECT in `selects`, written by the current leaf; their numbers.
    pub(super) fn add_sources(&mut self, selects: Bits, kind: &SourceKind) -> Vec<usize> {
        let mut added = Vec::new();
        for select in (0..self.shape.selects.len()).filter(|select| selects & (1 << select) != 0) {
            let source = self.shape.sources.len();
            if source >= MAX_SELECTS {
                self.fail(format!("the node has more than {MAX_SELECTS} FROM and JOIN items"));
                break;
            }
            self.shape.sources.push(kind.clone());
            self.shape.selects[select].push(source);
            self.leaf_mut().sources |= 1 << source;
            added.push(source);
        }
        added
    }

    pub(super) fn set_source(&mut self, source: usize, kind: SourceKind) {
        if let Some(found) = self.shape.sources.get_mut(source) {
            *found = kind;
        }
    }

    /// `database.` + `name`.
    pub(super) fn qualify_source(&mut self, source: usize, name: &str) {
        let Some(found) = self.shape.sources.get_mut(source) else { return };
        if let SourceKind::Table(database) | SourceKind::Qualified(database) = found {
            *found = SourceKind::Qualified(format!("{database}.{name}"));
        }
    }

    pub(super) fn set_role(&mut self, leaf: usize, role: PendingRole) {
        if let Some(slot) = self.roles.get_mut(leaf) {
            *slot = Some(role);
        }
    }

    /// Marks an insertion's filtering use as loose (first reason wins).
    pub(super) fn weaken(&mut self, leaf: usize, why: Weak) {
        if let Some(Some(PendingRole::Filter { weak, .. })) = self.roles.get_mut(leaf) {
            weak.get_or_insert(why);
        }
    }

    /// Marks one reading of an insertion as not a strict filtering use (first reason wins).
    pub(super) fn loosen(&mut self, leaf: usize, reading: Reading, why: Weak) {
        if let Some(Some(PendingRole::Filter { value, condition, .. })) = self.roles.get_mut(leaf) {
            let slot = match reading {
                Reading::Value => value,
                Reading::Condition => condition,
            };
            slot.get_or_insert(why);
        }
    }

    /// Records a column name a filtering use relies on, and the SELECTs in scope.
    pub(super) fn add_columns(&mut self, leaf: usize, names: Vec<String>, scope: Bits) {
        if let Some(found) = self.shape.leaves.get_mut(leaf) {
            found.scope |= scope;
            for name in names {
                if !found.columns.contains(&name) && found.columns.len() < 16 {
                    found.columns.push(name);
                }
            }
        }
    }

    /// Records an alias of these SELECTs.
    pub(super) fn add_alias(&mut self, selects: Bits, name: &str) {
        let entry = (selects, name.to_owned());
        if !self.shape.aliases.contains(&entry) && self.shape.aliases.len() < 4096 {
            self.shape.aliases.push(entry);
        }
    }

    fn leaf_mut(&mut self) -> &mut Leaf {
        let last = self.shape.leaves.len().saturating_sub(1);
        let at = self.leaf.min(last);
        &mut self.shape.leaves[at]
    }

    fn finish(mut self) -> Result<Shape, String> {
        if let Some(overflow) = self.overflow.take() {
            return Err(overflow);
        }
        let roles = std::mem::take(&mut self.roles);
        for (leaf, role) in roles.into_iter().enumerate() {
            let role = match role {
                None => continue,
                Some(PendingRole::Done(role)) => role,
                Some(PendingRole::Filter { selects, weak, value, condition, groups }) => {
                    let or = groups.iter().any(|group| self.group_has_or(*group));
                    Role::Filter { selects, weak: weak.or_else(|| or.then_some(Weak::Or)), value, condition }
                }
            };
            self.shape.leaves[leaf].role = Some(role);
        }
        Ok(self.shape)
    }
}

/// Reads a node's SQL structure. Errors say, in words, what could not be read.
pub(super) fn shape(template: &Template) -> Result<Shape, String> {
    if template.leaves == 0 {
        return Err("the node has no SQL".to_owned());
    }
    let mut builder = Builder::new(template.leaves);
    let mut cursor = Cursor::new(&mut builder);
    walk(&template.items, &mut cursor, &mut builder)?;
    cursor.finish()?;
    cursor.settle(&mut builder);
    builder.finish()
}

fn walk(items: &[Item], cursor: &mut Cursor, builder: &mut Builder) -> Result<(), String> {
    for item in items {
        match item {
            Item::Text { leaf, text } => cursor.text(text, *leaf, builder)?,
            Item::Insert { leaf, .. } => cursor.insert(*leaf, builder)?,
            Item::If { branches, otherwise } => {
                let mut ends = Vec::new();
                for body in branches.iter().map(|(_, body)| body).chain(otherwise) {
                    let mut branch = cursor.clone();
                    walk(body, &mut branch, builder)?;
                    ends.push(branch);
                }
                if otherwise.is_none() {
                    ends.push(cursor.clone());
                }
                *cursor = merge(ends, builder)?;
            }
            Item::For { body, .. } => {
                let mut looped = cursor.clone();
                walk(body, &mut looped, builder)?;
                *cursor = merge(vec![cursor.clone(), looped], builder)?;
            }
            Item::Set { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::template::parse;
    use super::*;

    fn shape_of(sql: &str) -> Shape {
        shape(&parse(sql).unwrap()).unwrap()
    }

    fn roles(shape: &Shape) -> Vec<Role> {
        shape.leaves.iter().filter_map(|leaf| leaf.role.clone()).collect()
    }

    #[test]
    fn finds_sources_of_unions_joins_subqueries_and_ctes() {
        let shape = shape_of(
            "WITH base AS (SELECT * FROM events) SELECT * FROM base b LEFT JOIN db.orgs o ON o.id = b.org \
             UNION ALL SELECT * FROM (SELECT * FROM other) , numbers(10) ARRAY JOIN arr",
        );
        assert_eq!(shape.queries[0].len(), 2);
        assert_eq!(shape.ctes, vec![("base".to_owned(), 1)]);
        assert_eq!(
            shape.sources,
            vec![
                SourceKind::Table("events".to_owned()),
                SourceKind::Table("base".to_owned()),
                SourceKind::Qualified("db.orgs".to_owned()),
                SourceKind::Subquery(2),
                SourceKind::Table("other".to_owned()),
                SourceKind::TableFunction("numbers".to_owned()),
            ]
        );
    }

    #[test]
    fn gives_each_insertion_its_clause() {
        let shape = shape_of(
            "% SELECT {{columns(c, 'a')}} FROM t WHERE org = {{String(org)}} AND x IN (SELECT x FROM u WHERE \
             y = {{String(y)}}) -- {{String(z)}}\n ORDER BY {{column(o, 'a')}} LIMIT {{Int32(l, 10)}}",
        );
        let found = roles(&shape);
        assert_eq!(found[0], Role::Other);
        assert!(matches!(found[1], Role::Filter { selects: 1, weak: None, value: None, .. }), "{found:?}");
        assert!(matches!(found[2], Role::Filter { selects: 2, weak: None, value: None, .. }), "{found:?}");
        assert_eq!(found[3], Role::Comment);
        assert_eq!(found[4], Role::Other);
    }

    #[test]
    fn marks_loose_uses_in_filters() {
        for (sql, weak) in [
            ("% SELECT * FROM t WHERE org = {{String(org)}} OR 1", Weak::Or),
            ("% SELECT * FROM t WHERE NOT org = {{String(org)}} AND 1", Weak::Not),
            ("% SELECT * FROM t WHERE org != {{String(org)}}", Weak::Operator("!=".to_owned())),
            ("% SELECT * FROM t WHERE org NOT IN {{Array(o)}}", Weak::Operator("NOT IN".to_owned())),
            ("% SELECT * FROM t WHERE {{String(org)}} <> org", Weak::Operator("<>".to_owned())),
            ("% SELECT * FROM t WHERE or(org = {{String(org)}}, 1)", Weak::Or),
            (
                "% SELECT * FROM t WHERE multiIf(a, 1, org = {{String(org)}})",
                Weak::Function("multiif".to_owned()),
            ),
            ("% SELECT * FROM t WHERE {{column(c, 'org')}} = {{String(org)}}", Weak::TemplateOperand),
            ("% SELECT * FROM t LEFT JOIN u ON u.org = {{String(org)}}", Weak::OuterJoin),
        ] {
            let found = roles(&shape_of(sql));
            assert!(
                found
                    .iter()
                    .any(|role| matches!(role, Role::Filter { weak: Some(found), .. } if *found == weak)),
                "{sql}: {found:?}"
            );
        }
        let strong = roles(&shape_of(
            "% SELECT * FROM t WHERE (a OR b) AND deleted_at IS NOT NULL AND org = {{String(org)}}",
        ));
        assert!(
            matches!(strong[..], [Role::Filter { selects: 1, weak: None, value: None, .. }]),
            "{strong:?}"
        );
    }

    #[test]
    fn records_which_leaf_writes_each_select_and_source() {
        let shape =
            shape_of("% {% if defined(a) %} SELECT * FROM x {% else %} SELECT * FROM y {% end %} WHERE 1");
        assert_eq!(shape.leaves[0].selects, 0);
        assert_eq!(shape.leaves[1].selects, 1);
        assert_eq!(shape.leaves[2].selects, 2);
        assert_eq!(shape.leaves[2].sources, 2);
    }

    #[test]
    fn refuses_sql_it_cannot_read() {
        for (sql, part) in [
            ("% SELECT * FROM t WHERE org = '{{String(org)}}'", "string literal"),
            ("% SELECT * FROM t WHERE (org = 1", "not closed"),
            ("% SELECT * FROM t WHERE org = 1)", "closes no parenthesis"),
            ("% INSERT INTO t SELECT 1", "not a SELECT query"),
            ("% SELECT * FROM t WHERE {% if a %} ( {% end %} 1", "one template branch only"),
            ("% SELECT 'a{% if a %}'{% end %}", "starts in one template branch"),
            ("% SELECT * {% if a %} FROM {% end %} t", "half-written"),
            ("", "no SQL"),
        ] {
            let error = shape(&parse(sql).unwrap()).unwrap_err();
            assert!(error.contains(part), "{sql:?}: {error}");
        }
    }
}
