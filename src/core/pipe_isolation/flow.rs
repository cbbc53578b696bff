//! Pass two over a node, for one parameter in one [`World`]: every template path, followed with
//! the values the parameter takes. A path state records which SELECTs and FROM items the path
//! writes and which SELECTs it filters by the parameter; paths that fail the request (`error()`,
//! a missing required value) are dropped. Paths are merged when their states are equal, and
//! bounded.

use super::eval::{Env, Fails, Tri, Val, Value, World, eval, is_setting, truth};
use super::expr::Expr;
use super::sql::{Bits, Role, Shape};
use super::template::{Item, Template};

/// Most distinct path states kept at once.
const MAX_STATES: usize = 512;

/// Most (item, state) visits in one walk.
const MAX_STEPS: usize = 400_000;

/// Most doubts kept for messages.
const MAX_DOUBTS: usize = 4;

/// Where one template path stands.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct State {
    /// SELECTs this path filters by the parameter.
    pub filtered: Bits,
    /// SELECTs this path writes.
    pub selects: Bits,
    /// FROM items this path writes.
    pub sources: Bits,
    /// `{% set %}` and loop names, sorted by name.
    bindings: Vec<(String, Value)>,
}

impl State {
    fn bind(&mut self, name: &str, bound: Value) {
        match self.bindings.binary_search_by(|(existing, _)| existing.as_str().cmp(name)) {
            Ok(at) => self.bindings[at].1 = bound,
            Err(at) => self.bindings.insert(at, (name.to_owned(), bound)),
        }
    }
}

/// What a walk found besides the states.
#[derive(Clone, Debug, Default)]
pub(super) struct Evidence {
    /// SELECTs filtered by the parameter on some path.
    pub filtered: Bits,
    /// Uses of the parameter in a filtering clause that do not pin rows to it, in words.
    pub doubts: Vec<String>,
}

impl Evidence {
    fn doubt(&mut self, why: String) {
        if self.doubts.len() < MAX_DOUBTS && !self.doubts.contains(&why) {
            self.doubts.push(why);
        }
    }
}

/// The outcome of a walk: the live path states at the end, and the evidence.
#[derive(Clone, Debug)]
pub(super) struct Flow {
    pub states: Vec<State>,
    pub evidence: Evidence,
}

/// Follows every path of `template` for `param` in `world`.
pub(super) fn follow(template: &Template, shape: &Shape, param: &str, world: World) -> Result<Flow, String> {
    let mut walker = Walker { shape, param, world, steps: 0, evidence: Evidence::default() };
    let start = State { filtered: 0, selects: 0, sources: 0, bindings: Vec::new() };
    let states = walker.block(&template.items, vec![start])?;
    Ok(Flow { states, evidence: walker.evidence })
}

struct Walker<'a> {
    shape: &'a Shape,
    param: &'a str,
    world: World,
    steps: usize,
    evidence: Evidence,
}

impl Walker<'_> {
    fn eval(&self, expr: &Expr, state: &State) -> Result<Value, Fails> {
        eval(expr, &Env { param: self.param, world: self.world, bindings: &state.bindings })
    }

    fn step(&mut self, states: usize) -> Result<(), String> {
        self.steps += states.max(1);
        if self.steps > MAX_STEPS {
            return Err("the template has too many paths to follow".to_owned());
        }
        Ok(())
    }

    fn block(&mut self, items: &[Item], mut states: Vec<State>) -> Result<Vec<State>, String> {
        for item in items {
            if states.is_empty() {
                break;
            }
            self.step(states.len())?;
            states = match item {
                Item::Text { leaf, .. } => {
                    let written = self.shape.leaves.get(*leaf).cloned().unwrap_or_default();
                    for state in &mut states {
                        state.selects |= written.selects;
                        state.sources |= written.sources;
                    }
                    states
                }
                Item::Insert { leaf, expr } => self.insert(*leaf, expr, states)?,
                Item::If { branches, otherwise } => self.branches(branches, otherwise.as_deref(), states)?,
                Item::For { targets, iter, body } => self.for_loop(targets, iter, body, states)?,
                Item::Set { target, value } => states
                    .into_iter()
                    .filter_map(|mut state| {
                        let bound = self.eval(value, &state).ok()?;
                        state.bind(target, bound);
                        Some(state)
                    })
                    .collect(),
            };
        }
        Ok(states)
    }

    fn insert(&mut self, leaf: usize, expr: &Expr, states: Vec<State>) -> Result<Vec<State>, String> {
        let written = self.shape.leaves.get(leaf).cloned().unwrap_or_default();
        let mut live = Vec::with_capacity(states.len());
        for mut state in states {
            let Ok(inserted) = self.eval(expr, &state) else { continue };
            if inserted.val == Val::Null {
                continue; // Tinybird refuses an expression that evaluates to null.
            }
            state.selects |= written.selects;
            state.sources |= written.sources;
            if inserted.val == Val::Raw && written.role != Some(Role::Comment) {
                return Err(
                    "inserts table(), an unquoted name with which a request can write any SQL".to_owned()
                );
            }
            match &written.role {
                Some(Role::Filter { selects, weak, value, condition }) => {
                    // The parameter's value must stand in `column = value`; a condition on it
                    // (`sql_and()`) must be a whole conjunct.
                    let strict = match inserted.val {
                        Val::Tenant => value.as_ref(),
                        Val::Cond { .. } => condition.as_ref(),
                        _ => None,
                    };
                    self.filter_use(&inserted, *selects, weak.as_ref().or(strict), &mut state);
                }
                Some(Role::Ambiguous) if inserted.tainted => {
                    self.evidence.doubt(format!(
                        "uses `{}` where template branches leave the SQL clause unclear",
                        self.param
                    ));
                }
                Some(Role::Leading) if !is_setting(expr) => {
                    return Err("the node's SQL starts with a template value, not SELECT or WITH".to_owned());
                }
                _ => {}
            }
            live.push(state);
        }
        Ok(live)
    }

    fn filter_use(
        &mut self,
        inserted: &Value,
        selects: Bits,
        weak: Option<&super::sql::Weak>,
        state: &mut State,
    ) {
        let param = self.param;
        let pins = matches!(inserted.val, Val::Tenant | Val::Cond { pins: true, loose: false });
        match (pins, weak) {
            (true, None) => {
                state.filtered |= selects;
                self.evidence.filtered |= selects;
            }
            (true, Some(weak)) => {
                self.evidence.doubt(format!("uses `{param}` in a filter {}", weak.describe()));
            }
            (false, _) if matches!(inserted.val, Val::Cond { loose: true, .. }) => {
                self.evidence.doubt(format!("uses `{param}` in sql_and() with a negated or range operator"));
            }
            (false, _) if inserted.tainted && self.world == World::Given => {
                self.evidence.doubt(format!(
                    "uses `{param}` in a filter through an expression the analyser does not follow"
                ));
            }
            (false, _) => {}
        }
    }

    fn branches(
        &mut self,
        branches: &[(Expr, Vec<Item>)],
        otherwise: Option<&[Item]>,
        states: Vec<State>,
    ) -> Result<Vec<State>, String> {
        let mut out = Vec::new();
        let mut remaining = states;
        for (cond, body) in branches {
            let mut taken = Vec::new();
            let mut not_taken = Vec::new();
            for state in remaining {
                let Ok(seen) = self.eval(cond, &state) else { continue };
                match truth(&seen.val) {
                    Tri::True => taken.push(state),
                    Tri::False => not_taken.push(state),
                    Tri::Unknown => {
                        taken.push(state.clone());
                        not_taken.push(state);
                    }
                }
            }
            out.extend(self.block(body, taken)?);
            remaining = not_taken;
        }
        match otherwise {
            Some(body) => out.extend(self.block(body, remaining)?),
            None => out.extend(remaining),
        }
        settle(out)
    }

    fn for_loop(
        &mut self,
        targets: &[String],
        iter: &Expr,
        body: &[Item],
        states: Vec<State>,
    ) -> Result<Vec<State>, String> {
        let mut skipped = Vec::new();
        let mut entered = Vec::new();
        for state in states {
            let Ok(seen) = self.eval(iter, &state) else { continue };
            let mut inside = state.clone();
            for target in targets {
                let item = Value { val: Val::Unknown(Tri::Unknown), tainted: seen.tainted };
                inside.bind(target, item);
            }
            skipped.push(state);
            entered.push(inside);
        }
        // The body runs zero times or once: a second pass adds nothing a first did not.
        let mut out = self.block(body, entered)?;
        out.extend(skipped);
        settle(out)
    }
}

fn settle(mut states: Vec<State>) -> Result<Vec<State>, String> {
    states.sort();
    states.dedup();
    if states.len() > MAX_STATES {
        return Err(format!("the template has more than {MAX_STATES} distinct paths"));
    }
    Ok(states)
}
